/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"

/* The one rule for JSON, the bus and the log: each byte that is not part of
 * well-formed UTF-8 becomes U+FFFD, well-formed text stays as it is. */
static void test_utf8_sanitize(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "" },
                { "plain/ascii.vhdx", "plain/ascii.vhdx" },
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
                { "bad\xff\xfename", "bad\xef\xbf\xbd\xef\xbf\xbdname" },
                { "latin1-\xe9t\xe9", "latin1-\xef\xbf\xbdt\xef\xbf\xbd" },
                /* overlong, surrogate, past U+10FFFF, cut short at the end */
                { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },
                { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
                { "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
                { "end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd" },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *s = utf8_sanitize(cases[i].in);

                assert_non_null(s);
                assert_string_equal(s, cases[i].out);
                assert_true(utf8_is_valid(s));
                assert_int_equal(utf8_is_valid(cases[i].in), strcmp(cases[i].in, cases[i].out) == 0);
                free(s);
        }
        {
                char *s = utf8_sanitize(NULL);

                assert_string_equal(s, "");
                free(s);
        }
}

/* JSON output says the same as utf8_sanitize(): the history's name search
 * and the bus agree on a name. */
static void test_json_string_matches_sanitize(void **state) {
        char *buf = NULL, *clean = utf8_sanitize("w/bad\xff\xfe.vhdx");
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        json_write_string(f, "w/bad\xff\xfe.vhdx");
        fclose(f);
        assert_int_equal(buf[0], '"');
        assert_int_equal(strlen(buf), strlen(clean) + 2);
        assert_memory_equal(buf + 1, clean, strlen(clean));
        free(buf);
        free(clean);
}

/* Escapes between runs of plain text, multi-byte UTF-8 kept as it is, a
 * control byte as \u, DEL plain: each at the start, middle and end. */
static void test_json_string_escapes(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "\"\"" },
                { "plain/path.vhdx", "\"plain/path.vhdx\"" },
                { "\"q\"", "\"\\\"q\\\"\"" },
                { "a\\b\nc\rd\te", "\"a\\\\b\\nc\\rd\\te\"" },
                { "\x01x\x1f", "\"\\u0001x\\u001f\"" },
                { "caf\xc3\xa9 \xe2\x82\xac\x7f", "\"caf\xc3\xa9 \xe2\x82\xac\x7f\"" },
                { "\xc3(x\xff", "\"\xef\xbf\xbd(x\xef\xbf\xbd\"" },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *buf = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&buf, &size);

                json_write_string(f, cases[i].in);
                fclose(f);
                assert_string_equal(buf, cases[i].out);
                free(buf);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_utf8_sanitize),
                cmocka_unit_test(test_json_string_matches_sanitize),
                cmocka_unit_test(test_json_string_escapes),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
