/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fingerprint.h"
#include "state.h"

static Fingerprint sample(void) {
        Fingerprint f = { .pass_time = UINT64_C(1796215314014144), .dev = 2049, .ino = 123456789, .size = 41943040,
                          .allocated = 6483968, .mtime_nsec = INT64_C(1796215310123456789),
                          .ctime_nsec = INT64_C(1796215314000000001), .vhdx = true, .sequence = { 7, 8 },
                          .settings = fingerprint_settings(DISCARD_FREE, 65536, 0, false, false) };

        for (int i = 0; i < FINGERPRINT_GUID_SIZE; i++) {
                f.file_write_guid[0][i] = (uint8_t) i;
                f.file_write_guid[1][i] = (uint8_t) (0xf0 + i);
        }
        return f;
}

static void test_text_round_trip(void **state) {
        Fingerprint f = sample(), g = {};
        char buf[FINGERPRINT_TEXT_MAX];

        assert_int_equal(fingerprint_format(&f, buf), 0);
        assert_int_equal(fingerprint_parse(buf, strlen(buf), &g), 0);
        assert_true(fingerprint_equal(&f, &g));
        assert_int_equal(g.pass_time, f.pass_time);

        /* Only the exact text: another version, signs, spaces, short fields. */
        const char *bad[] = { "", "v2 1 2 3 4 5 6 7 raw 0 0 00000000000000000000000000000000 "
                                  "00000000000000000000000000000000 0000000000000000",
                              "v1 +1 2 3 4 5 6 7 raw 0 0 00000000000000000000000000000000 "
                              "00000000000000000000000000000000 0000000000000000",
                              "v1 1 2 3 4 5 6 7 ntfs 0 0 00000000000000000000000000000000 "
                              "00000000000000000000000000000000 0000000000000000",
                              "v1 1 2 3 4 5 6 7 raw 0 0 0000 00000000000000000000000000000000 0000000000000000",
                              "v1 1 2 3 4 5 6 7 raw 0 0 00000000000000000000000000000000 "
                              "00000000000000000000000000000000 0000000000000000 " };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_int_equal(fingerprint_parse(bad[i], strlen(bad[i]), &g), -EBADMSG);
}

/* In the state file: kept across a save and load; an old file without it, or
 * a line this version cannot read, only means "changed". */
static void test_state_file(void **state) {
        DiskRecord r, back;
        char *text = NULL, *old, *p;

        disk_record_init(&r);
        r.last_pass = 5;
        r.have_fingerprint = true;
        r.fingerprint = sample();
        assert_int_equal(disk_record_format(&r, "a", "/srv/a.vhdx", &text), 0);
        assert_non_null(strstr(text, "\nfingerprint=v1 "));
        assert_int_equal(disk_record_parse(text, &back), 0);
        assert_true(back.have_fingerprint);
        assert_true(fingerprint_equal(&back.fingerprint, &r.fingerprint));
        disk_record_done(&back);

        /* Without the line (an older version wrote it). */
        old = strdup(text);
        p = strstr(old, "fingerprint=");
        *p = 0;
        assert_int_equal(disk_record_parse(old, &back), 0);
        assert_false(back.have_fingerprint);
        assert_int_equal(back.last_pass, 5);
        disk_record_done(&back);
        free(old);

        /* Damaged, or a later version's: the record stays, the fingerprint goes. */
        p = strstr(text, "fingerprint=v1");
        p[strlen("fingerprint=")] = 'w';
        assert_int_equal(disk_record_parse(text, &back), 0);
        assert_false(back.have_fingerprint);
        assert_int_equal(back.last_pass, 5);
        disk_record_done(&back);
        free(text);
        disk_record_done(&r);
}

/* What a writer cannot avoid: a write changes ctime even when it puts the
 * same bytes back and restores the modification time. */
static void test_writer_changes_ctime(void **state) {
        char path[] = "/tmp/test-fingerprint-XXXXXX";
        int fd = mkstemp(path);
        Fingerprint a = {}, b = {};
        struct stat st;
        struct timespec times[2];

        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "data", 4, 0), 4);
        assert_int_equal(fingerprint_take(fd, false, &a), 0);
        assert_int_equal(fingerprint_take(fd, false, &b), 0);
        assert_true(fingerprint_equal(&a, &b));

        assert_int_equal(fstat(fd, &st), 0);
        assert_true(fingerprint_stat_matches(&a, &st));
        usleep(20 * 1000);      /* past the file system's timestamp granularity */
        assert_int_equal(pwrite(fd, "data", 4, 0), 4);
        times[0] = st.st_atim;
        times[1] = st.st_mtim;
        assert_int_equal(futimens(fd, times), 0);
        assert_int_equal(fingerprint_take(fd, false, &b), 0);
        assert_int_equal(b.mtime_nsec, a.mtime_nsec);
        assert_int_equal(b.size, a.size);
        assert_true(b.ctime_nsec != a.ctime_nsec);
        assert_false(fingerprint_equal(&a, &b));
        assert_int_equal(fstat(fd, &st), 0);
        assert_false(fingerprint_stat_matches(&a, &st));        /* the put-back mtime does not hide it */
        close(fd);
        unlink(path);
}

/* For a VHDX, the header starts: sequence number and FileWriteGuid. */
static void test_vhdx_headers(void **state) {
        char path[] = "/tmp/test-fingerprint-XXXXXX";
        int fd = mkstemp(path);
        uint8_t h[32] = { 'h', 'e', 'a', 'd' };
        Fingerprint a = {}, b = {};

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 256 * 1024), 0);
        h[8] = 3;
        memset(h + 16, 0xab, 16);
        assert_int_equal(pwrite(fd, h, sizeof h, 64 * 1024), (ssize_t) sizeof h);
        h[8] = 4;
        assert_int_equal(pwrite(fd, h, sizeof h, 128 * 1024), (ssize_t) sizeof h);
        assert_int_equal(fingerprint_take(fd, true, &a), 0);
        assert_int_equal(a.sequence[0], 3);
        assert_int_equal(a.sequence[1], 4);
        assert_int_equal(a.file_write_guid[1][0], 0xab);
        /* The same stat, another FileWriteGuid: not equal. */
        b = a;
        b.file_write_guid[0][5] ^= 1;
        assert_false(fingerprint_equal(&a, &b));
        b = a;
        b.settings = fingerprint_settings(DISCARD_SAFE, 65536, 0, false, false);
        assert_false(fingerprint_equal(&a, &b));
        close(fd);
        unlink(path);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_text_round_trip),
                cmocka_unit_test(test_state_file),
                cmocka_unit_test(test_writer_changes_ctime),
                cmocka_unit_test(test_vhdx_headers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
