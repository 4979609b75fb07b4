/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Missing prerequisites (root, a tmpfs, the ../shared fixtures, a tool) in
 * cmocka tests. cmocka's skip() alone makes the program exit 0, which meson
 * shows as OK: a test that did not run would look passed. With these:
 *
 *   - a test that cannot run calls skip_missing("why"): the reason is
 *     printed, and the test is skipped, or failed under CI=true (.ci/run sets
 *     it), where every prerequisite must be there;
 *   - main() ends with `return prerequisite_exit(cmocka_run_group_tests(...))`:
 *     a failure wins, else any skip makes the program exit 77, meson's SKIP;
 *   - a program that cannot run at all returns missing_prerequisite_status().
 *
 * Header-only, for tests; include it after <cmocka.h>. */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Skips in this test program (one program per translation unit). */
static unsigned prerequisite_skips __attribute__((unused));

static inline bool prerequisite_in_ci(void) {
        const char *ci = getenv("CI");
        return ci && strcmp(ci, "true") == 0;
}

static inline void prerequisite_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void prerequisite_note(const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, prerequisite_in_ci() ? "FAILED (CI=true, nothing may be missing): " : "SKIP: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

#define skip_missing(...)                                       \
        do {                                                    \
                prerequisite_note(__VA_ARGS__);                 \
                if (prerequisite_in_ci())                       \
                        fail();                                 \
                prerequisite_skips++;                           \
                skip();                                         \
        } while (0)

/* The exit status of a test program: cmocka's (the number of failed tests)
 * when anything failed, else 77 when anything was skipped. */
static inline int prerequisite_exit(int failed) {
        if (failed != 0)
                return failed;
        if (prerequisite_skips > 0) {
                fprintf(stderr, "%u test(s) skipped for missing prerequisites: exit 77 (SKIP)\n",
                        prerequisite_skips);
                return 77;
        }
        return 0;
}

/* The exit status for a program whose prerequisites are all missing: skip
 * (77), or fail under CI=true. */
static inline int missing_prerequisite_status(void) {
        return prerequisite_in_ci() ? 1 : 77;
}
