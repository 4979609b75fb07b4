/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"
#include "fsaware.h"
#include "macro.h"
#include "vdisk.h"

/* One guest file system the free tier can read: fsaware finds the volumes
 * (partition discovery is shared) and hands each to the backend that
 * recognises it. A backend opens the volume read-only through the VDisk (the
 * pass's leased descriptor), says whether it is safe to treat offline, and
 * lists its free space in bytes from the start of the volume. Mapping to the
 * image file, alignment and punching are the pass's (pass-free.c).
 *
 * Every entry point that can find the volume unsafe returns -EUCLEAN after
 * fs_mark_unclean() has said why in p->reason; any other negative errno
 * (ENOMEM, a failed disk read, a broken lease) stops the whole scan. */
typedef struct FsBackend {
        const char *name;
        /* The kind of file system the first bytes of a volume hold (up to
         * FSAWARE_PROBE_SIZE bytes), or FS_UNKNOWN when it is not this
         * backend's. Cheap signature checks only: open() validates. */
        FsKind (*recognise)(const uint8_t *buf, size_t len);
        /* Opens the volume p->offset .. p->offset + p->size, read-only, and
         * sets p->unit_size (block or cluster size). */
        int (*open)(VDisk *d, FsPartition *p, void **ret_volume);
        /* 0 when the volume is cleanly unmounted and nothing else can still
         * need its free space. */
        int (*check_clean)(void *volume, FsPartition *p);
        /* Appends the free ranges, in bytes from the start of the volume. */
        int (*list_free)(void *volume, FsPartition *p, ExtentList *ret);
        /* The negative errno of the first VDisk read that failed under the
         * volume (even one the library carried on without), or 0. */
        int (*disk_error)(void *volume);
        void (*close)(void *volume);
} FsBackend;

/* Enough to see every signature we name: btrfs's superblock magic sits at
 * 64 KiB + 64, swap's at the end of a page of up to 64 KiB. */
#define FSAWARE_PROBE_SIZE (68 * KiB)

extern const FsBackend fs_backend_ext;
extern const FsBackend fs_backend_ntfs;

/* Marks the file system unclean with a reason; returns -EUCLEAN. */
_printf_(2, 3) int fs_mark_unclean(FsPartition *p, const char *format, ...);

/* ext2/3/4 and external journal devices from the superblock, FS_UNKNOWN
 * otherwise (fs_backend_ext.recognise leaves journal devices out). */
FsKind fs_ext_probe(const uint8_t *buf, size_t len);
