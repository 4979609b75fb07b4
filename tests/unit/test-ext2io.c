/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>

#include "disk-image-util.h"
#include "ext2io.h"

/* The io_manager against a real ext4 made by mke2fs and placed 1 MiB into a
 * disk image between random bytes, read back with pread for comparison. */

#define FS_OFFSET (1 * MiB)
#define FS_SIZE (16 * MiB)
#define DISK_SIZE (FS_OFFSET + FS_SIZE + 1 * MiB)

typedef struct Fixture {
        char *dir;
        char *disk;
        FileVDisk vdisk;
        char name[EXT2IO_NAME_MAX];
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);
        _cleanup_free_ char *fs = NULL;

        assert_non_null(f);
        f->dir = make_temp_dir();
        assert_non_null(f->dir);
        assert_true(asprintf(&f->disk, "%s/disk.img", f->dir) > 0);
        assert_true(asprintf(&fs, "%s/fs.img", f->dir) > 0);
        assert_int_equal(run("head -c %" PRIu64 " /dev/urandom > '%s'", DISK_SIZE, f->disk), 0);
        assert_int_equal(run("mkfs.ext4 -q -F '%s' %" PRIu64 "k >/dev/null 2>&1", fs, FS_SIZE / KiB), 0);
        assert_int_equal(run("dd if='%s' of='%s' bs=1M seek=1 conv=notrunc status=none", fs, f->disk), 0);
        assert_int_equal(file_vdisk_open(f->disk, 512, &f->vdisk), 0);
        assert_int_equal(ext2io_format_name(&f->vdisk.vdisk, FS_OFFSET, FS_SIZE, f->name, sizeof f->name), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        file_vdisk_close(&f->vdisk);
        remove_temp_dir(f->dir);
        free(f->disk);
        free(f);
        return 0;
}

static void pread_disk(const Fixture *f, void *buf, size_t len, uint64_t offset) {
        assert_int_equal(pread(f->vdisk.fd, buf, len, (off_t) offset), (ssize_t) len);
}

static void test_name(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        char small[8], name[EXT2IO_NAME_MAX + 16];

        assert_int_equal(ext2io_format_name(&f->vdisk.vdisk, 1, 2, small, sizeof small), -ENOBUFS);
        assert_int_equal(m->open("/dev/sda", 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
        assert_int_equal(m->open("vdisk:0x0:0:10", 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
        snprintf(name, sizeof name, "%s:trailing", f->name);
        assert_int_equal(m->open(name, 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
        /* A range that leaves the disk. */
        assert_int_equal(ext2io_format_name(&f->vdisk.vdisk, FS_OFFSET, DISK_SIZE, name, sizeof name), 0);
        assert_int_equal(m->open(name, 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
        assert_null(ch);
}

static void test_read_at_offset(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        uint8_t got[8192], want[8192];
        io_stats stats = NULL;

        assert_int_equal(m->open(f->name, 0, &ch), 0);
        assert_string_equal(ch->name, f->name);
        assert_int_equal(ch->block_size, 1024);

        /* Block 1 of 1 KiB: the superblock. */
        assert_int_equal(io_channel_read_blk64(ch, 1, 1, got), 0);
        pread_disk(f, want, 1024, FS_OFFSET + 1024);
        assert_memory_equal(got, want, 1024);
        assert_int_equal(got[56] | got[57] << 8, EXT2_SUPER_MAGIC);

        /* Two 4 KiB blocks, then a byte count (negative count). */
        assert_int_equal(io_channel_set_blksize(ch, 4096), 0);
        assert_int_equal(io_channel_read_blk64(ch, 3, 2, got), 0);
        pread_disk(f, want, 8192, FS_OFFSET + 3 * 4096);
        assert_memory_equal(got, want, 8192);
        assert_int_equal(io_channel_read_blk64(ch, 2, -100, got), 0);
        pread_disk(f, want, 100, FS_OFFSET + 2 * 4096);
        assert_memory_equal(got, want, 100);

        assert_int_equal(m->get_stats(ch, &stats), 0);
        assert_int_equal(stats->bytes_read, 1024 + 8192 + 100);
        assert_int_equal(stats->bytes_written, 0);
        assert_int_equal(ext2io_channel_error(ch), 0);
        assert_int_equal(io_channel_close(ch), 0);
}

static void test_read_past_partition_end(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        uint8_t got[8192], want[4096];
        const uint8_t zero[4096] = {};

        assert_int_equal(m->open(f->name, 0, &ch), 0);
        assert_int_equal(io_channel_set_blksize(ch, 4096), 0);
        /* The last block of the partition, then one past it: the bytes after
         * the partition (random here) must not be returned. */
        memset(got, 0xAA, sizeof got);
        assert_int_equal(io_channel_read_blk64(ch, FS_SIZE / 4096 - 1, 2, got), EXT2_ET_SHORT_READ);
        pread_disk(f, want, 4096, FS_OFFSET + FS_SIZE - 4096);
        assert_memory_equal(got, want, 4096);
        assert_memory_equal(got + 4096, zero, 4096);
        assert_int_equal(io_channel_read_blk64(ch, FS_SIZE / 4096 + 10, 1, got), EXT2_ET_SHORT_READ);
        assert_memory_equal(got, zero, 4096);
        /* Not a disk failure. */
        assert_int_equal(ext2io_channel_error(ch), 0);
        assert_int_equal(io_channel_close(ch), 0);
}

static void test_writes_fail(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        uint8_t buf[1024] = {};
        struct stat before, after;

        assert_int_equal(m->open(f->name, IO_FLAG_RW, &ch), EROFS);
        assert_int_equal(m->open(f->name, IO_FLAG_RW | IO_FLAG_EXCLUSIVE, &ch), EROFS);

        assert_int_equal(stat(f->disk, &before), 0);
        assert_int_equal(m->open(f->name, 0, &ch), 0);
        assert_int_equal(io_channel_write_blk64(ch, 1, 1, buf), EROFS);
        assert_int_equal(io_channel_write_blk(ch, 1, 1, buf), EROFS);
        assert_int_equal(io_channel_write_byte(ch, 1024, 1, buf), EROFS);
        assert_int_equal(io_channel_discard(ch, 1, 1), EROFS);
        assert_int_equal(io_channel_zeroout(ch, 1, 1), EROFS);
        assert_int_equal(io_channel_flush(ch), 0);
        assert_int_equal(m->set_option(ch, "offset", "0"), EXT2_ET_INVALID_ARGUMENT);
        assert_int_equal(io_channel_close(ch), 0);
        assert_int_equal(stat(f->disk, &after), 0);
        assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
        assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
}

static void test_disk_error_is_kept(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        uint8_t buf[1024];

        assert_int_equal(m->open(f->name, 0, &ch), 0);
        f->vdisk.fail_from = FS_OFFSET + 4 * KiB;
        f->vdisk.fail_errno = ENOLCK;
        assert_int_equal(io_channel_read_blk64(ch, 1, 1, buf), 0);
        assert_int_equal(io_channel_read_blk64(ch, 8, 1, buf), ENOLCK);
        f->vdisk.fail_errno = EIO;
        assert_int_equal(io_channel_read_blk64(ch, 9, 1, buf), EIO);
        /* The first failure is the one remembered. */
        assert_int_equal(ext2io_channel_error(ch), -ENOLCK);
        f->vdisk.fail_errno = 0;
        assert_int_equal(io_channel_close(ch), 0);
}

static void test_refcount(void **state) {
        Fixture *f = *state;
        io_manager m = ext2io_manager();
        io_channel ch = NULL;
        uint8_t buf[1024];

        assert_int_equal(m->open(f->name, 0, &ch), 0);
        io_channel_bumpcount(ch);
        assert_int_equal(io_channel_close(ch), 0);
        /* Still open: one reference left. */
        assert_int_equal(io_channel_read_blk64(ch, 1, 1, buf), 0);
        assert_int_equal(io_channel_close(ch), 0);
}

static void test_libext2fs_through_it(void **state) {
        Fixture *f = *state;
        ext2_filsys fs = NULL;
        _cleanup_free_ char *dump = NULL, *p = NULL;
        unsigned reads_before = f->vdisk.n_reads;

        /* Read-write is refused by the channel. */
        assert_int_equal(ext2fs_open2(f->name, NULL, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0, ext2io_manager(), &fs), EROFS);
        assert_null(fs);

        assert_int_equal(ext2fs_open2(f->name, NULL, EXT2_FLAG_64BITS, 0, 0, ext2io_manager(), &fs), 0);
        assert_int_equal(ext2fs_read_bitmaps(fs), 0);
        assert_true(f->vdisk.n_reads > reads_before);

        /* What mke2fs wrote, as dumpe2fs reads it from the plain file. */
        assert_true(asprintf(&p, "%s/fs.img", f->dir) > 0);
        dump = run_capture("dumpe2fs -h '%s' 2>/dev/null | grep '^Block count:'", p);
        assert_non_null(dump);
        assert_int_equal(strtoull(dump + strlen("Block count:"), NULL, 10), ext2fs_blocks_count(fs->super));
        assert_int_equal(ext2fs_blocks_count(fs->super) * fs->blocksize, FS_SIZE);
        ext2fs_free(fs);
}

int main(void) {
        static const char *const tools[] = { "mkfs.ext4", "dumpe2fs", "dd", "head", NULL };
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_name, setup, teardown),
                cmocka_unit_test_setup_teardown(test_read_at_offset, setup, teardown),
                cmocka_unit_test_setup_teardown(test_read_past_partition_end, setup, teardown),
                cmocka_unit_test_setup_teardown(test_writes_fail, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disk_error_is_kept, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refcount, setup, teardown),
                cmocka_unit_test_setup_teardown(test_libext2fs_through_it, setup, teardown),
        };

        if (!have_tools(tools)) {
                fprintf(stderr, "test-ext2io: required tools are missing\n");
                return missing_prerequisite_status();
        }
        return cmocka_run_group_tests(tests, NULL, NULL);
}
