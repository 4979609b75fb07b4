/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Read-only access to the virtual disk inside an image, whatever its format:
 * for a raw image the file itself, for a VHDX the payload blocks through the
 * BAT (absent, zero and unmapped blocks read as zeros). All reads go through
 * the pass's single leased descriptor. */
typedef struct VDisk VDisk;
struct VDisk {
        uint64_t size;                  /* virtual size, bytes */
        uint32_t logical_sector_size;   /* 512 or 4096 */
        /* Reads exactly len bytes at offset; 0 or a negative errno. Reads past
         * size fail with -EIO. */
        int (*read)(VDisk *d, void *buf, size_t len, uint64_t offset);
        void *userdata;
};

static inline int vdisk_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        return d->read(d, buf, len, offset);
}
