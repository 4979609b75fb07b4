/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "hashmap.h"

#define N 5000

/* Thousands of keys through several growths: each found, each removed, the
 * rest still found. */
static void test_put_get_remove_many(void **state) {
        static char keys[N][32];
        Hashmap h;

        hashmap_init(&h, false);
        assert_null(hashmap_get(&h, "absent"));
        assert_false(hashmap_remove(&h, "absent", NULL));
        for (size_t i = 0; i < N; i++) {
                snprintf(keys[i], sizeof keys[i], "/srv/images/disk%zu.vhdx", i);
                assert_int_equal(hashmap_put(&h, keys[i], keys[i]), 0);
        }
        assert_int_equal(h.n_entries, N);
        for (size_t i = 0; i < N; i++)
                assert_ptr_equal(hashmap_get(&h, keys[i]), keys[i]);
        assert_null(hashmap_get(&h, "/srv/images/disk5000.vhdx"));
        for (size_t i = 0; i < N; i += 2)
                assert_true(hashmap_remove(&h, keys[i], keys[i]));
        assert_false(hashmap_remove(&h, keys[0], keys[0]));
        assert_int_equal(h.n_entries, N / 2);
        for (size_t i = 0; i < N; i++)
                if (i % 2)
                        assert_ptr_equal(hashmap_get(&h, keys[i]), keys[i]);
                else
                        assert_null(hashmap_get(&h, keys[i]));
        hashmap_done(&h);
        assert_int_equal(h.n_entries, 0);
        assert_null(hashmap_get(&h, keys[1]));
}

/* Case: exact in a case-sensitive table, ASCII folded in the other. */
static void test_case(void **state) {
        Hashmap cs, ci;
        int a, b;

        hashmap_init(&cs, false);
        hashmap_init(&ci, true);
        assert_int_equal(hashmap_put(&cs, "Profile", &a), 0);
        assert_int_equal(hashmap_put(&ci, "Profile", &a), 0);
        assert_ptr_equal(hashmap_get(&cs, "Profile"), &a);
        assert_null(hashmap_get(&cs, "profile"));
        assert_ptr_equal(hashmap_get(&ci, "pROFILE"), &a);
        assert_null(hashmap_get(&ci, "Profiles"));
        /* Removal needs the value too, under any spelling of the key. */
        assert_false(hashmap_remove(&ci, "profile", &b));
        assert_true(hashmap_remove(&ci, "PROFILE", &a));
        assert_null(hashmap_get(&ci, "Profile"));
        hashmap_done(&cs);
        hashmap_done(&ci);
}

/* Several values of one key come back in the order they were put, also
 * after the table grew and after one in the middle was removed. */
static void test_duplicates_in_order(void **state) {
        static char fill[300][16];
        const char *k1 = "same", *k2 = "SAME";
        int v[4];
        const HashmapEntry *it;
        size_t n = 0;
        Hashmap h;

        hashmap_init(&h, true);
        for (size_t i = 0; i < 4; i++)
                assert_int_equal(hashmap_put(&h, i % 2 ? k2 : k1, &v[i]), 0);
        for (size_t i = 0; i < 300; i++) {
                snprintf(fill[i], sizeof fill[i], "fill%zu", i);
                assert_int_equal(hashmap_put(&h, fill[i], fill[i]), 0);
        }
        assert_true(hashmap_remove(&h, "Same", &v[1]));
        for (int *p = hashmap_first(&h, "same", &it); p; p = hashmap_next(&it, "same")) {
                static const size_t expect[] = { 0, 2, 3 };

                assert_true(n < 3);
                assert_ptr_equal(p, &v[expect[n]]);
                n++;
        }
        assert_int_equal(n, 3);
        assert_ptr_equal(hashmap_get(&h, "sAmE"), &v[0]);
        hashmap_done(&h);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_put_get_remove_many),
                cmocka_unit_test(test_case),
                cmocka_unit_test(test_duplicates_in_order),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
