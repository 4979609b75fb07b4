/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <cmocka.h>

#include "fault.h"

static int unset(void **state) {
        unsetenv(FAULT_READ_AFTER_ENV);
        return 0;
}

static void test_off_without_the_variable(void **state) {
        assert_int_equal(fault_check_read(0, 4096), 0);
        assert_int_equal(fault_check_read(UINT64_C(1) << 40, 8 << 20), 0);
}

static void test_reads_reaching_past_the_limit_fail(void **state) {
        setenv(FAULT_READ_AFTER_ENV, "1048576", 1);
        assert_int_equal(fault_check_read(0, 4096), 0);
        assert_int_equal(fault_check_read(1048576 - 4096, 4096), 0);     /* ends exactly at the limit */
        assert_int_equal(fault_check_read(1048576 - 4096, 4097), -EIO);
        assert_int_equal(fault_check_read(1048576, 1), -EIO);
        assert_int_equal(fault_check_read(UINT64_C(1) << 40, 4096), -EIO);
}

static void test_zero_fails_every_read(void **state) {
        setenv(FAULT_READ_AFTER_ENV, "0", 1);
        assert_int_equal(fault_check_read(0, 1), -EIO);
        assert_int_equal(fault_check_read(0, 0), 0);                    /* nothing read, nothing fails */
}

static void test_malformed_values_leave_it_off(void **state) {
        const char *bad[] = { "", "-1", " 5", "5k", "0x10", "99999999999999999999999" };

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                setenv(FAULT_READ_AFTER_ENV, bad[i], 1);
                assert_int_equal(fault_check_read(4096, 4096), 0);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_off_without_the_variable, unset, unset),
                cmocka_unit_test_setup_teardown(test_reads_reaching_past_the_limit_fail, unset, unset),
                cmocka_unit_test_setup_teardown(test_zero_fails_every_read, unset, unset),
                cmocka_unit_test_setup_teardown(test_malformed_values_leave_it_off, unset, unset),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
