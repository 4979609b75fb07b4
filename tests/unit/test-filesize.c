/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "filesize.h"
#include "scratch-dir.h"

typedef struct Result {
        FileSize *sizes;
        size_t n;
        int calls;
        sd_event *event;
} Result;

static void on_done(FileSizeQuery *q, const FileSize *sizes, size_t n, void *userdata) {
        Result *res = userdata;

        res->calls++;
        res->n = n;
        res->sizes = n ? malloc(n * sizeof(FileSize)) : NULL;
        for (size_t i = 0; i < n; i++)
                res->sizes[i] = sizes[i];
        sd_event_exit(res->event, 0);
}

static void run_query(char **paths, size_t n, Result *res) {
        FileSizeQuery *q = NULL;

        assert_int_equal(sd_event_new(&res->event), 0);
        assert_int_equal(filesize_query_start(res->event, paths, n, on_done, res, &q), 0);
        assert_int_equal(sd_event_loop(res->event), 0);
        assert_int_equal(res->calls, 1);
        filesize_query_free(q);
        sd_event_unref(res->event);
}

/* Each file gets its own size, allocated bytes and error, in the order
 * asked, on either side of the split into two threads. */
static void check_sizes(const char *dir, size_t n) {
        char **paths = calloc(n + 1, sizeof(char *));
        Result res = {};

        for (size_t i = 0; i < n; i++) {
                int fd;

                assert_true(asprintf(&paths[i], "%s/f%zu", dir, i) > 0);
                if (i % 7 == 3)
                        continue;       /* never made: its stat fails */
                fd = open(paths[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
                assert_true(fd >= 0);
                assert_int_equal(ftruncate(fd, (off_t) (i * 4096 + 1)), 0);
                if (i % 2)      /* some allocated, some sparse */
                        assert_int_equal(pwrite(fd, "x", 1, 0), 1);
                close(fd);
        }
        run_query(paths, n, &res);
        assert_int_equal(res.n, n);
        for (size_t i = 0; i < n; i++) {
                struct stat st;

                if (i % 7 == 3) {
                        assert_int_equal(res.sizes[i].error, -ENOENT);
                        continue;
                }
                assert_int_equal(stat(paths[i], &st), 0);
                assert_int_equal(res.sizes[i].error, 0);
                assert_int_equal(res.sizes[i].size, (uint64_t) st.st_size);
                assert_int_equal(res.sizes[i].allocated, (uint64_t) st.st_blocks * 512);
                assert_true(i % 2 ? res.sizes[i].allocated > 0 : res.sizes[i].allocated == 0);
                unlink(paths[i]);
        }
        for (size_t i = 0; i < n; i++)
                free(paths[i]);
        free(paths);
        free(res.sizes);
}

static void test_one_thread(void **state) {
        check_sizes(*state, 5);
}

static void test_two_threads(void **state) {
        check_sizes(*state, 3001);
}

/* No files: the callback still comes, once, from the loop. */
static void test_empty(void **state) {
        char *paths[] = { NULL };
        Result res = {};

        run_query(paths, 0, &res);
        assert_int_equal(res.n, 0);
}

/* Freed before the loop ever ran: the threads are waited for, no callback. */
static void test_free_before_done(void **state) {
        char *paths[] = { "/", "/nonexistent", NULL };
        FileSizeQuery *q = NULL;
        sd_event *e = NULL;
        Result res = {};

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(filesize_query_start(e, paths, 2, on_done, &res, &q), 0);
        filesize_query_free(q);
        assert_int_equal(sd_event_run(e, 100 * 1000), 0);
        assert_int_equal(res.calls, 0);
        sd_event_unref(e);
}

static int setup(void **state) {
        return scratch_dir_setup(state, "test-filesize");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_one_thread),
                cmocka_unit_test(test_two_threads),
                cmocka_unit_test(test_empty),
                cmocka_unit_test(test_free_before_done),
        };

        return cmocka_run_group_tests(tests, setup, scratch_dir_teardown);
}
