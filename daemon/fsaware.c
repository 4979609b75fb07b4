/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "ext2io.h"
#include "fsaware.h"
#include "log.h"
#include "macro.h"
#include "unaligned.h"

/* Enough to see every signature we name: btrfs's superblock magic sits at
 * 64 KiB + 64, swap's at the end of a page of up to 64 KiB. */
#define PROBE_SIZE (68 * KiB)

/* What ext3 understands; anything beyond makes it ext4 (libblkid's rule). */
#define EXT3_INCOMPAT_KNOWN (EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_RECOVER | \
                             EXT2_FEATURE_INCOMPAT_META_BG)
#define EXT3_RO_COMPAT_KNOWN (EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE | \
                              0x0004 /* btree_dir */)

/* fs_kind_to_string() for messages: never NULL. */
static const char *kind_name(FsKind k) {
        const char *s = fs_kind_to_string(k);
        return s ? s : "unknown";
}

static bool has_signature(const uint8_t *buf, size_t len, size_t offset, const char *sig, size_t n) {
        return offset + n <= len && memcmp(buf + offset, sig, n) == 0;
}

static FsKind probe_ext(const uint8_t *b, size_t len) {
        const uint8_t *sb = b + SUPERBLOCK_OFFSET;
        uint32_t compat, incompat, ro_compat;

        if (len < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE)
                return FS_UNKNOWN;
        if (get_le16(sb + 56) != EXT2_SUPER_MAGIC)
                return FS_UNKNOWN;
        /* s_log_block_size: 1 KiB << n, at most 64 KiB */
        if (get_le32(sb + 24) > 6)
                return FS_UNKNOWN;

        compat = get_le32(sb + 92);
        incompat = get_le32(sb + 96);
        ro_compat = get_le32(sb + 100);
        if (incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV)
                return FS_EXT_JOURNAL;
        if ((incompat & ~EXT3_INCOMPAT_KNOWN) || (ro_compat & ~EXT3_RO_COMPAT_KNOWN))
                return FS_EXT4;
        if (compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL)
                return FS_EXT3;
        return FS_EXT2;
}

static bool probe_vfat(const uint8_t *b, size_t len) {
        if (len < 512 || (b[0] != 0xEB && b[0] != 0xE9) || get_le16(b + 510) != 0xAA55)
                return false;
        return has_signature(b, len, 54, "FAT1", 4) || has_signature(b, len, 82, "FAT32   ", 8);
}

static bool probe_lvm2(const uint8_t *b, size_t len) {
        /* The label may sit in any of the first four 512-byte sectors. */
        for (size_t s = 0; s < 4; s++)
                if (has_signature(b, len, s * 512, "LABELONE", 8) &&
                    has_signature(b, len, s * 512 + 24, "LVM2 001", 8))
                        return true;
        return false;
}

static bool probe_swap(const uint8_t *b, size_t len) {
        static const size_t page_sizes[] = { 4096, 8192, 16384, 65536 };

        for (size_t i = 0; i < ELEMENTSOF(page_sizes); i++) {
                size_t at = page_sizes[i] - 10;
                if (has_signature(b, len, at, "SWAPSPACE2", 10) ||
                    has_signature(b, len, at, "SWAP-SPACE", 10) ||
                    has_signature(b, len, at, "S1SUSPEND", 9))
                        return true;
        }
        return false;
}

/* Names what the first bytes of a partition hold. Only ext2/3/4 is ever
 * processed, and libext2fs validates it fully; the rest is for the report. */
static FsKind probe_kind(const uint8_t *b, size_t len) {
        FsKind k = probe_ext(b, len);

        if (k != FS_UNKNOWN)
                return k;
        if (has_signature(b, len, 0, "LUKS\xba\xbe", 6))
                return FS_LUKS;
        if (probe_lvm2(b, len))
                return FS_LVM2;
        if (has_signature(b, len, 0, "XFSB", 4))
                return FS_XFS;
        if (has_signature(b, len, 3, "NTFS    ", 8))
                return FS_NTFS;
        if (has_signature(b, len, 3, "EXFAT   ", 8))
                return FS_EXFAT;
        if (probe_vfat(b, len))
                return FS_VFAT;
        if (has_signature(b, len, 64 * KiB + 64, "_BHRfS_M", 8))
                return FS_BTRFS;
        if (probe_swap(b, len))
                return FS_SWAP;
        return FS_UNKNOWN;
}

static int probe_partition(VDisk *d, FsPartition *p) {
        size_t len = (size_t) MIN(p->size, (uint64_t) PROBE_SIZE);
        _cleanup_free_ uint8_t *buf = malloc(MAX(len, (size_t) 1));
        int r;

        if (!buf)
                return -ENOMEM;
        r = vdisk_read(d, buf, len, p->offset);
        if (r < 0)
                return r;
        p->kind = probe_kind(buf, len);
        return 0;
}

typedef struct Where {
        char s[32];
} Where;

/* "partition 2" or "the whole disk", for messages. */
static Where where(const FsPartition *p) {
        Where w;

        if (p->index > 0)
                snprintf(w.s, sizeof w.s, "partition %d", p->index);
        else
                snprintf(w.s, sizeof w.s, "the whole disk");
        return w;
}

/* Marks the file system unclean; returns -EUCLEAN for the caller to pass up. */
_printf_(2, 3)
static int mark_unclean(FsPartition *p, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vsnprintf(p->reason, sizeof p->reason, format, ap);
        va_end(ap);
        p->clean = false;
        return -EUCLEAN;
}

/* libext2fs's failures are about the file system unless the disk itself
 * failed underneath (an I/O error, a broken lease): then the scan stops. */
static int ext_failure(ext2_filsys fs, FsPartition *p, errcode_t e, const char *what) {
        int r = fs && fs->io ? ext2io_channel_error(fs->io) : 0;

        if (r < 0)
                return r;
        if (e == EXT2_ET_NO_MEMORY || e == ENOMEM)
                return -ENOMEM;
        return mark_unclean(p, "%s: %s", what, error_message(e));
}

static void ext2fs_freep(ext2_filsys *fs) {
        if (*fs)
                ext2fs_free(*fs);
}

static void init_error_tables(void) {
        initialize_ext2_error_table();
}

static int ext_open(VDisk *d, FsPartition *p, ext2_filsys *ret) {
        static pthread_once_t error_tables_once = PTHREAD_ONCE_INIT;
        char name[EXT2IO_NAME_MAX];
        ext2_filsys fs = NULL;
        errcode_t e;
        int r;

        (void) pthread_once(&error_tables_once, init_error_tables);

        r = ext2io_format_name(d, p->offset, p->size, name, sizeof name);
        if (r < 0)
                return r;
        /* Read-only, checksums verified (no EXT2_FLAG_IGNORE_CSUM_ERRORS). */
        e = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS | EXT2_FLAG_NOFREE_ON_ERROR, 0, 0, ext2io_manager(), &fs);
        if (e != 0) {
                r = ext_failure(fs, p, e, "cannot open the file system");
                if (fs)
                        ext2fs_free(fs);
                return r;
        }
        *ret = fs;
        return 0;
}

static int ext_check_geometry(ext2_filsys fs, FsPartition *p) {
        uint64_t blocks = ext2fs_blocks_count(fs->super);

        if (blocks == 0 || blocks > p->size / fs->blocksize)
                return mark_unclean(p, "file system (%" PRIu64 " blocks of %u bytes) is larger than its partition (%" PRIu64 " bytes)",
                                    blocks, fs->blocksize, p->size);
        /* Opening read-only lets unknown ro_compat features through; we
         * would not know what they do to the bitmaps. */
        uint32_t unknown = fs->super->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP;
        if (unknown)
                return mark_unclean(p, "unsupported read-only-compatible features 0x%" PRIx32, unknown);
        return 0;
}

static int ext_check_state(ext2_filsys fs, FsPartition *p) {
        struct ext2_super_block *sb = fs->super;

        if (ext2fs_has_feature_journal_needs_recovery(sb))
                return mark_unclean(p, "journal needs recovery");
        if (sb->s_state & EXT2_ERROR_FS)
                return mark_unclean(p, "error state set in superblock");
        if (!(sb->s_state & EXT2_VALID_FS))
                return mark_unclean(p, "not cleanly unmounted (valid flag not set in superblock)");
        if (sb->s_last_orphan != 0)
                return mark_unclean(p, "orphan inode list pending (inode %" PRIu32 ")", sb->s_last_orphan);
        if (ext2fs_has_feature_orphan_present(sb))
                return mark_unclean(p, "orphan file has pending entries");
        return 0;
}

/* With multi-mount protection a node that has the file system in use (or
 * died using it) leaves a sequence other than "clean" in the MMP block. */
static int ext_check_mmp(ext2_filsys fs, FsPartition *p) {
        _cleanup_free_ uint8_t *buf = NULL;
        blk64_t blk = fs->super->s_mmp_block;
        errcode_t e;

        if (!ext2fs_has_feature_mmp(fs->super))
                return 0;
        if (blk <= fs->super->s_first_data_block || blk >= ext2fs_blocks_count(fs->super))
                return mark_unclean(p, "multi-mount protection block %llu is out of range", (unsigned long long) blk);
        buf = malloc(fs->blocksize);
        if (!buf)
                return -ENOMEM;
        e = io_channel_read_blk64(fs->io, blk, 1, buf);
        if (e != 0)
                return ext_failure(fs, p, e, "cannot read the multi-mount protection block");

        const struct mmp_struct *mmp = (const struct mmp_struct *) buf;
        if (le32toh(mmp->mmp_magic) != EXT4_MMP_MAGIC)
                return mark_unclean(p, "multi-mount protection block has a bad magic number");
        if (le32toh(mmp->mmp_seq) != EXT4_MMP_SEQ_CLEAN)
                return mark_unclean(p, "multi-mount protection says the file system is in use (sequence 0x%" PRIx32 ")",
                                    le32toh(mmp->mmp_seq));
        return 0;
}

static int ext_check_descriptors(ext2_filsys fs, FsPartition *p) {
        errcode_t e;

        if (ext2fs_has_group_desc_csum(fs))
                for (dgrp_t g = 0; g < fs->group_desc_count; g++)
                        if (!ext2fs_group_desc_csum_verify(fs, g))
                                return mark_unclean(p, "group descriptor checksum mismatch in group %" PRIu32, g);
        e = ext2fs_check_desc(fs);
        if (e != 0)
                return ext_failure(fs, p, e, "group descriptors are inconsistent");
        return 0;
}

/* libext2fs says a bitmap checksum failed but not where: find the group by
 * verifying each bitmap the way read_bitmaps does (uninitialized groups with
 * a valid descriptor are computed, not read). */
static int find_bad_bitmap_group(ext2_filsys fs, bool block_bitmap, dgrp_t *ret) {
        _cleanup_free_ uint8_t *buf = malloc(fs->blocksize);
        int size = block_bitmap ? EXT2_CLUSTERS_PER_GROUP(fs->super) / 8 : EXT2_INODES_PER_GROUP(fs->super) / 8;
        uint16_t uninit = block_bitmap ? EXT2_BG_BLOCK_UNINIT : EXT2_BG_INODE_UNINIT;

        if (!buf)
                return -ENOMEM;
        for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
                blk64_t blk = block_bitmap ? ext2fs_block_bitmap_loc(fs, g) : ext2fs_inode_bitmap_loc(fs, g);
                int ok;

                if (blk == 0 || (ext2fs_bg_flags_test(fs, g, uninit) && ext2fs_group_desc_csum_verify(fs, g)))
                        continue;
                if (io_channel_read_blk64(fs->io, blk, 1, buf) != 0)
                        continue;
                ok = block_bitmap ? ext2fs_block_bitmap_csum_verify(fs, g, (char *) buf, size)
                                  : ext2fs_inode_bitmap_csum_verify(fs, g, (char *) buf, size);
                if (!ok) {
                        *ret = g;
                        return 0;
                }
        }
        return -ENOENT;
}

static int ext_read_bitmaps(ext2_filsys fs, FsPartition *p) {
        errcode_t e = ext2fs_read_bitmaps(fs);
        bool block_bitmap = e == EXT2_ET_BLOCK_BITMAP_CSUM_INVALID;
        dgrp_t g;
        int r;

        if (e == 0)
                return 0;
        r = ext_failure(fs, p, e, "cannot read the bitmaps");
        if (r != -EUCLEAN || (!block_bitmap && e != EXT2_ET_INODE_BITMAP_CSUM_INVALID))
                return r;
        r = find_bad_bitmap_group(fs, block_bitmap, &g);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return mark_unclean(p, "%s bitmap checksum mismatch", block_bitmap ? "block" : "inode");
        return mark_unclean(p, "%s bitmap checksum mismatch in group %" PRIu32, block_bitmap ? "block" : "inode", g);
}

/* The kernel updates a group's free count and its bitmap in the same
 * transaction; if they disagree the bitmap cannot be trusted. This is what
 * catches a damaged bitmap on a file system without metadata_csum. */
static int ext_check_free_counts(ext2_filsys fs, FsPartition *p) {
        for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
                blk64_t first = ext2fs_group_first_block2(fs, g), last = ext2fs_group_last_block2(fs, g);
                blk64_t used = 0, total = EXT2FS_NUM_B2C(fs, last - first + 1);
                errcode_t e;

                e = ext2fs_count_used_clusters(fs, first, last, &used);
                if (e != 0)
                        return ext_failure(fs, p, e, "cannot count used blocks");
                if (total - used != ext2fs_bg_free_blocks_count(fs, g))
                        return mark_unclean(p, "group %" PRIu32 ": descriptor counts %" PRIu32 " free clusters, the bitmap %llu",
                                            g, ext2fs_bg_free_blocks_count(fs, g), (unsigned long long) (total - used));
        }
        return 0;
}

/* Free runs from the block bitmap, jumping from run to run. With bigalloc
 * the bitmap is per cluster and libext2fs answers in blocks, at cluster
 * boundaries. */
static int ext_collect_free(ext2_filsys fs, FsPartition *p, ExtentList *out) {
        blk64_t start = fs->super->s_first_data_block, last = ext2fs_blocks_count(fs->super) - 1;
        uint64_t bs = fs->blocksize, total = 0;
        errcode_t e;
        int r;

        while (start <= last) {
                blk64_t zero, set;

                e = ext2fs_find_first_zero_block_bitmap2(fs->block_map, start, last, &zero);
                if (e == ENOENT)
                        break;
                if (e != 0)
                        return ext_failure(fs, p, e, "cannot walk the block bitmap");
                e = ext2fs_find_first_set_block_bitmap2(fs->block_map, zero, last, &set);
                if (e == ENOENT)
                        set = last + 1;
                else if (e != 0)
                        return ext_failure(fs, p, e, "cannot walk the block bitmap");

                r = extent_list_add(out, p->offset + zero * bs, (set - zero) * bs);
                if (r < 0)
                        return r;
                total += (set - zero) * bs;
                start = set;
        }
        p->free_bytes = total;
        return 0;
}

/* Reads one ext2/3/4 file system. Returns 0 whether or not it is clean
 * (see p->clean), or a negative errno when the scan must stop. */
static int ext_scan(VDisk *d, FsPartition *p, ExtentList *free_out) {
        _cleanup_(ext2fs_freep) ext2_filsys fs = NULL;
        _cleanup_(extent_list_done) ExtentList found = {};
        int r;

        r = ext_open(d, p, &fs);
        if (r >= 0)
                r = ext_check_geometry(fs, p);
        if (r >= 0)
                r = ext_check_state(fs, p);
        if (r >= 0)
                r = ext_check_mmp(fs, p);
        if (r >= 0)
                r = ext_check_descriptors(fs, p);
        if (r >= 0)
                r = ext_read_bitmaps(fs, p);
        if (r >= 0)
                r = ext_check_free_counts(fs, p);
        if (r >= 0)
                r = ext_collect_free(fs, p, &found);
        /* A disk read that failed anywhere, even where libext2fs carried on
         * without it, voids the result. */
        if (fs && (r >= 0 || r == -EUCLEAN) && ext2io_channel_error(fs->io) < 0)
                r = ext2io_channel_error(fs->io);
        if (r == -EUCLEAN) {
                p->free_bytes = 0;
                log_debug("%s (%s): not clean: %s", where(p).s, kind_name(p->kind), p->reason);
                return 0;
        }
        if (r < 0)
                return r;

        for (size_t i = 0; i < found.n; i++) {
                r = extent_list_add(free_out, found.items[i].offset, found.items[i].length);
                if (r < 0)
                        return r;
        }
        p->clean = true;
        log_debug("%s (%s): clean, %" PRIu64 " bytes free in %zu runs",
                  where(p).s, kind_name(p->kind), p->free_bytes, found.n);
        return 0;
}

_printf_(3, 4)
static int scan_fail(FsScan *s, int r, const char *format, ...) {
        char error[sizeof s->error];
        va_list ap;

        va_start(ap, format);
        vsnprintf(error, sizeof error, format, ap);
        va_end(ap);
        fsaware_scan_done(s);
        memcpy(s->error, error, sizeof error);
        return r;
}

static int scan_add_partitions(VDisk *d, FsScan *s, const PartitionTable *t) {
        size_t n = t->kind == PARTITION_TABLE_NONE ? 1 : t->n_parts;

        s->parts = calloc(MAX(n, (size_t) 1), sizeof *s->parts);
        if (!s->parts)
                return -ENOMEM;
        s->n_parts = n;
        if (t->kind == PARTITION_TABLE_NONE) {
                s->parts[0] = (FsPartition) { .index = 0, .offset = 0, .size = d->size };
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                s->parts[i] = (FsPartition) {
                        .index = t->parts[i].index,
                        .offset = t->parts[i].offset,
                        .size = t->parts[i].size,
                };
        return 0;
}

int fsaware_scan(VDisk *d, FsScan *ret) {
        _cleanup_(partition_table_done) PartitionTable t = {};
        int r;

        *ret = (FsScan) {};
        r = partition_table_read(d, &t);
        if (r < 0)
                return scan_fail(ret, r, "partition table: %s", t.error);
        ret->table = t.kind;
        ret->gpt_backup_used = t.gpt_backup_used;

        r = scan_add_partitions(d, ret, &t);
        if (r < 0)
                return scan_fail(ret, r, "out of memory");

        for (size_t i = 0; i < ret->n_parts; i++) {
                FsPartition *p = &ret->parts[i];

                r = probe_partition(d, p);
                if (r < 0)
                        return scan_fail(ret, r, "reading %s: %s", where(p).s, strerror(-r));
                if (!fs_kind_is_ext(p->kind))
                        continue;
                r = ext_scan(d, p, &ret->free);
                if (r < 0)
                        return scan_fail(ret, r, "reading the %s file system on %s: %s",
                                         kind_name(p->kind), where(p).s, strerror(-r));
        }
        extent_list_normalize(&ret->free);
        return 0;
}

void fsaware_scan_done(FsScan *s) {
        free(s->parts);
        extent_list_done(&s->free);
        *s = (FsScan) {};
}

const char *fs_kind_to_string(FsKind k) {
        /* libblkid's names, which is what an administrator has seen. */
        static const char *const table[_FS_KIND_MAX] = {
                [FS_UNKNOWN] = "unknown",
                [FS_EXT2] = "ext2",
                [FS_EXT3] = "ext3",
                [FS_EXT4] = "ext4",
                [FS_EXT_JOURNAL] = "jbd",
                [FS_SWAP] = "swap",
                [FS_NTFS] = "ntfs",
                [FS_VFAT] = "vfat",
                [FS_EXFAT] = "exfat",
                [FS_XFS] = "xfs",
                [FS_BTRFS] = "btrfs",
                [FS_LUKS] = "crypto_LUKS",
                [FS_LVM2] = "LVM2_member",
        };

        if (k < 0 || k >= _FS_KIND_MAX)
                return NULL;
        return table[k];
}

bool fs_kind_is_ext(FsKind k) {
        return k == FS_EXT2 || k == FS_EXT3 || k == FS_EXT4;
}

const FsPartition *fsaware_first_unclean(const FsScan *s) {
        for (size_t i = 0; i < s->n_parts; i++)
                if (fs_kind_is_ext(s->parts[i].kind) && !s->parts[i].clean)
                        return &s->parts[i];
        return NULL;
}

int fsaware_summary(const FsScan *s, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (s->table == PARTITION_TABLE_NONE)
                fputs(s->n_parts > 0 ? kind_name(s->parts[0].kind) : "unknown", f);
        else {
                fprintf(f, "%s: ", partition_table_kind_to_string(s->table));
                if (s->n_parts == 0)
                        fputs("empty", f);
                for (size_t i = 0; i < s->n_parts; i++)
                        fprintf(f, "%s%s", i > 0 ? ", " : "", kind_name(s->parts[i].kind));
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}
