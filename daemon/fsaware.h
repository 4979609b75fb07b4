/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"
#include "partition.h"
#include "vdisk.h"

/* The file-system-aware scan of a virtual disk: finds the partitions (or the
 * whole-disk file system), names what is in each, hands every volume that a
 * file-system backend (fsbackend.h: ext2/3/4, NTFS) recognises to it, and
 * reports the free space of the clean ones as virtual-disk byte ranges.
 * Read-only. */

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
        FS_BITLOCKER,           /* named, never read: encrypted */
        FS_REFS,                /* named, never read */
        _FS_KIND_MAX,
} FsKind;

typedef struct FsPartition {
        int index;              /* partition number (see partition.h); 0 for a whole-disk file system */
        uint64_t offset;        /* bytes from the start of the virtual disk */
        uint64_t size;          /* bytes */
        FsKind kind;
        const char *type_name;  /* the partition type as an administrator knows it
                                 * ("EFI System", "Microsoft reserved", ...), or NULL */
        bool supported;         /* a backend read it; the fields below are meaningful */
        /* The file system was read and is safe to treat offline; otherwise
         * reason says why not ("journal needs recovery", "volume dirty flag
         * set", ...). For kinds no backend reads, clean is false and reason
         * is empty. */
        bool clean;
        char reason[256];
        uint32_t unit_size;     /* block or cluster size, bytes; 0 when not opened */
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
        /* Non-empty when the disk holds both a file system at offset 0 and a
         * partition table with partitions: one of them is stale and nothing
         * says which, so no volume is read (free stays empty; the partitions
         * are only named) and the free tier is skipped with this message. */
        char ambiguous[320];
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

/* The first file system a backend read that is not clean, or NULL: the pass
 * reports it for skipped-unclean-fs. */
const FsPartition *fsaware_first_unclean(const FsScan *s);

/* The report's "filesystem" field: "ext4" for a whole-disk file system,
 * "gpt: ext4, ext4, swap" for a partitioned disk, "mbr: empty" without
 * partitions; a partition with no file system we name is named by its type
 * ("gpt: vfat, Microsoft reserved, ntfs, ntfs"). Returns 0 or -ENOMEM; *ret
 * is to be freed. */
int fsaware_summary(const FsScan *s, char **ret);

/* One line for --inspect about a partition: kind, where, and for a volume a
 * backend read its unit size and free bytes or why it is not clean. */
void fsaware_describe(const FsPartition *p, char *buf, size_t size);
