/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "crc32c.h"
#include "prerequisite.h"
#include "vhdx.h"

#define MiB (UINT64_C(1) << 20)

typedef struct Fixture {
        char dir[64];
} Fixture;

static int run(const char *cmd) {
        int r = system(cmd);
        return r == 0 ? 0 : -1;
}

static int fd_read(void *userdata, void *buf, size_t len, uint64_t offset) {
        ssize_t n = pread(*(int *) userdata, buf, len, (off_t) offset);
        if (n < 0)
                return -errno;
        return (size_t) n == len ? 0 : -EIO;
}

static int open_vhdx(const char *path, Vhdx **ret, char **error) {
        static int fd;  /* the source only lives for the duration of vhdx_open */
        struct stat st;
        int r;

        fd = open(path, O_RDONLY);
        if (fd < 0)
                return -errno;
        assert_int_equal(fstat(fd, &st), 0);
        VhdxSource src = { (uint64_t) st.st_size, fd_read, &fd };
        r = vhdx_open(&src, ret, error);
        close(fd);
        return r;
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);
        strcpy(f->dir, "/tmp/test-vhdx-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
        (void) !system(cmd);
        free(f);
        return 0;
}

/* The real images of ../shared/fixtures, which sit beside the repository in
 * CI and are absent from a user's clone: skipped without them (exit 77),
 * failed under CI=true. */
static bool fixture(Fixture *f, const char *name, char *path, size_t size) {
        const char *dir = getenv("FIXTURES");
        char src[512], cmd[1200];

        snprintf(src, sizeof src, "%s/%s.bz2", dir ? dir : "../shared/fixtures/vhdx", name);
        if (access(src, R_OK) < 0) {
                fprintf(stderr, "fixture %s not found: the ../shared/fixtures images are not part of the "
                        "repository (a clone lacks them; CI has them)\n", src);
                return false;
        }
        snprintf(path, size, "%s/%s", f->dir, name);
        snprintf(cmd, sizeof cmd, "bzip2 -dc '%s' > '%s'", src, path);
        assert_int_equal(run(cmd), 0);
        return true;
}

static void test_hyperv_dynamic_1g(void **state) {
        char path[256], *err = NULL;
        Vhdx *v = NULL;

        if (!fixture(*state, "iotest-dynamic-1G.vhdx", path, sizeof path))
                skip_missing("fixture iotest-dynamic-1G.vhdx");
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        assert_string_equal(v->creator, "Microsoft Windows 6.2.9200.16384");
        assert_int_equal(v->virtual_size, 1024 * MiB);
        assert_int_equal(v->block_size, 32 * MiB);
        assert_int_equal(v->logical_sector_size, 512);
        assert_int_equal(v->physical_sector_size, 4096);
        assert_int_equal(v->chunk_ratio, 128);
        assert_int_equal(v->metadata_offset, 2 * MiB);
        assert_int_equal(v->bat_offset, 3 * MiB);
        assert_int_equal(v->headers[v->current].log_offset, 1 * MiB);
        assert_int_equal(v->headers[v->current].log_length, 1 * MiB);
        assert_int_equal(v->headers[v->current].sequence, 15);
        assert_int_equal(v->headers[1 - v->current].sequence, 14);
        assert_false(v->log_dirty);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_FULLY_PRESENT], 3);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_ZERO], 29);
        assert_int_equal(vhdx_block_file_offset(v, 0), 4 * MiB);
        assert_int_equal(vhdx_block_file_offset(v, 1), 36 * MiB);
        assert_int_equal(vhdx_block_file_offset(v, 2), 68 * MiB);
        for (size_t i = 0; i < v->n_regions; i++)
                assert_true(v->regions[i].required);

        /* Guest data per SOURCES.md: 0xa5 to 33 MiB, 0x96 to 66 MiB, zeros. */
        {
                int fd = open(path, O_RDONLY);
                VhdxSource src = { v->file_size, fd_read, &fd };
                uint8_t b[4];
                assert_int_equal(vhdx_read_virtual(v, &src, b, 2, 33 * MiB - 1), 0);
                assert_int_equal(b[0], 0xa5);
                assert_int_equal(b[1], 0x96);
                assert_int_equal(vhdx_read_virtual(v, &src, b, 2, 66 * MiB - 1), 0);
                assert_int_equal(b[0], 0x96);
                assert_int_equal(b[1], 0);
                assert_int_equal(vhdx_read_virtual(v, &src, b, 4, 1000 * MiB), 0);
                assert_int_equal(b[0] | b[1] | b[2] | b[3], 0);
                close(fd);
        }
        vhdx_free(v);
}

static void test_qemu_dirty_log(void **state) {
        char path[256], *err = NULL;
        Vhdx *v = NULL;

        if (!fixture(*state, "iotest-dirtylog-10G-4M.vhdx", path, sizeof path))
                skip_missing("fixture iotest-dirtylog-10G-4M.vhdx");
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        assert_true(v->log_dirty);
        assert_int_equal(v->block_size, 1 * MiB);
        assert_int_equal(v->virtual_size, 10 * 1024 * MiB);
        assert_int_equal(v->chunk_ratio, 4096);
        assert_int_equal(v->bat_entries, 10242);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_FULLY_PRESENT], 17);
        assert_int_equal(v->bat_offset, 2 * MiB);
        assert_int_equal(v->metadata_offset, 3 * MiB);
        for (size_t i = 0; i < v->n_regions; i++)
                assert_false(v->regions[i].required);
        vhdx_free(v);
}

static void test_disk2vhd(void **state) {
        char path[256], *err = NULL;
        ExtentList structures = {}, data = {}, stale = {};
        Vhdx *v = NULL;

        if (!fixture(*state, "test-disk2vhd.vhdx", path, sizeof path))
                skip_missing("fixture test-disk2vhd.vhdx");
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        assert_true(v->headers_identical);
        assert_int_equal(v->headers[0].sequence, 1);
        assert_int_equal(v->headers[1].sequence, 1);
        assert_string_equal(v->creator, "d2v");
        assert_int_equal(v->virtual_size, 256 * MiB);
        assert_int_equal(v->block_size, 2 * MiB);
        assert_false(v->leave_block_allocated);
        assert_int_equal(v->file_size, 260 * MiB + 512);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_FULLY_PRESENT], 128);
        assert_int_equal(vhdx_block_file_offset(v, 0), 4 * MiB);
        assert_int_equal(vhdx_block_file_offset(v, 127), 6 * MiB);
        assert_int_equal(vhdx_block_file_offset(v, 1), 8 * MiB);
        assert_int_equal(vhdx_block_file_offset(v, 126), 8 * MiB + 125 * 2 * MiB);

        assert_int_equal(vhdx_file_ranges(v, &structures, &data, &stale), 0);
        assert_int_equal(extent_list_total(&data), 256 * MiB);
        /* Only the trailing 512 bytes belong to nothing. */
        assert_int_equal(stale.n, 1);
        assert_int_equal(stale.items[0].offset, 260 * MiB);
        assert_int_equal(stale.items[0].length, 512);
        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
        vhdx_free(v);
}

/* A qemu-made dynamic image with data in blocks 0 and 2 of 1 MiB blocks. */
static void make_qemu_image(Fixture *f, char *path, size_t size) {
        char cmd[1024];

        snprintf(path, size, "%s/q.vhdx", f->dir);
        snprintf(cmd, sizeof cmd,
                 "qemu-img create -q -f vhdx -o block_size=1M,subformat=dynamic '%s' 16M && "
                 "qemu-io -f vhdx -c 'write -q -P 0x11 0 1M' -c 'write -q -P 0x22 2M 512k' '%s' >/dev/null",
                 path, path);
        assert_int_equal(run(cmd), 0);
}

static void test_qemu_made_layout(void **state) {
        char path[256], *err = NULL;
        ExtentList structures = {}, data = {}, stale = {}, virt = {}, mapped = {};
        Vhdx *v = NULL;

        make_qemu_image(*state, path, sizeof path);
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_FULLY_PRESENT], 2);
        assert_int_equal(vhdx_file_ranges(v, &structures, &data, &stale), 0);
        assert_int_equal(extent_list_total(&data), 2 * MiB);
        assert_true(extent_list_covers(&structures, 0, MiB));

        /* Virtual 0.5–3 MiB: only the present parts map (blocks 0 and 2). */
        extent_list_add(&virt, MiB / 2, 5 * MiB / 2);
        assert_int_equal(vhdx_map_virtual_ranges(v, &virt, &mapped), 0);
        assert_int_equal(extent_list_total(&mapped), MiB / 2 + MiB);
        assert_int_equal(mapped.items[0].offset, vhdx_block_file_offset(v, 0) + MiB / 2);

        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
        extent_list_done(&virt);
        extent_list_done(&mapped);
        vhdx_free(v);
}

static void poke(const char *path, uint64_t offset, const void *bytes, size_t n) {
        int fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, bytes, n, (off_t) offset), (ssize_t) n);
        close(fd);
}

static void poke_le32(const char *path, uint64_t offset, uint32_t v) {
        uint8_t b[4] = { v, v >> 8, v >> 16, v >> 24 };
        poke(path, offset, b, 4);
}

static void poke_le64(const char *path, uint64_t offset, uint64_t v) {
        uint8_t b[8];
        for (int i = 0; i < 8; i++)
                b[i] = (uint8_t) (v >> (8 * i));
        poke(path, offset, b, 8);
}

/* Recomputes a region table's checksum so only the intended defect remains. */
static void fix_region_table_crc(const char *path, uint64_t offset) {
        uint8_t *t = malloc(64 * 1024);
        int fd = open(path, O_RDWR);
        assert_int_equal(pread(fd, t, 64 * 1024, (off_t) offset), 64 * 1024);
        memset(t + 4, 0, 4);
        uint32_t c = crc32c(t, 64 * 1024);
        close(fd);
        poke_le32(path, offset + 4, c);
        free(t);
}

typedef void (*Mutation)(const char *path, const Vhdx *v);

static void expect_refused(void **state, Mutation m, const char *needle) {
        char path[256], *err = NULL;
        Vhdx *v = NULL;
        int r;

        make_qemu_image(*state, path, sizeof path);
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        m(path, v);
        vhdx_free(v);
        v = NULL;
        r = open_vhdx(path, &v, &err);
        assert_true(r == -EBADMSG || r == -EOPNOTSUPP);
        assert_null(v);
        assert_non_null(err);
        if (!strstr(err, needle))
                fail_msg("error \"%s\" does not name \"%s\"", err, needle);
        free(err);
}

static uint64_t bat_entry_offset(const Vhdx *v, uint64_t block) {
        return v->bat_offset + 8 * vhdx_bat_index(v, block);
}

static void m_header1_crc(const char *path, const Vhdx *v) { poke(path, 64 * 1024 + 100, "x", 1); }
static void m_both_headers_crc(const char *path, const Vhdx *v) {
        poke(path, 64 * 1024 + 100, "x", 1);
        poke(path, 128 * 1024 + 100, "x", 1);
}
static void m_overlapping_blocks(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 2), (vhdx_block_file_offset(v, 0) / MiB) << 20 | 6);
}
static void m_block_in_header_area(const char *path, const Vhdx *v) { poke_le64(path, bat_entry_offset(v, 2), 6); }
static void m_block_in_log(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 2), (v->headers[v->current].log_offset / MiB) << 20 | 6);
}
static void m_block_in_metadata(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 2), (v->metadata_offset / MiB) << 20 | 6);
}
static void m_block_in_bat(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 2), (v->bat_offset / MiB) << 20 | 6);
}
static void m_block_past_eof(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 2), ((v->file_size / MiB) + 10) << 20 | 6);
}
static void m_bat_reserved_bits(const char *path, const Vhdx *v) {
        poke_le64(path, bat_entry_offset(v, 0), vhdx_bat_entry(v, vhdx_bat_index(v, 0)) | (1 << 5));
}
/* More present blocks than the file has MiB: some must overlap. */
static void m_too_many_present(const char *path, const Vhdx *v) {
        uint64_t n = v->file_size / MiB + 1;

        assert_true(n <= v->data_blocks);
        for (uint64_t b = 0; b < n; b++)
                poke_le64(path, bat_entry_offset(v, b), (v->file_size / MiB - 1) << 20 | 6);
}
static void m_bad_block_size(const char *path, const Vhdx *v) {
        for (size_t i = 0; i < v->n_items; i++)
                if (strcmp(v->items[i].name, "File Parameters") == 0)
                        poke_le32(path, v->metadata_offset + v->items[i].offset, 3 * MiB);
}
static void m_unknown_required_metadata(const char *path, const Vhdx *v) {
        uint8_t entry[32] = { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
        entry[24] = 4;  /* IsRequired, empty item (offset and length 0) */
        poke(path, v->metadata_offset + 32 + 32 * v->n_items, entry, sizeof entry);
        poke_le32(path, v->metadata_offset + 10, (uint32_t) v->n_items + 1);   /* EntryCount is 16 bits: low half */
}
static void m_unknown_required_region(const char *path, const Vhdx *v) {
        uint8_t entry[32] = { 0xca, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };
        uint64_t table = 192 * 1024;
        poke(path, table + 16 + 32 * v->n_regions, entry, sizeof entry);
        poke_le64(path, table + 16 + 32 * v->n_regions + 16, (v->file_size / MiB - 1) * MiB);
        poke_le32(path, table + 16 + 32 * v->n_regions + 24, MiB);
        poke_le32(path, table + 16 + 32 * v->n_regions + 28, 1);
        poke_le32(path, table + 8, (uint32_t) v->n_regions + 1);
        fix_region_table_crc(path, table);
        poke(path, 256 * 1024, "xxxx", 4);   /* and no intact second copy */
}
static void m_both_region_tables(const char *path, const Vhdx *v) {
        poke(path, 192 * 1024 + 200, "x", 1);
        poke(path, 256 * 1024 + 200, "x", 1);
}

static void test_refuse_header1_crc(void **s) { expect_refused(s, m_header1_crc, "header 1: Checksum at offset 0x10004"); }
static void test_refuse_both_headers(void **s) { expect_refused(s, m_both_headers_crc, "no valid header"); }
static void test_refuse_overlap(void **s) { expect_refused(s, m_overlapping_blocks, "overlaps BAT entry"); }
static void test_refuse_too_many_present(void **s) {
        expect_refused(s, m_too_many_present, "more present blocks than a file of");
}
static void test_refuse_header_area(void **s) { expect_refused(s, m_block_in_header_area, "inside the header area"); }
static void test_refuse_in_log(void **s) { expect_refused(s, m_block_in_log, "overlaps the log"); }
static void test_refuse_in_metadata(void **s) { expect_refused(s, m_block_in_metadata, "the metadata region"); }
static void test_refuse_in_bat(void **s) { expect_refused(s, m_block_in_bat, "the BAT region"); }
static void test_refuse_past_eof(void **s) { expect_refused(s, m_block_past_eof, "past the end of the file"); }
static void test_refuse_reserved(void **s) { expect_refused(s, m_bat_reserved_bits, "reserved bits"); }
static void test_refuse_block_size(void **s) { expect_refused(s, m_bad_block_size, "BlockSize"); }
static void test_refuse_unknown_metadata(void **s) { expect_refused(s, m_unknown_required_metadata, "IsRequired"); }
static void test_refuse_unknown_region(void **s) { expect_refused(s, m_unknown_required_region, "marked Required"); }
static void test_refuse_both_region_tables(void **s) { expect_refused(s, m_both_region_tables, "no valid region table"); }

static void test_region_table_fallback(void **state) {
        char path[256], *err = NULL;
        Vhdx *v = NULL;

        make_qemu_image(*state, path, sizeof path);
        poke(path, 192 * 1024 + 300, "x", 1);
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        assert_int_equal(v->region_table_used, 1);
        assert_false(v->region_table_valid[0]);
        vhdx_free(v);
}

static void test_renew_write_guids(void **state) {
        Fixture *f = *state;
        char path[256], cmd[600], *err = NULL;
        Vhdx *v = NULL, *w = NULL;
        Guid old_data;
        uint64_t seq;
        int fd;

        make_qemu_image(f, path, sizeof path);
        assert_int_equal(open_vhdx(path, &v, &err), 0);
        old_data = v->headers[v->current].data_write_guid;
        seq = v->headers[v->current].sequence;
        fd = open(path, O_RDWR);
        assert_int_equal(vhdx_renew_write_guids(v, fd), 0);
        close(fd);

        assert_int_equal(open_vhdx(path, &w, &err), 0);
        assert_true(w->headers[0].valid && w->headers[1].valid);
        assert_int_equal(w->headers[w->current].sequence, seq + 2);
        assert_int_equal(w->headers[1 - w->current].sequence, seq + 1);
        assert_false(guid_equal(&w->headers[w->current].data_write_guid, &old_data));
        assert_true(guid_equal(&w->headers[0].data_write_guid, &w->headers[1].data_write_guid));
        snprintf(cmd, sizeof cmd, "qemu-img check -q -f vhdx '%s' && qemu-io -f vhdx -c 'read -q -P 0x11 0 1M' '%s' >/dev/null",
                 path, path);
        assert_int_equal(run(cmd), 0);
        vhdx_free(v);
        vhdx_free(w);
}

/* A source that remembers its largest read. */
typedef struct CountingSource {
        int fd;
        size_t max_read;
} CountingSource;

static int counting_read(void *userdata, void *buf, size_t len, uint64_t offset) {
        CountingSource *c = userdata;

        c->max_read = len > c->max_read ? len : c->max_read;
        return fd_read(&c->fd, buf, len, offset);
}

/* Punches the largest region (the BAT of a big image): all entries NOT_PRESENT. */
static void punch_largest_region(const char *path) {
        uint8_t table[16 + 2 * 32];
        uint64_t offset = 0, length = 0;
        int fd = open(path, O_RDWR);

        assert_true(fd >= 0);
        assert_int_equal(pread(fd, table, sizeof table, 192 * 1024), (ssize_t) sizeof table);
        for (unsigned i = 0; i < 2; i++) {
                uint64_t o = 0;
                uint32_t l = 0;

                for (unsigned k = 0; k < 8; k++)
                        o |= (uint64_t) table[16 + 32 * i + 16 + k] << (8 * k);
                for (unsigned k = 0; k < 4; k++)
                        l |= (uint32_t) table[16 + 32 * i + 24 + k] << (8 * k);
                if (l > length) {
                        offset = o;
                        length = l;
                }
        }
        assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) length), 0);
        close(fd);
}

static long peak_rss_kib(void) {
        struct rusage ru;

        assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
        return ru.ru_maxrss;
}

/* A sparse file of ~520 MB claiming 64 TiB in 1 MiB blocks: 512 MiB of BAT.
 * Every entry is read and checked, in pieces, and the memory stays small
 * (the probe of an image that appears in a watched folder reads it). */
static void test_huge_bat_streamed(void **state) {
        Fixture *f = *state;
        char path[256], cmd[512], *err = NULL;
        CountingSource c = {};
        struct stat st;
        Vhdx *v = NULL;
        long before;

        snprintf(path, sizeof path, "%s/huge.vhdx", f->dir);
        snprintf(cmd, sizeof cmd, "qemu-img create -q -f vhdx -o block_size=1M,subformat=dynamic '%s' 64T", path);
        assert_int_equal(run(cmd), 0);
        punch_largest_region(path);

        c.fd = open(path, O_RDONLY);
        assert_true(c.fd >= 0);
        assert_int_equal(fstat(c.fd, &st), 0);
        VhdxSource src = { (uint64_t) st.st_size, counting_read, &c };
        before = peak_rss_kib();
        assert_int_equal(vhdx_open(&src, &v, &err), 0);
        close(c.fd);
        assert_int_equal(v->virtual_size, UINT64_C(64) << 40);
        assert_int_equal(v->bat_entries, 67108864 + 16383);
        assert_int_equal(v->payload_state_count[VHDX_PAYLOAD_NOT_PRESENT], 67108864);
        assert_int_equal(vhdx_block_state(v, 12345678), VHDX_PAYLOAD_NOT_PRESENT);
        if (c.max_read > MiB)
                fail_msg("the BAT was read in one piece of %zu bytes", c.max_read);
        if (peak_rss_kib() - before > 64 * 1024)
                fail_msg("opening took %ld KiB more memory at its peak", peak_rss_kib() - before);
        vhdx_free(v);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_hyperv_dynamic_1g, setup, teardown),
                cmocka_unit_test_setup_teardown(test_qemu_dirty_log, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disk2vhd, setup, teardown),
                cmocka_unit_test_setup_teardown(test_qemu_made_layout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_region_table_fallback, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_header1_crc, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_both_headers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_overlap, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_too_many_present, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_header_area, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_in_log, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_in_metadata, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_in_bat, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_past_eof, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_reserved, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_block_size, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_unknown_metadata, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_unknown_region, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuse_both_region_tables, setup, teardown),
                cmocka_unit_test_setup_teardown(test_renew_write_guids, setup, teardown),
                cmocka_unit_test_setup_teardown(test_huge_bat_streamed, setup, teardown),
        };
        return prerequisite_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
