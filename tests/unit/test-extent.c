/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>

#include "extent.h"

static void test_add_merges_contiguous(void **state) {
        ExtentList l = {};
        assert_int_equal(extent_list_add(&l, 0, 10), 0);
        assert_int_equal(extent_list_add(&l, 10, 5), 0);
        assert_int_equal(extent_list_add(&l, 20, 5), 0);
        assert_int_equal(l.n, 2);
        assert_int_equal(l.items[0].length, 15);
        assert_int_equal(extent_list_total(&l), 20);
        extent_list_done(&l);
}

static void test_normalize_sorts_and_merges_overlaps(void **state) {
        ExtentList l = {};
        extent_list_add(&l, 100, 50);
        extent_list_add(&l, 0, 10);
        extent_list_add(&l, 120, 100);
        extent_list_add(&l, 5, 10);
        extent_list_normalize(&l);
        assert_int_equal(l.n, 2);
        assert_int_equal(l.items[0].offset, 0);
        assert_int_equal(l.items[0].length, 15);
        assert_int_equal(l.items[1].offset, 100);
        assert_int_equal(l.items[1].length, 120);
        extent_list_done(&l);
}

static void test_subtract_and_intersect(void **state) {
        ExtentList a = {}, b = {}, d = {}, i = {};
        extent_list_add(&a, 0, 100);
        extent_list_add(&a, 200, 100);
        extent_list_add(&b, 50, 10);
        extent_list_add(&b, 90, 150);
        assert_int_equal(extent_list_subtract(&a, &b, &d), 0);
        assert_int_equal(d.n, 3);
        assert_int_equal(d.items[0].offset, 0);
        assert_int_equal(d.items[0].length, 50);
        assert_int_equal(d.items[1].offset, 60);
        assert_int_equal(d.items[1].length, 30);
        assert_int_equal(d.items[2].offset, 240);
        assert_int_equal(d.items[2].length, 60);
        assert_int_equal(extent_list_intersect(&a, &b, &i), 0);
        assert_int_equal(extent_list_total(&i), 10 + 10 + 40);
        assert_true(extent_list_covers(&a, 210, 90));
        assert_false(extent_list_covers(&a, 90, 20));
        assert_false(extent_list_covers(&a, 300, 1));
        extent_list_done(&a);
        extent_list_done(&b);
        extent_list_done(&d);
        extent_list_done(&i);
}

static void test_add_rejects_overflow(void **state) {
        ExtentList l = {};
        assert_int_equal(extent_list_add(&l, UINT64_MAX - 1, 10), -ERANGE);
        assert_int_equal(l.n, 0);
        extent_list_done(&l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_add_merges_contiguous),
                cmocka_unit_test(test_normalize_sorts_and_merges_overlaps),
                cmocka_unit_test(test_subtract_and_intersect),
                cmocka_unit_test(test_add_rejects_overflow),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
