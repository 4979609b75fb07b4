/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "timespan.h"

#define SEC UINT64_C(1000000)

/* One spelling for the daemon's status and vhdreclaimctl: minutes are "m"
 * (the daemon used to print "min"). */
static void test_largest_whole_unit(void **state) {
        char buf[TIMESPAN_UNIT_MAX];

        assert_string_equal(format_timespan_unit(buf, 0), "0s");
        assert_string_equal(format_timespan_unit(buf, SEC - 1), "0s");
        assert_string_equal(format_timespan_unit(buf, 59 * SEC + SEC / 2), "59s");
        assert_string_equal(format_timespan_unit(buf, 60 * SEC), "1m");
        assert_string_equal(format_timespan_unit(buf, 12 * 60 * SEC + 59 * SEC), "12m");
        assert_string_equal(format_timespan_unit(buf, 3599 * SEC), "59m");
        assert_string_equal(format_timespan_unit(buf, 3600 * SEC), "1h");
        assert_string_equal(format_timespan_unit(buf, 86399 * SEC), "23h");
        assert_string_equal(format_timespan_unit(buf, 86400 * SEC), "1d");
        assert_string_equal(format_timespan_unit(buf, 400 * 86400 * SEC), "400d");
        assert_string_equal(format_timespan_unit(buf, UINT64_MAX), "213503982d");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_largest_whole_unit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
