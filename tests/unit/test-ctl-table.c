/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "macro.h"
#include "table.h"

static char *print_to_string(const Table *t) {
        char *out = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&out, &size);

        assert_non_null(f);
        assert_int_equal(table_print(t, f), 0);
        assert_int_equal(fclose(f), 0);
        return out;
}

static void test_alignment(void **state) {
        static const TableColumn columns[] = {
                { "NAME", TABLE_ALIGN_LEFT },
                { "SIZE", TABLE_ALIGN_RIGHT },
                { "NEXT", TABLE_ALIGN_LEFT },
        };
        Table *t = NULL;
        char *out;

        assert_int_equal(table_new(&t, columns, ELEMENTSOF(columns)), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "ubuntu", "1.5G", "in 3h" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "a", "30M", "-" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "longer-name", "512", NULL }), 0);
        assert_int_equal(table_rows(t), 3);

        out = print_to_string(t);
        assert_string_equal(out,
                            "NAME         SIZE  NEXT\n"
                            "ubuntu       1.5G  in 3h\n"
                            "a             30M  -\n"
                            "longer-name   512  -\n");
        free(out);
        table_free(t);
}

/* Header wider than the cells; no blanks at the end of a line, also when
 * the last column is empty. */
static void test_no_trailing_blanks(void **state) {
        static const TableColumn columns[] = {
                { "A", TABLE_ALIGN_LEFT },
                { "RECLAIMABLE", TABLE_ALIGN_RIGHT },
                { "MESSAGE", TABLE_ALIGN_LEFT },
        };
        Table *t = NULL;
        char *out;

        assert_int_equal(table_new(&t, columns, ELEMENTSOF(columns)), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "x", "0", "" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "yy", "10K", "in use" }), 0);
        out = print_to_string(t);
        assert_string_equal(out,
                            "A   RECLAIMABLE  MESSAGE\n"
                            "x             0\n"
                            "yy          10K  in use\n");
        free(out);
        table_free(t);
}

/* Widths count characters, not bytes. */
static void test_utf8_width(void **state) {
        static const TableColumn columns[] = {
                { "NAME", TABLE_ALIGN_LEFT },
                { "X", TABLE_ALIGN_LEFT },
        };
        Table *t = NULL;
        char *out;

        assert_int_equal(table_new(&t, columns, ELEMENTSOF(columns)), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "d\xc3\xa9j\xc3\xa0", "1" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "abcdef", "2" }), 0);
        out = print_to_string(t);
        assert_string_equal(out,
                            "NAME    X\n"
                            "d\xc3\xa9j\xc3\xa0    1\n"
                            "abcdef  2\n");
        free(out);
        table_free(t);
}

static void test_many_rows(void **state) {
        static const TableColumn columns[] = {
                { "N", TABLE_ALIGN_RIGHT },
        };
        Table *t = NULL;
        char *out, buf[16];
        size_t lines = 0;

        assert_int_equal(table_new(&t, columns, ELEMENTSOF(columns)), 0);
        for (unsigned i = 0; i < 1000; i++) {
                snprintf(buf, sizeof buf, "%u", i);
                assert_int_equal(table_add_row(t, (const char *const[]) { buf }), 0);
        }
        out = print_to_string(t);
        for (const char *p = out; *p; p++)
                lines += *p == '\n';
        assert_int_equal(lines, 1001);
        assert_non_null(strstr(out, "  N\n  0\n  1\n"));
        assert_non_null(strstr(out, "\n999\n"));
        free(out);
        table_free(t);
}

static void test_free_null(void **state) {
        assert_null(table_free(NULL));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_alignment),
                cmocka_unit_test(test_no_trailing_blanks),
                cmocka_unit_test(test_utf8_width),
                cmocka_unit_test(test_many_rows),
                cmocka_unit_test(test_free_null),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
