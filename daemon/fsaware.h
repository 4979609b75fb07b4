/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"
#include "partition.h"
#include "vdisk.h"

/* The file-system-aware scan of a virtual disk: finds the partitions (or the
 * whole-disk file system), names what is in each, and for every ext2/3/4 file
 * system that is cleanly unmounted reads its block bitmaps through libext2fs
 * and reports the free blocks as virtual-disk byte ranges. Read-only. */

typedef enum FsKind {
        FS_UNKNOWN,
        FS_EXT2,
        FS_EXT3,
        FS_EXT4,
        FS_EXT_JOURNAL,         /* an external ext3/4 journal device */
        FS_SWAP,
        FS_NTFS,
        FS_VFAT,
        FS_EXFAT,
        FS_XFS,
        FS_BTRFS,
        FS_LUKS,
        FS_LVM2,
        _FS_KIND_MAX,
} FsKind;

typedef struct FsPartition {
        int index;              /* partition number (see partition.h); 0 for a whole-disk file system */
        uint64_t offset;        /* bytes from the start of the virtual disk */
        uint64_t size;          /* bytes */
        FsKind kind;
        /* Meaningful for ext2/3/4 only: the file system was read and is
         * cleanly unmounted; otherwise reason says why not ("journal needs
         * recovery", "block bitmap checksum mismatch in group 3", ...).
         * For other kinds clean is false and reason is empty. */
        bool clean;
        char reason[256];
        uint64_t free_bytes;    /* what this file system contributed to FsScan.free */
} FsPartition;

typedef struct FsScan {
        PartitionTableKind table;
        bool gpt_backup_used;   /* the primary GPT was damaged; the backup was read */
        FsPartition *parts;     /* by offset; one whole-disk entry when table is NONE */
        size_t n_parts;
        /* Virtual-disk byte ranges that clean ext2/3/4 file systems mark
         * free, normalized. Unclean file systems contribute nothing. */
        ExtentList free;
        char error[256];        /* why fsaware_scan() failed */
} FsScan;

/* Scans the disk. Returns 0 (unclean file systems are not an error: see
 * FsPartition.clean), -EBADMSG when the partition table is damaged or
 * inconsistent, the negative errno of a failed VDisk read (the scan stops at
 * once), or -ENOMEM. On failure *ret is empty except for ret->error. */
int fsaware_scan(VDisk *d, FsScan *ret);
void fsaware_scan_done(FsScan *s);

const char *fs_kind_to_string(FsKind k);
bool fs_kind_is_ext(FsKind k);

/* The first ext2/3/4 file system that is not clean, or NULL: the pass
 * reports it for skipped-unclean-fs. */
const FsPartition *fsaware_first_unclean(const FsScan *s);

/* The report's "filesystem" field: "ext4" for a whole-disk file system,
 * "gpt: ext4, ext4, swap" for a partitioned disk, "mbr: empty" without
 * partitions. Returns 0 or -ENOMEM; *ret is to be freed. */
int fsaware_summary(const FsScan *s, char **ret);
