/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "format.h"
#include "macro.h"

#define KiB_ UINT64_C(1024)
#define MiB_ (KiB_ * 1024)
#define GiB_ (MiB_ * 1024)
#define TiB_ (GiB_ * 1024)
#define SEC UINT64_C(1000000)

static void check_size(uint64_t bytes, const char *expected) {
        char buf[FORMAT_HUMAN_MAX];

        format_size_human(buf, bytes);
        if (strcmp(buf, expected) != 0)
                fail_msg("%ju bytes: got \"%s\", df -h prints \"%s\"", (uintmax_t) bytes, buf, expected);
}

static void test_size_small(void **state) {
        check_size(0, "0");
        check_size(1, "1");
        check_size(512, "512");
        check_size(1023, "1023");
}

/* One decimal below 10, rounded up, as df -h does. */
static void test_size_one_decimal(void **state) {
        check_size(1024, "1.0K");
        check_size(1025, "1.1K");
        check_size(1536, "1.5K");
        check_size(1537, "1.6K");
        check_size(4096, "4.0K");               /* a file system with one block in use */
        check_size(3 * GiB_ / 2, "1.5G");
        check_size(MiB_, "1.0M");
        check_size(9 * MiB_ + 1, "9.1M");
}

/* No decimal from 10 on, rounded up. */
static void test_size_whole(void **state) {
        check_size(10 * KiB_, "10K");
        check_size(10 * KiB_ + 1, "11K");
        check_size(30 * MiB_, "30M");
        check_size(100 * GiB_ - 1, "100G");
        check_size(1023 * KiB_, "1023K");
}

/* Rounding up carries into the next digit or unit. */
static void test_size_carry(void **state) {
        check_size(10 * KiB_ - 1, "10K");       /* 9.99K -> 10.0 -> "10K" */
        check_size(MiB_ - 1, "1.0M");           /* 1023.99K -> 1024K -> "1.0M" */
        check_size(1023 * KiB_ + 1, "1.0M");
        check_size(GiB_ - 1, "1.0G");
        check_size(TiB_, "1.0T");
        check_size(UINT64_C(1) << 60, "1.0E");
        check_size(UINT64_MAX, "16E");
}

/* Sizes from df's own tables: 1K blocks as df -k printed them, and what
 * df -h printed for the same file systems. */
static void test_size_df_samples(void **state) {
        check_size(UINT64_C(20511312) * KiB_, "20G");   /* 19.56G */
        check_size(UINT64_C(61255492) * KiB_, "59G");   /* 58.42G */
        check_size(UINT64_C(8108352) * KiB_, "7.8G");   /* 7.73G, a tmpfs */
        check_size(UINT64_C(1621868) * KiB_, "1.6G");   /* 1.547G */
        check_size(UINT64_C(5120) * KiB_, "5.0M");      /* /run/lock */
        check_size(UINT64_C(507904) * KiB_, "496M");
}

static void test_rate(void **state) {
        char buf[FORMAT_RATE_MAX];

        assert_string_equal(format_rate(buf, 0), "0/s");
        assert_string_equal(format_rate(buf, -5), "0/s");
        assert_string_equal(format_rate(buf, NAN), "0/s");
        assert_string_equal(format_rate(buf, 1.5 * 1024 * 1024), "1.5M/s");
        assert_string_equal(format_rate(buf, 200.0 * 1024 * 1024), "200M/s");
        assert_string_equal(format_rate(buf, INFINITY), "16E/s");
}

static void test_relative(void **state) {
        const uint64_t now = UINT64_C(1763700000) * SEC;
        char buf[FORMAT_RELATIVE_MAX];

        assert_string_equal(format_relative(buf, 0, now), "-");
        assert_string_equal(format_relative(buf, now, now), "now");
        assert_string_equal(format_relative(buf, now + SEC / 2, now), "now");
        assert_string_equal(format_relative(buf, now + 3 * 3600 * SEC, now), "in 3h");
        assert_string_equal(format_relative(buf, now + (3 * 3600 + 59 * 60) * SEC, now), "in 3h");
        assert_string_equal(format_relative(buf, now - 2 * 86400 * SEC, now), "2d ago");
        assert_string_equal(format_relative(buf, now - 45 * SEC, now), "45s ago");
        assert_string_equal(format_relative(buf, now - 90 * SEC, now), "1m ago");
        assert_string_equal(format_relative(buf, now + 59 * 60 * SEC, now), "in 59m");
        assert_string_equal(format_relative(buf, now - 400 * 86400 * SEC, now), "400d ago");
}

static void test_span(void **state) {
        char buf[FORMAT_SPAN_MAX];

        assert_string_equal(format_span(buf, 0), "0.0s");
        assert_string_equal(format_span(buf, 400000), "0.4s");
        assert_string_equal(format_span(buf, 9999999), "9.9s");
        assert_string_equal(format_span(buf, 45 * SEC), "45s");
        assert_string_equal(format_span(buf, 125 * SEC), "2m05s");
        assert_string_equal(format_span(buf, 3720 * SEC), "1h02m");
        assert_string_equal(format_span(buf, (3 * 86400 + 4 * 3600) * SEC), "3d04h");
}

static void test_timestamp(void **state) {
        char buf[FORMAT_TIMESTAMP_MAX];

        setenv("TZ", "UTC", 1);
        assert_string_equal(format_timestamp(buf, 0), "-");
        assert_string_equal(format_timestamp(buf, UINT64_C(1763710805) * SEC), "2025-11-21 07:40:05");
}

static void test_bar(void **state) {
        char buf[64];

        assert_string_equal(format_bar(buf, 12, 0, 0), "[----------]");
        assert_string_equal(format_bar(buf, 12, 5, 10), "[#####-----]");
        assert_string_equal(format_bar(buf, 12, 10, 10), "[##########]");
        assert_string_equal(format_bar(buf, 12, 20, 10), "[##########]");
        assert_string_equal(format_bar(buf, 12, UINT64_MAX / 2, UINT64_MAX), "[#####-----]");
        assert_string_equal(format_bar(buf, 2, 1, 2), "[]");
        assert_string_equal(format_bar(buf, 1, 1, 2), "");
}

static void test_results(void **state) {
        assert_string_equal(result_to_words(""), "-");
        assert_string_equal(result_to_words(NULL), "-");
        assert_string_equal(result_to_words("success"), "success");
        assert_string_equal(result_to_words("nothing-to-do"), "nothing to do");
        assert_string_equal(result_to_words("skipped-in-use"), "skipped, in use");
        assert_string_equal(result_to_words("refused-invalid"), "refused, invalid image");
        assert_string_equal(result_to_words("error"), "failed");
        assert_string_equal(result_to_words("new-result"), "new-result");

        assert_true(result_is_ok("success"));
        assert_true(result_is_ok("nothing-to-do"));
        assert_true(result_is_ok("skipped-threshold"));
        assert_true(result_is_ok("skipped-in-use"));
        assert_false(result_is_ok("refused-invalid"));
        assert_false(result_is_ok("error"));
        assert_false(result_is_ok("cancelled"));
        assert_false(result_is_ok(""));
        assert_false(result_is_ok(NULL));
}

static void test_state(void **state) {
        char buf[FORMAT_STATE_MAX];

        assert_string_equal(format_state(buf, "idle", true, 0, 0), "idle");
        assert_string_equal(format_state(buf, "idle", false, 0, 0), "watch-only");
        assert_string_equal(format_state(buf, "reclaiming", true, 42, 100), "reclaiming 42%");
        assert_string_equal(format_state(buf, "reclaiming", true, 0, 0), "reclaiming");
        assert_string_equal(format_state(buf, "missing", true, 0, 0), "missing");
        assert_string_equal(format_state(buf, "", true, 0, 0), "-");
}

/* Runs write(f, s) into memory and returns what it wrote (to free). */
static char *capture(void (*write)(FILE *f, const char *s), const char *s) {
        char *out = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&out, &size);

        assert_non_null(f);
        write(f, s);
        assert_int_equal(fclose(f), 0);
        return out;
}

static void test_prometheus_escaping(void **state) {
        char *s;

        s = capture(prometheus_write_label_value, "plain/path.vhdx");
        assert_string_equal(s, "\"plain/path.vhdx\"");
        free(s);

        s = capture(prometheus_write_label_value, "a\"b\\c\nd");
        assert_string_equal(s, "\"a\\\"b\\\\c\\nd\"");
        free(s);

        s = capture(prometheus_write_label_value, "");
        assert_string_equal(s, "\"\"");
        free(s);

        /* HELP text escapes backslash and line feed, not quotes */
        s = capture(prometheus_write_help, "say \"x\\y\"\nnext");
        assert_string_equal(s, "say \"x\\\\y\"\\nnext");
        free(s);
}

static void test_json_writer(void **state) {
        char *out = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&out, &size);
        JsonOut j = { .f = f };

        json_begin(&j, '[');
        json_begin(&j, '{');
        json_key(&j, "name"); json_string(&j, "a\"b\n");
        json_key(&j, "n"); json_u64(&j, UINT64_MAX);
        json_key(&j, "ok"); json_bool(&j, true);
        json_key(&j, "rate"); json_double(&j, 1.5);
        json_key(&j, "bad"); json_double(&j, NAN);
        json_key(&j, "list");
        json_begin(&j, '[');
        json_u64(&j, 1);
        json_u64(&j, 2);
        json_end(&j, ']');
        json_end(&j, '}');
        json_begin(&j, '{');
        json_end(&j, '}');
        json_end(&j, ']');
        assert_int_equal(fclose(f), 0);

        assert_string_equal(out, "[{\"name\":\"a\\\"b\\n\",\"n\":18446744073709551615,\"ok\":true,"
                                 "\"rate\":1.5,\"bad\":null,\"list\":[1,2]},{}]");
        free(out);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_size_small),
                cmocka_unit_test(test_size_one_decimal),
                cmocka_unit_test(test_size_whole),
                cmocka_unit_test(test_size_carry),
                cmocka_unit_test(test_size_df_samples),
                cmocka_unit_test(test_rate),
                cmocka_unit_test(test_relative),
                cmocka_unit_test(test_span),
                cmocka_unit_test(test_timestamp),
                cmocka_unit_test(test_bar),
                cmocka_unit_test(test_results),
                cmocka_unit_test(test_state),
                cmocka_unit_test(test_prometheus_escaping),
                cmocka_unit_test(test_json_writer),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
