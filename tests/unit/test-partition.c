/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>
#include <endian.h>
#include <zlib.h>

#include "disk-image-util.h"
#include "partition.h"

/* Partition tables written by sfdisk and fdisk on plain files, then damaged
 * byte by byte where a test needs it. */

#define SECTOR 512

/* GPT type GUIDs as stored on disk (first three fields little-endian). */
static const uint8_t GUID_LINUX_FS[16] = {
        0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
};
static const uint8_t GUID_LINUX_SWAP[16] = {
        0x6D, 0xFD, 0x57, 0x06, 0xAB, 0xA4, 0xC4, 0x43, 0x84, 0xE5, 0x09, 0x33, 0xC8, 0x4B, 0x4F, 0x4F,
};

typedef struct Fixture {
        char *dir;
        char *image;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        f->dir = make_temp_dir();
        assert_non_null(f->dir);
        assert_true(asprintf(&f->image, "%s/disk.img", f->dir) > 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        remove_temp_dir(f->dir);
        free(f->image);
        free(f);
        return 0;
}

static void make_disk(const Fixture *f, uint64_t size, const char *sfdisk_script) {
        assert_int_equal(run("rm -f '%s' && truncate -s %" PRIu64 " '%s'", f->image, size, f->image), 0);
        assert_int_equal(run("printf '%s' | sfdisk -q '%s' >/dev/null", sfdisk_script, f->image), 0);
}

static void xor_byte(const char *path, uint64_t offset) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        uint8_t b;

        assert_true(fd >= 0);
        assert_int_equal(pread(fd, &b, 1, (off_t) offset), 1);
        b ^= 0xFF;
        assert_int_equal(pwrite(fd, &b, 1, (off_t) offset), 1);
        close(fd);
}

static void write_bytes(const char *path, uint64_t offset, const void *data, size_t len) {
        int fd = open(path, O_RDWR | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, data, len, (off_t) offset), (ssize_t) len);
        close(fd);
}

static uint64_t read_le64_at(const char *path, uint64_t offset) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t v = 0;

        assert_true(fd >= 0);
        assert_int_equal(pread(fd, &v, sizeof v, (off_t) offset), (ssize_t) sizeof v);
        close(fd);
        return le64toh(v);
}

static int read_table(const Fixture *f, uint32_t sector_size, PartitionTable *t) {
        FileVDisk d;
        int r;

        assert_int_equal(file_vdisk_open(f->image, sector_size, &d), 0);
        r = partition_table_read(&d.vdisk, t);
        file_vdisk_close(&d);
        return r;
}

static void assert_partition(const Partition *p, int index, uint64_t start_sector, uint64_t n_sectors, uint32_t ss) {
        assert_int_equal(p->index, index);
        assert_int_equal(p->offset, start_sector * ss);
        assert_int_equal(p->size, n_sectors * ss);
}

#define GPT_SCRIPT \
        "label: gpt\\n" \
        "start=2048, size=65536, type=L\\n" \
        "start=67584, size=65536, type=L\\n" \
        "start=133120, size=16384, type=S\\n"
#define GPT_DISK_SIZE (80 * MiB)

static void assert_gpt_layout(const PartitionTable *t) {
        assert_int_equal(t->kind, PARTITION_TABLE_GPT);
        assert_int_equal(t->n_parts, 3);
        assert_partition(&t->parts[0], 1, 2048, 65536, SECTOR);
        assert_partition(&t->parts[1], 2, 67584, 65536, SECTOR);
        assert_partition(&t->parts[2], 3, 133120, 16384, SECTOR);
        assert_memory_equal(t->parts[0].gpt_type, GUID_LINUX_FS, 16);
        assert_memory_equal(t->parts[1].gpt_type, GUID_LINUX_FS, 16);
        assert_memory_equal(t->parts[2].gpt_type, GUID_LINUX_SWAP, 16);
        assert_int_equal(t->parts[0].mbr_type, 0);
}

static void test_gpt(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_gpt_layout(&t);
        assert_false(t.gpt_backup_used);
        assert_string_equal(partition_table_kind_to_string(t.kind), "gpt");
        partition_table_done(&t);
}

static void test_gpt_damaged_primary_header_uses_backup(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        xor_byte(f->image, SECTOR + 40);        /* first usable LBA: breaks the header CRC */
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_gpt_layout(&t);
        assert_true(t.gpt_backup_used);
        partition_table_done(&t);

        /* Without a signature the protective MBR still says GPT. */
        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        write_bytes(f->image, SECTOR, "XXXXXXXX", 8);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_gpt_layout(&t);
        assert_true(t.gpt_backup_used);
        partition_table_done(&t);
}

static void test_gpt_damaged_entry_array(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        uint64_t last_lba = GPT_DISK_SIZE / SECTOR - 1, backup_entries;

        /* Primary array damaged: its CRC is caught and the backup serves. */
        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        xor_byte(f->image, 2 * SECTOR + 32);    /* first LBA of entry 1 */
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_gpt_layout(&t);
        assert_true(t.gpt_backup_used);
        partition_table_done(&t);

        /* Both arrays damaged: refused. */
        backup_entries = read_le64_at(f->image, last_lba * SECTOR + 72);
        assert_true(backup_entries > 2 && backup_entries < last_lba);
        xor_byte(f->image, backup_entries * SECTOR + 32);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_int_equal(t.n_parts, 0);
        assert_null(t.parts);
        assert_non_null(strstr(t.error, "entry array"));
        assert_non_null(strstr(t.error, "CRC32"));
        partition_table_done(&t);
}

static void test_gpt_both_headers_damaged(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        xor_byte(f->image, SECTOR + 40);
        xor_byte(f->image, GPT_DISK_SIZE - SECTOR + 40);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "primary GPT damaged"));
        assert_non_null(strstr(t.error, "backup GPT damaged"));
        partition_table_done(&t);
}

static void test_gpt_header_exposing_table_refused(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        uint8_t header[92];
        uint32_t crc;
        int fd;

        /* A primary header with a correct CRC whose usable area starts at
         * sector 1 would let a partition hold the header itself. */
        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        fd = open(f->image, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, header, sizeof header, SECTOR), (ssize_t) sizeof header);
        header[40] = 1;
        memset(header + 41, 0, 7);
        memset(header + 16, 0, 4);
        crc = htole32((uint32_t) crc32(0, header, sizeof header));
        memcpy(header + 16, &crc, 4);
        assert_int_equal(pwrite(fd, header, sizeof header, SECTOR), (ssize_t) sizeof header);
        close(fd);

        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_gpt_layout(&t);
        assert_true(t.gpt_backup_used);
        partition_table_done(&t);
}

static void test_gpt_4k_sectors(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        assert_int_equal(run("rm -f '%s' && truncate -s 64M '%s'", f->image, f->image), 0);
        assert_int_equal(run("printf 'g\\nn\\n1\\n256\\n+16M\\nn\\n2\\n8192\\n+8M\\nw\\n' | fdisk -b 4096 '%s' >/dev/null 2>&1",
                             f->image), 0);
        assert_int_equal(read_table(f, 4096, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_GPT);
        assert_int_equal(t.n_parts, 2);
        assert_partition(&t.parts[0], 1, 256, 4096, 4096);
        assert_partition(&t.parts[1], 2, 8192, 2048, 4096);
        partition_table_done(&t);

        /* Read with the wrong sector size the headers are not where they
         * should be: refused rather than misread. */
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "no GPT signature at sector 1)"));
        partition_table_done(&t);
}

#define MBR_SCRIPT \
        "label: dos\\n" \
        "start=2048, size=20480, type=83\\n" \
        "start=22528, size=20480, type=c\\n" \
        "start=43008, size=61440, type=5\\n" \
        "start=45056, size=20480, type=83\\n" \
        "start=67584, size=20480, type=82\\n"
#define MBR_DISK_SIZE (64 * MiB)

static void test_mbr_primary_and_logical(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        make_disk(f, MBR_DISK_SIZE, MBR_SCRIPT);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_MBR);
        assert_int_equal(t.n_parts, 4);         /* the extended container is not listed */
        assert_partition(&t.parts[0], 1, 2048, 20480, SECTOR);
        assert_partition(&t.parts[1], 2, 22528, 20480, SECTOR);
        assert_partition(&t.parts[2], 5, 45056, 20480, SECTOR);
        assert_partition(&t.parts[3], 6, 67584, 20480, SECTOR);
        assert_int_equal(t.parts[0].mbr_type, 0x83);
        assert_int_equal(t.parts[1].mbr_type, 0x0c);
        assert_int_equal(t.parts[2].mbr_type, 0x83);
        assert_int_equal(t.parts[3].mbr_type, 0x82);
        assert_string_equal(partition_table_kind_to_string(t.kind), "mbr");
        partition_table_done(&t);
}

static void test_mbr_partition_past_disk_end(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        make_disk(f, MBR_DISK_SIZE, MBR_SCRIPT);
        /* The image lost its tail: logical 6 now ends outside it. */
        assert_int_equal(run("truncate -s %" PRIu64 " '%s'", (uint64_t) 80000 * SECTOR, f->image), 0);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "past the end"));
        partition_table_done(&t);
}

static void test_mbr_overlap_refused(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        /* boot, CHS, type 0x83, CHS, start 10000, 20000 sectors: inside partition 1 */
        const uint8_t entry[16] = { 0x00, 0, 0, 0, 0x83, 0, 0, 0,
                                    0x10, 0x27, 0, 0, 0x20, 0x4E, 0, 0 };

        make_disk(f, MBR_DISK_SIZE, "label: dos\\nstart=2048, size=20480, type=83\\n");
        write_bytes(f->image, 446 + 16, entry, sizeof entry);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "overlap"));
        partition_table_done(&t);
}

static void test_mbr_ebr_loop_refused(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        const uint8_t zero[4] = {};

        make_disk(f, MBR_DISK_SIZE, MBR_SCRIPT);
        /* The first EBR's link now points at itself. */
        write_bytes(f->image, 43008 * SECTOR + 446 + 16 + 8, zero, sizeof zero);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "EBR chain loops"));
        partition_table_done(&t);
}

static void test_mbr_partition_covering_ebr_refused(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        const uint8_t count[4] = { 0x01, 0x50, 0, 0 };  /* 20481 sectors: one into the extended partition */
        const uint8_t zero[4] = {};

        make_disk(f, MBR_DISK_SIZE, MBR_SCRIPT);
        write_bytes(f->image, 446 + 16 + 12, count, sizeof count);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "partition 2 covers the EBR at sector 43008"));
        partition_table_done(&t);

        /* A logical partition starting at its own EBR. */
        make_disk(f, MBR_DISK_SIZE, MBR_SCRIPT);
        write_bytes(f->image, 43008 * SECTOR + 446 + 8, zero, sizeof zero);
        assert_int_equal(read_table(f, SECTOR, &t), -EBADMSG);
        assert_non_null(strstr(t.error, "logical partition 5 overlaps its EBR"));
        partition_table_done(&t);
}

static void test_no_table(void **state) {
        Fixture *f = *state;
        PartitionTable t;

        /* All zeros. */
        assert_int_equal(run("rm -f '%s' && truncate -s 16M '%s'", f->image, f->image), 0);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_NONE);
        assert_int_equal(t.n_parts, 0);
        partition_table_done(&t);

        /* A whole-disk FAT file system ends its boot sector in 55 AA too. */
        assert_int_equal(run("mkfs.vfat '%s' >/dev/null", f->image), 0);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_NONE);
        partition_table_done(&t);

        /* So does NTFS. */
        assert_int_equal(run("mkntfs -q -F -f '%s' >/dev/null 2>&1", f->image), 0);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_NONE);
        partition_table_done(&t);

        /* A whole-disk ext4, as in WSL's ext4.vhdx. */
        assert_int_equal(run("rm -f '%s' && mkfs.ext4 -q '%s' 16M", f->image, f->image), 0);
        assert_int_equal(read_table(f, SECTOR, &t), 0);
        assert_int_equal(t.kind, PARTITION_TABLE_NONE);
        partition_table_done(&t);
}

static void test_read_error_is_passed_up(void **state) {
        Fixture *f = *state;
        PartitionTable t;
        FileVDisk d;

        make_disk(f, GPT_DISK_SIZE, GPT_SCRIPT);
        assert_int_equal(file_vdisk_open(f->image, SECTOR, &d), 0);
        d.fail_from = 2 * SECTOR;       /* the entry array */
        d.fail_errno = EIO;
        assert_int_equal(partition_table_read(&d.vdisk, &t), -EIO);
        assert_int_equal(t.n_parts, 0);
        file_vdisk_close(&d);
        partition_table_done(&t);
}

int main(void) {
        static const char *const tools[] = { "sfdisk", "fdisk", "truncate", "mkfs.vfat", "mkntfs", "mkfs.ext4", NULL };
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_gpt, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_damaged_primary_header_uses_backup, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_damaged_entry_array, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_both_headers_damaged, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_header_exposing_table_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gpt_4k_sectors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_primary_and_logical, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_partition_past_disk_end, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_overlap_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_ebr_loop_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mbr_partition_covering_ebr_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_table, setup, teardown),
                cmocka_unit_test_setup_teardown(test_read_error_is_passed_up, setup, teardown),
        };

        if (!have_tools(tools)) {
                fprintf(stderr, "test-partition: required tools are missing\n");
                return missing_prerequisite_status();
        }
        return cmocka_run_group_tests(tests, NULL, NULL);
}
