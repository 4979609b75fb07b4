/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "ext2io.h"
#include "fsbackend.h"
#include "log.h"
#include "macro.h"
#include "unaligned.h"

/* The ext2/3/4 backend: libext2fs reads the file system through ext2io (the
 * VDisk), read-only, with checksums verified. */

/* What ext3 understands; anything beyond makes it ext4 (libblkid's rule). */
#define EXT3_INCOMPAT_KNOWN (EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_RECOVER | \
                             EXT2_FEATURE_INCOMPAT_META_BG)
#define EXT3_RO_COMPAT_KNOWN (EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE | \
                              0x0004 /* btree_dir */)

FsKind fs_ext_probe(const uint8_t *b, size_t len) {
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

/* libext2fs's failures are about the file system unless the disk itself
 * failed underneath (an I/O error, a broken lease): then the scan stops. */
static int ext_failure(ext2_filsys fs, FsPartition *p, errcode_t e, const char *what) {
        int r = fs && fs->io ? ext2io_channel_error(fs->io) : 0;

        if (r < 0)
                return r;
        if (e == EXT2_ET_NO_MEMORY || e == ENOMEM)
                return -ENOMEM;
        return fs_mark_unclean(p, "%s: %s", what, error_message(e));
}

static void init_error_tables(void) {
        initialize_ext2_error_table();
}

static int ext_open(VDisk *d, FsPartition *p, void **ret) {
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
        p->unit_size = fs->blocksize;
        *ret = fs;
        return 0;
}

static int ext_check_geometry(ext2_filsys fs, FsPartition *p) {
        uint64_t blocks = ext2fs_blocks_count(fs->super);

        if (blocks == 0 || blocks > p->size / fs->blocksize)
                return fs_mark_unclean(p, "file system (%" PRIu64 " blocks of %u bytes) is larger than its partition (%" PRIu64 " bytes)",
                                    blocks, fs->blocksize, p->size);
        /* Opening read-only lets unknown ro_compat features through; we
         * would not know what they do to the bitmaps. */
        uint32_t unknown = fs->super->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP;
        if (unknown)
                return fs_mark_unclean(p, "unsupported read-only-compatible features 0x%" PRIx32, unknown);
        return 0;
}

static int ext_check_state(ext2_filsys fs, FsPartition *p) {
        struct ext2_super_block *sb = fs->super;

        if (ext2fs_has_feature_journal_needs_recovery(sb))
                return fs_mark_unclean(p, "journal needs recovery");
        if (sb->s_state & EXT2_ERROR_FS)
                return fs_mark_unclean(p, "error state set in superblock");
        if (!(sb->s_state & EXT2_VALID_FS))
                return fs_mark_unclean(p, "not cleanly unmounted (valid flag not set in superblock)");
        if (sb->s_last_orphan != 0)
                return fs_mark_unclean(p, "orphan inode list pending (inode %" PRIu32 ")", sb->s_last_orphan);
        if (ext2fs_has_feature_orphan_present(sb))
                return fs_mark_unclean(p, "orphan file has pending entries");
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
                return fs_mark_unclean(p, "multi-mount protection block %llu is out of range", (unsigned long long) blk);
        buf = malloc(fs->blocksize);
        if (!buf)
                return -ENOMEM;
        e = io_channel_read_blk64(fs->io, blk, 1, buf);
        if (e != 0)
                return ext_failure(fs, p, e, "cannot read the multi-mount protection block");

        const struct mmp_struct *mmp = (const struct mmp_struct *) buf;
        if (le32toh(mmp->mmp_magic) != EXT4_MMP_MAGIC)
                return fs_mark_unclean(p, "multi-mount protection block has a bad magic number");
        if (le32toh(mmp->mmp_seq) != EXT4_MMP_SEQ_CLEAN)
                return fs_mark_unclean(p, "multi-mount protection says the file system is in use (sequence 0x%" PRIx32 ")",
                                    le32toh(mmp->mmp_seq));
        return 0;
}

static int ext_check_descriptors(ext2_filsys fs, FsPartition *p) {
        errcode_t e;

        if (ext2fs_has_group_desc_csum(fs))
                for (dgrp_t g = 0; g < fs->group_desc_count; g++)
                        if (!ext2fs_group_desc_csum_verify(fs, g))
                                return fs_mark_unclean(p, "group descriptor checksum mismatch in group %" PRIu32, g);
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
                return fs_mark_unclean(p, "%s bitmap checksum mismatch", block_bitmap ? "block" : "inode");
        return fs_mark_unclean(p, "%s bitmap checksum mismatch in group %" PRIu32, block_bitmap ? "block" : "inode", g);
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
                        return fs_mark_unclean(p, "group %" PRIu32 ": descriptor counts %" PRIu32 " free clusters, the bitmap %llu",
                                            g, ext2fs_bg_free_blocks_count(fs, g), (unsigned long long) (total - used));
        }
        return 0;
}

/* Free runs from the block bitmap, jumping from run to run. With bigalloc
 * the bitmap is per cluster and libext2fs answers in blocks, at cluster
 * boundaries. */
static int ext_list_free(void *volume, FsPartition *p, ExtentList *out) {
        ext2_filsys fs = volume;
        blk64_t start = fs->super->s_first_data_block, last = ext2fs_blocks_count(fs->super) - 1;
        uint64_t bs = fs->blocksize;
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

                r = extent_list_add(out, zero * bs, (set - zero) * bs);
                if (r < 0)
                        return r;
                start = set;
        }
        return 0;
}


static int ext_check_clean(void *volume, FsPartition *p) {
        ext2_filsys fs = volume;
        int r;

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
        return r;
}

static int ext_disk_error(void *volume) {
        ext2_filsys fs = volume;

        return fs->io ? ext2io_channel_error(fs->io) : 0;
}

static void ext_close(void *volume) {
        ext2fs_free(volume);
}

/* Journal devices are named, not processed: they hold no free space of a
 * file system. */
static FsKind ext_recognise(const uint8_t *buf, size_t len) {
        FsKind k = fs_ext_probe(buf, len);

        return k == FS_EXT_JOURNAL ? FS_UNKNOWN : k;
}

const FsBackend fs_backend_ext = {
        .name = "ext2/3/4",
        .recognise = ext_recognise,
        .open = ext_open,
        .check_clean = ext_check_clean,
        .list_free = ext_list_free,
        .disk_error = ext_disk_error,
        .close = ext_close,
};
