/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>

#include <ext2fs/ext2fs.h>

#include "disk-image-util.h"
#include "fsaware.h"

/* File systems made by mke2fs from a tree of random files, some deleted with
 * debugfs, placed whole-disk or into sfdisk partition tables. What the scan
 * calls free must be exactly what dumpe2fs lists as free, and must not touch
 * a block that debugfs says a remaining file uses or that holds metadata. */

#define SECTOR 512
#define N_FILES 40

typedef struct Fixture {
        char *dir;
        char *disk;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        f->dir = make_temp_dir();
        assert_non_null(f->dir);
        assert_int_equal(write_random_tree(f->dir, N_FILES, 512 * KiB, 0x5eed), 0);
        assert_true(asprintf(&f->disk, "%s/disk.img", f->dir) > 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        remove_temp_dir(f->dir);
        free(f->disk);
        free(f);
        return 0;
}

static bool file_is_deleted(unsigned i) {
        return i % 3 == 1;
}

/* Makes a file system image at path with mkfs_cmd (e.g. "mkfs.ext4 -O
 * bigalloc") from the fixture's tree, then deletes every third file. */
static void make_fs(const Fixture *f, const char *path, const char *mkfs_cmd, const char *size) {
        _cleanup_free_ char *cmds = NULL;
        FILE *c;

        assert_int_equal(run("rm -f '%s' && %s -q -F -d '%s/tree' '%s' %s >/dev/null 2>&1",
                             path, mkfs_cmd, f->dir, path, size), 0);
        assert_true(asprintf(&cmds, "%s/debugfs-cmds", f->dir) > 0);
        c = fopen(cmds, "we");
        assert_non_null(c);
        for (unsigned i = 0; i < N_FILES; i++)
                if (file_is_deleted(i))
                        fprintf(c, "rm /d%02u/f%02u\n", i % 4, i);
        assert_int_equal(fclose(c), 0);
        assert_int_equal(run("debugfs -w -f '%s' '%s' >/dev/null 2>&1", cmds, path), 0);
}

static uint64_t header_number(const char *dump, const char *key) {
        const char *p = strstr(dump, key);

        if (!p)
                return 0;
        return strtoull(p + strlen(key), NULL, 10);
}

/* dumpe2fs's per-group "Free blocks:" lists, as byte ranges at offset. With
 * bigalloc it lists clusters by their first block. */
static void expected_free(const char *path, uint64_t offset, ExtentList *out) {
        _cleanup_free_ char *dump = run_capture("dumpe2fs '%s' 2>/dev/null", path);
        uint64_t bs, ratio, blocks;
        char *line, *save = NULL;

        assert_non_null(dump);
        bs = header_number(dump, "\nBlock size:");
        blocks = header_number(dump, "\nBlock count:");
        ratio = strstr(dump, "\nCluster size:") ? header_number(dump, "\nCluster size:") / bs : 1;
        assert_true(bs >= 1024 && blocks > 0 && ratio >= 1);

        for (line = strtok_r(dump, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *p;

                if (strncmp(line, "  Free blocks: ", 15) != 0)
                        continue;
                p = line + 15;
                while (*p) {
                        uint64_t a = strtoull(p, &p, 10), b = a;
                        if (*p == '-')
                                b = strtoull(p + 1, &p, 10);
                        b = MIN(b + ratio, blocks);
                        assert_int_equal(extent_list_add(out, offset + a * bs, (b - a) * bs), 0);
                        while (*p == ',' || *p == ' ')
                                p++;
                }
        }
        extent_list_normalize(out);
}

static void assert_lists_equal(const ExtentList *a, const ExtentList *b) {
        assert_int_equal(a->n, b->n);
        for (size_t i = 0; i < a->n; i++) {
                assert_int_equal(a->items[i].offset, b->items[i].offset);
                assert_int_equal(a->items[i].length, b->items[i].length);
        }
}

static void assert_disjoint(const ExtentList *free_list, ExtentList *used) {
        ExtentList both = {};

        extent_list_normalize(used);
        assert_int_equal(extent_list_intersect(free_list, used, &both), 0);
        assert_int_equal(extent_list_total(&both), 0);
        extent_list_done(&both);
}

/* Every block debugfs says a remaining file uses is outside the free list. */
static void assert_files_not_free(const Fixture *f, const char *path, uint64_t offset, const ExtentList *free_list) {
        _cleanup_free_ char *dump = run_capture("dumpe2fs -h '%s' 2>/dev/null", path);
        uint64_t bs = header_number(dump, "\nBlock size:");
        ExtentList used = {};
        unsigned n_blocks = 0;

        assert_true(bs >= 1024);
        for (unsigned i = 0; i < N_FILES; i++) {
                _cleanup_free_ char *blocks = NULL;
                char *p;

                if (file_is_deleted(i))
                        continue;
                blocks = run_capture("debugfs -R 'blocks /d%02u/f%02u' '%s' 2>/dev/null", i % 4, i, path);
                assert_non_null(blocks);
                for (p = blocks; *p;) {
                        char *end;
                        uint64_t b = strtoull(p, &end, 10);
                        if (end == p) {
                                p++;
                                continue;
                        }
                        assert_int_equal(extent_list_add(&used, offset + b * bs, bs), 0);
                        n_blocks++;
                        p = end;
                }
        }
        assert_true(n_blocks > 0);
        assert_disjoint(free_list, &used);
        extent_list_done(&used);
}

/* Superblocks, descriptors, bitmaps and inode tables are never free. */
static void assert_metadata_not_free(const char *path, uint64_t offset, const ExtentList *free_list) {
        ext2_filsys fs = NULL;
        ExtentList meta = {};

        assert_int_equal(ext2fs_open(path, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
                blk64_t super = 0, old_desc = 0, new_desc = 0;
                blk_t used = 0;
                uint64_t bs = fs->blocksize;

                assert_int_equal(ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used), 0);
                if (g == 0 || super != 0)
                        extent_list_add(&meta, offset + super * bs, bs);
                if (old_desc)
                        extent_list_add(&meta, offset + old_desc * bs, (uint64_t) fs->desc_blocks * bs);
                if (new_desc)
                        extent_list_add(&meta, offset + new_desc * bs, bs);
                extent_list_add(&meta, offset + ext2fs_block_bitmap_loc(fs, g) * bs, bs);
                extent_list_add(&meta, offset + ext2fs_inode_bitmap_loc(fs, g) * bs, bs);
                extent_list_add(&meta, offset + ext2fs_inode_table_loc(fs, g) * bs,
                                (uint64_t) fs->inode_blocks_per_group * bs);
        }
        /* The boot block and primary superblock, whatever the block size. */
        extent_list_add(&meta, offset, 2048);
        ext2fs_close_free(&fs);
        assert_disjoint(free_list, &meta);
        extent_list_done(&meta);
}

static int scan(const char *path, FsScan *s) {
        FileVDisk d;
        int r;

        assert_int_equal(file_vdisk_open(path, SECTOR, &d), 0);
        r = fsaware_scan(&d.vdisk, s);
        file_vdisk_close(&d);
        return r;
}

static void assert_summary(const FsScan *s, const char *expected) {
        _cleanup_free_ char *summary = NULL;

        assert_int_equal(fsaware_summary(s, &summary), 0);
        assert_string_equal(summary, expected);
}

typedef struct Variant {
        const char *mkfs;
        const char *tune;       /* run after the deletions, or NULL */
        FsKind kind;
} Variant;

static const Variant variants[] = {
        { "mkfs.ext2 -b 1024", NULL, FS_EXT2 },                 /* no journal, first data block 1 */
        { "mkfs.ext3", NULL, FS_EXT3 },
        { "mkfs.ext4", NULL, FS_EXT4 },
        { "mkfs.ext4 -b 4096 -O metadata_csum,64bit", NULL, FS_EXT4 },
        { "mkfs.ext4 -O ^metadata_csum,uninit_bg", NULL, FS_EXT4 }, /* gdt_csum, BLOCK_UNINIT */
        { "mkfs.ext4 -b 1024 -g 2048 -G 4", NULL, FS_EXT4 },    /* many groups, flex_bg */
        { "mkfs.ext4 -b 4096 -O bigalloc -C 16384", NULL, FS_EXT4 },
        { "mkfs.ext4 -b 1024 -O bigalloc -C 16384", NULL, FS_EXT4 },
        /* debugfs -w would wait out the MMP interval: enable it afterwards */
        { "mkfs.ext4", "tune2fs -O mmp", FS_EXT4 },
};

static void test_whole_disk_variants(void **state) {
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(variants); i++) {
                ExtentList expected = {};
                FsScan s;

                fprintf(stderr, "variant: %s\n", variants[i].mkfs);
                make_fs(f, f->disk, variants[i].mkfs, "64M");
                if (variants[i].tune)
                        assert_int_equal(run("%s '%s' >/dev/null 2>&1", variants[i].tune, f->disk), 0);
                assert_int_equal(scan(f->disk, &s), 0);
                assert_int_equal(s.table, PARTITION_TABLE_NONE);
                assert_int_equal(s.n_parts, 1);
                assert_int_equal(s.parts[0].index, 0);
                assert_int_equal(s.parts[0].offset, 0);
                assert_int_equal(s.parts[0].size, 64 * MiB);
                assert_int_equal(s.parts[0].kind, variants[i].kind);
                if (!s.parts[0].clean)
                        fprintf(stderr, "unexpectedly unclean: %s\n", s.parts[0].reason);
                assert_true(s.parts[0].clean);
                assert_null(fsaware_first_unclean(&s));
                assert_summary(&s, fs_kind_to_string(variants[i].kind));

                expected_free(f->disk, 0, &expected);
                assert_true(expected.n > 0);
                assert_lists_equal(&s.free, &expected);
                assert_int_equal(s.parts[0].free_bytes, extent_list_total(&s.free));
                assert_files_not_free(f, f->disk, 0, &s.free);
                assert_metadata_not_free(f->disk, 0, &s.free);

                extent_list_done(&expected);
                fsaware_scan_done(&s);
        }
}

/* Writes the image file src into the disk at a sector. */
static void place(const char *disk, const char *src, uint64_t sector) {
        assert_int_equal(run("dd if='%s' of='%s' bs=512 seek=%" PRIu64 " conv=notrunc status=none", src, disk, sector), 0);
}

static char *part_path(const Fixture *f, const char *name) {
        char *p = NULL;

        assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
        return p;
}

static void test_gpt_two_ext4_and_swap(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *p1 = part_path(f, "p1.img"), *p2 = part_path(f, "p2.img"), *p3 = part_path(f, "p3.img");
        ExtentList expected = {};
        FsScan s;

        assert_int_equal(run("rm -f '%s' && truncate -s 80M '%s'", f->disk, f->disk), 0);
        assert_int_equal(run("printf 'label: gpt\\nstart=2048, size=65536, type=L\\n"
                             "start=67584, size=65536, type=L\\nstart=133120, size=16384, type=S\\n' | sfdisk -q '%s'",
                             f->disk), 0);
        make_fs(f, p1, "mkfs.ext4", "32M");
        make_fs(f, p2, "mkfs.ext4 -O metadata_csum,64bit -b 1024", "32M");
        assert_int_equal(run("rm -f '%s' && truncate -s 8M '%s' && mkswap '%s' >/dev/null 2>&1", p3, p3, p3), 0);
        place(f->disk, p1, 2048);
        place(f->disk, p2, 67584);
        place(f->disk, p3, 133120);

        assert_int_equal(scan(f->disk, &s), 0);
        assert_int_equal(s.table, PARTITION_TABLE_GPT);
        assert_false(s.gpt_backup_used);
        assert_int_equal(s.n_parts, 3);
        assert_int_equal(s.parts[0].index, 1);
        assert_int_equal(s.parts[0].offset, 2048 * SECTOR);
        assert_int_equal(s.parts[1].index, 2);
        assert_int_equal(s.parts[1].offset, 67584 * SECTOR);
        assert_int_equal(s.parts[2].index, 3);
        assert_int_equal(s.parts[2].kind, FS_SWAP);
        assert_true(s.parts[0].clean);
        assert_true(s.parts[1].clean);
        assert_false(s.parts[2].clean);         /* not processed */
        assert_int_equal(s.parts[2].free_bytes, 0);
        assert_null(fsaware_first_unclean(&s));
        assert_summary(&s, "gpt: ext4, ext4, swap");
        assert_string_equal(s.ambiguous, "");

        expected_free(p1, 2048 * SECTOR, &expected);
        expected_free(p2, 67584 * SECTOR, &expected);
        extent_list_normalize(&expected);
        assert_lists_equal(&s.free, &expected);
        assert_int_equal(s.parts[0].free_bytes + s.parts[1].free_bytes, extent_list_total(&s.free));
        /* Everything stays inside its partition. */
        assert_true(s.free.items[0].offset >= 2048 * SECTOR);
        assert_true(extent_end(&s.free.items[s.free.n - 1]) <= 133120 * SECTOR);
        assert_files_not_free(f, p1, 2048 * SECTOR, &s.free);
        assert_files_not_free(f, p2, 67584 * SECTOR, &s.free);
        assert_metadata_not_free(p1, 2048 * SECTOR, &s.free);
        assert_metadata_not_free(p2, 67584 * SECTOR, &s.free);
        extent_list_done(&expected);
        fsaware_scan_done(&s);

        /* A damaged primary GPT: the same result through the backup. */
        assert_int_equal(run("printf 'XXXXXXXX' | dd of='%s' bs=1 seek=512 conv=notrunc status=none", f->disk), 0);
        assert_int_equal(scan(f->disk, &s), 0);
        assert_true(s.gpt_backup_used);
        assert_int_equal(s.n_parts, 3);
        assert_summary(&s, "gpt: ext4, ext4, swap");
        fsaware_scan_done(&s);
}

static void test_mbr_primary_and_logical(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *p1 = part_path(f, "p1.img"), *p2 = part_path(f, "p2.img"),
                            *p5 = part_path(f, "p5.img"), *p6 = part_path(f, "p6.img");
        ExtentList expected = {};
        FsScan s;

        assert_int_equal(run("rm -f '%s' && truncate -s 64M '%s'", f->disk, f->disk), 0);
        assert_int_equal(run("printf 'label: dos\\nstart=2048, size=40960, type=83\\nstart=43008, size=20480, type=c\\n"
                             "start=63488, size=63488, type=5\\nstart=65536, size=40960, type=83\\n"
                             "start=108544, size=18432, type=82\\n' | sfdisk -q '%s'", f->disk), 0);
        make_fs(f, p1, "mkfs.ext2", "20M");
        assert_int_equal(run("rm -f '%s' && truncate -s 10M '%s' && mkfs.vfat '%s' >/dev/null", p2, p2, p2), 0);
        make_fs(f, p5, "mkfs.ext3", "20M");
        assert_int_equal(run("rm -f '%s' && truncate -s 9M '%s' && mkswap '%s' >/dev/null 2>&1", p6, p6, p6), 0);
        place(f->disk, p1, 2048);
        place(f->disk, p2, 43008);
        place(f->disk, p5, 65536);
        place(f->disk, p6, 108544);

        assert_int_equal(scan(f->disk, &s), 0);
        assert_int_equal(s.table, PARTITION_TABLE_MBR);
        assert_int_equal(s.n_parts, 4);
        assert_int_equal(s.parts[2].index, 5);
        assert_int_equal(s.parts[3].index, 6);
        assert_summary(&s, "mbr: ext2, vfat, ext3, swap");
        assert_string_equal(s.ambiguous, "");
        assert_true(s.parts[0].clean);
        assert_true(s.parts[2].clean);

        expected_free(p1, 2048 * SECTOR, &expected);
        expected_free(p5, 65536 * SECTOR, &expected);
        extent_list_normalize(&expected);
        assert_lists_equal(&s.free, &expected);
        assert_files_not_free(f, p1, 2048 * SECTOR, &s.free);
        assert_files_not_free(f, p5, 65536 * SECTOR, &s.free);
        extent_list_done(&expected);
        fsaware_scan_done(&s);
}

/* Finds a group (preferring one past 0) whose block bitmap is on disk, not
 * computed, and returns where that bitmap block is. */
static void find_initialized_bitmap(const char *path, unsigned *ret_group, uint64_t *ret_block) {
        _cleanup_free_ char *dump = run_capture("dumpe2fs '%s' 2>/dev/null", path);
        bool found = false;
        char *p;

        assert_non_null(dump);
        for (p = strstr(dump, "\nGroup "); p; p = strstr(p + 1, "\nGroup ")) {
                unsigned g = (unsigned) strtoul(p + 7, NULL, 10);
                char *eol = strchr(p + 1, '\n'), *bb = strstr(p, "Block bitmap at ");

                assert_non_null(eol);
                assert_non_null(bb);
                if (memmem(p, (size_t) (eol - p), "BLOCK_UNINIT", 12))
                        continue;
                *ret_group = g;
                *ret_block = strtoull(bb + 16, NULL, 10);
                found = true;
                if (g > 0)
                        return;
        }
        assert_true(found);
}

static void assert_unclean(const char *disk, const char *reason_prefix) {
        FsScan s;

        assert_int_equal(scan(disk, &s), 0);
        assert_int_equal(s.n_parts, 1);
        assert_true(fs_kind_is_ext(s.parts[0].kind));
        assert_false(s.parts[0].clean);
        if (strncmp(s.parts[0].reason, reason_prefix, strlen(reason_prefix)) != 0)
                fail_msg("reason \"%s\", expected \"%s...\"", s.parts[0].reason, reason_prefix);
        assert_int_equal(s.free.n, 0);
        assert_int_equal(s.parts[0].free_bytes, 0);
        assert_ptr_equal(fsaware_first_unclean(&s), &s.parts[0]);
        fsaware_scan_done(&s);
}

static void test_unclean(void **state) {
        Fixture *f = *state;
        char reason[64];
        unsigned group = 0;
        uint64_t bitmap = 0;

        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(run("debugfs -w -R 'feature needs_recovery' '%s' >/dev/null 2>&1", f->disk), 0);
        assert_unclean(f->disk, "journal needs recovery");

        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(run("debugfs -w -R 'ssv state 2' '%s' >/dev/null 2>&1", f->disk), 0);
        assert_unclean(f->disk, "error state set in superblock");

        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(run("debugfs -w -R 'ssv state 0' '%s' >/dev/null 2>&1", f->disk), 0);
        assert_unclean(f->disk, "not cleanly unmounted");

        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(run("debugfs -w -R 'ssv last_orphan 12' '%s' >/dev/null 2>&1", f->disk), 0);
        assert_unclean(f->disk, "orphan inode list pending");

        /* A damaged block bitmap under metadata_csum: the group is named. */
        make_fs(f, f->disk, "mkfs.ext4 -b 1024 -g 2048 -O metadata_csum,64bit", "64M");
        find_initialized_bitmap(f->disk, &group, &bitmap);
        assert_int_equal(run("printf '\\125' | dd of='%s' bs=1 seek=%" PRIu64 " conv=notrunc status=none",
                             f->disk, bitmap * 1024 + 100), 0);
        snprintf(reason, sizeof reason, "block bitmap checksum mismatch in group %u", group);
        assert_unclean(f->disk, reason);

        /* Without checksums a damaged bitmap disagrees with its group's
         * free count: here the primary superblock's block looks free. */
        make_fs(f, f->disk, "mkfs.ext2 -b 1024", "64M");
        {
                _cleanup_free_ char *dump = run_capture("dumpe2fs '%s' 2>/dev/null | grep -m1 'Block bitmap at'", f->disk);
                assert_non_null(dump);
                bitmap = strtoull(strstr(dump, "at ") + 3, NULL, 10);  /* group 0's */
        }
        assert_int_equal(run("printf '\\376' | dd of='%s' bs=1 seek=%" PRIu64 " conv=notrunc status=none",
                             f->disk, bitmap * 1024), 0);
        assert_unclean(f->disk, "group 0: descriptor counts");

        /* Another node holds it under multi-mount protection. */
        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(run("tune2fs -O mmp '%s' >/dev/null 2>&1", f->disk), 0);
        {
                _cleanup_free_ char *dump = run_capture("dumpe2fs -h '%s' 2>/dev/null", f->disk);
                uint64_t mmp = header_number(dump, "\nMMP block number:"), bs = header_number(dump, "\nBlock size:");
                assert_true(mmp > 0 && bs >= 1024);
                assert_int_equal(run("printf '\\001\\002\\003\\004' | dd of='%s' bs=1 seek=%" PRIu64 " conv=notrunc status=none",
                                     f->disk, mmp * bs + 4), 0);
        }
        assert_unclean(f->disk, "multi-mount protection says the file system is in use");

        /* The file system claims more than its partition holds. */
        {
                _cleanup_free_ char *p1 = part_path(f, "p1.img");
                FsScan s;

                assert_int_equal(run("rm -f '%s' && truncate -s 40M '%s'", f->disk, f->disk), 0);
                assert_int_equal(run("printf 'label: gpt\\nstart=2048, size=32768, type=L\\n' | sfdisk -q '%s'", f->disk), 0);
                make_fs(f, p1, "mkfs.ext4", "24M");
                place(f->disk, p1, 2048);
                assert_int_equal(scan(f->disk, &s), 0);
                assert_int_equal(s.n_parts, 1);
                assert_false(s.parts[0].clean);
                assert_non_null(strstr(s.parts[0].reason, "larger than its partition"));
                assert_int_equal(s.free.n, 0);
                fsaware_scan_done(&s);
        }
}

/* One unclean file system contributes nothing; its clean neighbour does. */
static void test_gpt_clean_and_unclean(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *p1 = part_path(f, "p1.img"), *p2 = part_path(f, "p2.img");
        ExtentList expected = {};
        const FsPartition *u;
        FsScan s;

        assert_int_equal(run("rm -f '%s' && truncate -s 72M '%s'", f->disk, f->disk), 0);
        assert_int_equal(run("printf 'label: gpt\\nstart=2048, size=65536, type=L\\n"
                             "start=67584, size=65536, type=L\\n' | sfdisk -q '%s'", f->disk), 0);
        make_fs(f, p1, "mkfs.ext4", "32M");
        make_fs(f, p2, "mkfs.ext4", "32M");
        assert_int_equal(run("debugfs -w -R 'feature needs_recovery' '%s' >/dev/null 2>&1", p2), 0);
        place(f->disk, p1, 2048);
        place(f->disk, p2, 67584);

        assert_int_equal(scan(f->disk, &s), 0);
        assert_true(s.parts[0].clean);
        assert_false(s.parts[1].clean);
        assert_string_equal(s.parts[1].reason, "journal needs recovery");
        u = fsaware_first_unclean(&s);
        assert_ptr_equal(u, &s.parts[1]);
        assert_int_equal(u->index, 2);
        expected_free(p1, 2048 * SECTOR, &expected);
        assert_lists_equal(&s.free, &expected);
        extent_list_done(&expected);
        fsaware_scan_done(&s);
}

static void test_other_whole_disk_kinds(void **state) {
        Fixture *f = *state;
        static const struct {
                const char *make;
                const char *name;
                const char *oem_id;     /* written over the boot sector's, or NULL */
        } kinds[] = {
                { "mkfs.vfat", "vfat", NULL },
                { "mkswap", "swap", NULL },
                /* Named by their boot sector, never read as NTFS. */
                { "mkntfs -q -F -f", "BitLocker", "-FVE-FS-" },
                { "mkntfs -q -F -f", "ReFS", "ReFS\\0\\0\\0\\0" },
                { "true", "unknown", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                FsScan s;

                assert_int_equal(run("rm -f '%s' && truncate -s 32M '%s'", f->disk, f->disk), 0);
                assert_int_equal(run("%s '%s' >/dev/null 2>&1", kinds[i].make, f->disk), 0);
                if (kinds[i].oem_id)
                        assert_int_equal(run("printf -- '%s' | dd of='%s' bs=1 seek=3 conv=notrunc status=none",
                                             kinds[i].oem_id, f->disk), 0);
                assert_int_equal(scan(f->disk, &s), 0);
                assert_int_equal(s.table, PARTITION_TABLE_NONE);
                assert_int_equal(s.n_parts, 1);
                assert_summary(&s, kinds[i].name);
                assert_int_equal(s.free.n, 0);
                assert_null(fsaware_first_unclean(&s));
                fsaware_scan_done(&s);
        }
}

static uint64_t total(const ExtentList *l) {
        uint64_t t = 0;

        for (size_t i = 0; i < l->n; i++)
                t += l->items[i].length;
        return t;
}

/* A number from ntfsinfo -m's report, e.g. "Free Clusters". */
static uint64_t ntfsinfo_field(const char *path, const char *field) {
        char cmd[512], line[256];
        unsigned long long v = UINT64_MAX;
        FILE *p;

        snprintf(cmd, sizeof cmd, "ntfsinfo -m '%s' 2>/dev/null", path);
        p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof line, p)) {
                const char *at = strstr(line, field);
                if (at && at[strlen(field)] == ':')
                        v = strtoull(at + strlen(field) + 1, NULL, 10);
        }
        pclose(p);
        assert_true(v != UINT64_MAX);
        return v;
}

static void test_ntfs_whole_disk_and_partition(void **state) {
        Fixture *f = *state;
        char p1[4096];
        uint64_t clusters, cs, free_bytes;
        FsScan s;

        assert_int_equal(run("rm -f '%1$s' && truncate -s 48M '%1$s' && mkntfs -q -F -f '%1$s' >/dev/null 2>&1", f->disk), 0);
        clusters = ntfsinfo_field(f->disk, "Free Clusters");
        cs = ntfsinfo_field(f->disk, "Cluster Size");
        free_bytes = clusters * cs;
        assert_int_equal(scan(f->disk, &s), 0);
        assert_summary(&s, "ntfs");
        assert_true(s.parts[0].supported && s.parts[0].clean);
        assert_int_equal(s.parts[0].unit_size, cs);
        /* Every free cluster of $Bitmap, as ntfsinfo counts them. */
        assert_int_equal(s.parts[0].free_bytes, free_bytes);
        assert_int_equal(total(&s.free), free_bytes);
        /* The boot sector and its backup in the last sector are never free. */
        assert_true(s.free.items[0].offset >= cs);
        assert_true(s.free.items[s.free.n - 1].offset + s.free.items[s.free.n - 1].length <= 48 * MiB - 512);
        fsaware_scan_done(&s);

        /* The same volume as an MBR partition (type 0x07): moved by its offset. */
        snprintf(p1, sizeof p1, "%s.p1", f->disk);
        assert_int_equal(run("mv '%s' '%s' && truncate -s 64M '%s'", f->disk, p1, f->disk), 0);
        assert_int_equal(run("printf 'label: dos\nstart=2048, size=48M, type=7\n' | sfdisk -q '%s'", f->disk), 0);
        assert_int_equal(run("dd if='%s' of='%s' bs=1M seek=1 conv=notrunc,sparse status=none", p1, f->disk), 0);
        assert_int_equal(scan(f->disk, &s), 0);
        assert_summary(&s, "mbr: ntfs");
        assert_string_equal(s.ambiguous, "");
        assert_non_null(s.parts[0].type_name);
        assert_string_equal(s.parts[0].type_name, "HPFS/NTFS/exFAT");
        assert_int_equal(total(&s.free), free_bytes);
        assert_true(s.free.items[0].offset >= 1 * MiB + cs);
        fsaware_scan_done(&s);
        unlink(p1);
}

static void test_ntfs_errors(void **state) {
        Fixture *f = *state;
        FileVDisk d;
        FsScan s;

        /* A disk read failing under libntfs-3g (the MFT at 16 KiB, $Bitmap,
         * $LogFile...) stops the scan with that errno: not "unclean". */
        assert_int_equal(run("rm -f '%1$s' && truncate -s 48M '%1$s' && mkntfs -q -F -f '%1$s' >/dev/null 2>&1", f->disk), 0);
        assert_int_equal(file_vdisk_open(f->disk, SECTOR, &d), 0);
        d.fail_from = 1 * MiB;  /* past the probe: $MFTMirr in the middle of the volume */
        d.fail_errno = EINTR;   /* what a broken lease reads as */
        assert_int_equal(fsaware_scan(&d.vdisk, &s), -EINTR);
        assert_null(s.parts);
        if (!strstr(s.error, "ntfs file system"))
                fail_msg("error: %s", s.error);
        fsaware_scan_done(&s);
        file_vdisk_close(&d);

        /* A boot sector that says NTFS over garbage: unclean, named. */
        assert_int_equal(run("dd if=/dev/zero of='%s' bs=4096 seek=1 count=4000 conv=notrunc status=none", f->disk), 0);
        assert_int_equal(scan(f->disk, &s), 0);
        assert_non_null(fsaware_first_unclean(&s));
        assert_non_null(strstr(s.parts[0].reason, "cannot mount"));
        assert_int_equal(s.free.n, 0);
        fsaware_scan_done(&s);

        /* A volume that claims more than its partition holds: unclean. */
        {
                _cleanup_free_ char *nt = NULL;

                assert_true(asprintf(&nt, "%s.nt", f->disk) > 0);
                assert_int_equal(run("rm -f '%1$s' && truncate -s 24M '%1$s' && mkntfs -q -F -f '%1$s' >/dev/null 2>&1", nt), 0);
                assert_int_equal(run("rm -f '%1$s' && truncate -s 40M '%1$s' && "
                                     "printf 'label: gpt\nstart=2048, size=32768, type=L\n' | sfdisk -q '%1$s'", f->disk), 0);
                place(f->disk, nt, 2048);
                assert_int_equal(scan(f->disk, &s), 0);
                assert_int_equal(s.n_parts, 1);
                assert_ptr_equal(fsaware_first_unclean(&s), &s.parts[0]);
                if (!strstr(s.parts[0].reason, "larger than its partition"))
                        fail_msg("reason: %s", s.parts[0].reason);
                assert_int_equal(s.free.n, 0);
                fsaware_scan_done(&s);
                unlink(nt);
        }
}

static void assert_ambiguous(const char *disk, const char *expected) {
        FsScan s;

        assert_int_equal(scan(disk, &s), 0);
        if (!strstr(s.ambiguous, expected))
                fail_msg("ambiguous \"%s\", expected \"%s\"", s.ambiguous, expected);
        /* Nothing is read, nothing is free; the partitions are still named. */
        assert_int_equal(s.free.n, 0);
        assert_true(s.n_parts > 0);
        for (size_t i = 0; i < s.n_parts; i++)
                assert_false(s.parts[i].supported);
        fsaware_scan_done(&s);
}

/* A file system at offset 0 and a partition table: one is stale (trial
 * finding 13), and the scan reads neither. */
static void test_ambiguous_layouts(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *p1 = part_path(f, "p1.img"), *nt = part_path(f, "nt.img");

        /* A stale MBR, and its partition's clean ext4, under a whole-disk ext4. */
        assert_int_equal(run("rm -f '%1$s' && truncate -s 64M '%1$s' && "
                             "printf 'label: dos\nstart=2048, size=40960, type=83\n' | sfdisk -q '%1$s'", f->disk), 0);
        make_fs(f, p1, "mkfs.ext4", "20M");
        place(f->disk, p1, 2048);
        assert_int_equal(run("dd if='%1$s' of='%2$s.mbr' bs=512 count=1 status=none && "
                             "mkfs.ext4 -q -F -E nodiscard '%1$s' >/dev/null 2>&1 && "
                             "dd if='%2$s.mbr' of='%1$s' bs=1 skip=446 seek=446 count=66 conv=notrunc status=none",
                             f->disk, p1), 0);
        assert_ambiguous(f->disk, "ambiguous layout: an ext4 file system at offset 0 and an MBR partition table "
                         "with partition 1 at offset 0x100000: the free tier cannot tell which is live");

        /* A stale whole-disk superblock under a new MBR (sfdisk keeps it)
         * and a live partition. */
        assert_int_equal(run("rm -f '%1$s' && truncate -s 64M '%1$s' && mkfs.ext2 -q -F '%1$s' >/dev/null 2>&1 && "
                             "printf 'label: dos\nstart=4096, size=40960, type=83\n' | sfdisk -q '%1$s'", f->disk), 0);
        make_fs(f, p1, "mkfs.ext4", "20M");
        place(f->disk, p1, 4096);
        assert_ambiguous(f->disk, "an ext2 file system at offset 0 and an MBR partition table with partition 1 at offset 0x200000");

        /* Any backend's file system at offset 0: an NTFS boot sector over a
         * GPT's protective MBR. */
        assert_int_equal(run("rm -f '%1$s' && truncate -s 16M '%1$s' && mkntfs -q -F -f '%1$s' >/dev/null 2>&1", nt), 0);
        assert_int_equal(run("rm -f '%1$s' && truncate -s 64M '%1$s' && "
                             "printf 'label: gpt\nstart=2048, size=40960, type=L\n' | sfdisk -q '%1$s'", f->disk), 0);
        make_fs(f, p1, "mkfs.ext4", "20M");
        place(f->disk, p1, 2048);
        assert_int_equal(run("dd if='%s' of='%s' bs=512 count=1 conv=notrunc status=none", nt, f->disk), 0);
        assert_ambiguous(f->disk, "an ntfs file system at offset 0 and a GPT partition table with partition 1 at offset 0x100000");
        /* Without it the same disk is read. */
        {
                FsScan s;

                assert_int_equal(run("dd if=/dev/zero of='%s' bs=512 count=1 conv=notrunc status=none", f->disk), 0);
                assert_int_equal(scan(f->disk, &s), 0);
                assert_string_equal(s.ambiguous, "");
                assert_summary(&s, "gpt: ext4");
                assert_true(s.parts[0].supported && s.parts[0].clean);
                assert_true(s.free.n > 0);
                fsaware_scan_done(&s);
        }
        unlink(nt);
}

static void test_errors(void **state) {
        Fixture *f = *state;
        FileVDisk d;
        FsScan s;

        /* A disk read failing under libext2fs stops the scan with that
         * errno: it is not mistaken for an unclean file system. */
        make_fs(f, f->disk, "mkfs.ext4", "64M");
        assert_int_equal(file_vdisk_open(f->disk, SECTOR, &d), 0);
        d.fail_from = 128 * KiB;      /* past the probe, superblock and descriptors: the bitmaps */
        d.fail_errno = EIO;
        assert_int_equal(fsaware_scan(&d.vdisk, &s), -EIO);
        assert_int_equal(s.n_parts, 0);
        assert_null(s.parts);
        if (!strstr(s.error, "ext4 file system"))
                fail_msg("error: %s", s.error);
        fsaware_scan_done(&s);
        file_vdisk_close(&d);

        /* A damaged partition table is refused. */
        assert_int_equal(run("rm -f '%s' && truncate -s 40M '%s'", f->disk, f->disk), 0);
        assert_int_equal(run("printf 'label: gpt\\nstart=2048, size=32768, type=L\\n' | sfdisk -q '%s'", f->disk), 0);
        assert_int_equal(run("printf 'XXXXXXXX' | dd of='%s' bs=1 seek=512 conv=notrunc status=none", f->disk), 0);
        assert_int_equal(run("printf 'XXXXXXXX' | dd of='%s' bs=1 seek=%" PRIu64 " conv=notrunc status=none",
                             f->disk, 40 * MiB - SECTOR), 0);
        assert_int_equal(scan(f->disk, &s), -EBADMSG);
        assert_non_null(strstr(s.error, "partition table: primary GPT damaged"));
        fsaware_scan_done(&s);
}

static void test_kind_names(void **state) {
        assert_string_equal(fs_kind_to_string(FS_EXT4), "ext4");
        assert_string_equal(fs_kind_to_string(FS_SWAP), "swap");
        assert_null(fs_kind_to_string(_FS_KIND_MAX));
        for (FsKind k = 0; k < _FS_KIND_MAX; k++)
                assert_non_null(fs_kind_to_string(k));
        assert_true(fs_kind_is_ext(FS_EXT2));
        assert_false(fs_kind_is_ext(FS_EXT_JOURNAL));
}

int main(void) {
        static const char *const tools[] = { "mkfs.ext2", "mkfs.ext3", "mkfs.ext4", "debugfs", "dumpe2fs", "sfdisk",
                                             "mkswap", "mkfs.vfat", "mkntfs", "ntfsinfo", "dd", "truncate", NULL };
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kind_names),
                cmocka_unit_test_setup_teardown(test_whole_disk_variants, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_two_ext4_and_swap, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_primary_and_logical, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unclean, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_clean_and_unclean, setup, teardown),
                cmocka_unit_test_setup_teardown(test_other_whole_disk_kinds, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ambiguous_layouts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ntfs_whole_disk_and_partition, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ntfs_errors, setup, teardown),
        };

        if (!have_tools(tools)) {
                fprintf(stderr, "test-fsaware: required tools are missing\n");
                return missing_prerequisite_status();
        }
        return cmocka_run_group_tests(tests, NULL, NULL);
}
