/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "prerequisite.h"
#include "unsparse.h"

#define MiB (1024 * 1024)

typedef struct Fixture {
        char dir[64];
} Fixture;

/* A 16 MiB tmpfs: exact accounting, and small enough to run out of. */
static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        strcpy(f->dir, "/tmp/test-unsparse-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        if (mount("tmpfs", f->dir, "tmpfs", 0, "size=16m") < 0) {
                /* Each test skips (fails under CI=true) on the NULL state. */
                fprintf(stderr, "cannot mount a tmpfs on %s: %m\n", f->dir);
                rmdir(f->dir);
                free(f);
                *state = NULL;
                return 0;
        }
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        if (!f)
                return 0;
        umount(f->dir);
        rmdir(f->dir);
        free(f);
        return 0;
}

/* 1 MiB of data every 2 MiB over size bytes; the rest holes. */
static void make_sparse(const char *path, uint64_t size) {
        uint8_t *buf = malloc(MiB);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

        assert_true(fd >= 0);
        memset(buf, 0x5a, MiB);
        for (uint64_t off = 0; off < size; off += 2 * MiB)
                assert_int_equal(pwrite(fd, buf, MiB, (off_t) off), MiB);
        assert_int_equal(ftruncate(fd, (off_t) size), 0);
        close(fd);
        free(buf);
}

static uint64_t allocated(const char *path) {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        return (uint64_t) st.st_blocks * 512;
}

static void test_fills_every_hole(void **state) {
        Fixture *f = *state;
        char path[128];

        if (!f)
                skip_missing("cannot mount a 16 MiB tmpfs (needs root)");
        snprintf(path, sizeof path, "%s/img", f->dir);
        make_sparse(path, 8 * MiB);
        assert_int_equal(allocated(path), 4 * MiB);
        assert_int_equal(unsparse_file(path, 0, NULL), 0);
        assert_int_equal(allocated(path), 8 * MiB);
}

static void test_out_of_space_rolls_back(void **state) {
        Fixture *f = *state;
        char path[128], filler[128];

        uint64_t before;
        int fd;

        if (!f)
                skip_missing("cannot mount a 16 MiB tmpfs (needs root)");

        snprintf(path, sizeof path, "%s/img", f->dir);
        snprintf(filler, sizeof filler, "%s/filler", f->dir);
        make_sparse(path, 12 * MiB);            /* 6 MiB data, 6 MiB holes */
        fd = open(filler, O_RDWR | O_CREAT, 0600);
        assert_int_equal(posix_fallocate(fd, 0, 7 * MiB), 0);  /* 3 MiB left: not enough */
        close(fd);
        before = allocated(path);

        assert_int_equal(unsparse_file(path, 0, NULL), -ENOSPC);
        assert_int_equal(allocated(path), before);
}

static void test_busy_when_open_elsewhere(void **state) {
        Fixture *f = *state;
        char path[128];

        uint64_t before;
        int fd;

        if (!f)
                skip_missing("cannot mount a 16 MiB tmpfs (needs root)");

        snprintf(path, sizeof path, "%s/img", f->dir);
        make_sparse(path, 4 * MiB);
        before = allocated(path);
        fd = open(path, O_RDONLY);
        assert_int_equal(unsparse_file(path, 0, NULL), -EBUSY);
        close(fd);
        assert_int_equal(allocated(path), before);
}

static void test_cancel_changes_nothing(void **state) {
        Fixture *f = *state;
        atomic_bool cancel = true;
        char path[128];

        uint64_t before;

        if (!f)
                skip_missing("cannot mount a 16 MiB tmpfs (needs root)");

        snprintf(path, sizeof path, "%s/img", f->dir);
        make_sparse(path, 4 * MiB);
        before = allocated(path);
        assert_int_equal(unsparse_file(path, 0, &cancel), -ECANCELED);
        assert_int_equal(allocated(path), before);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_fills_every_hole, setup, teardown),
                cmocka_unit_test_setup_teardown(test_out_of_space_rolls_back, setup, teardown),
                cmocka_unit_test_setup_teardown(test_busy_when_open_elsewhere, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_changes_nothing, setup, teardown),
        };
        return prerequisite_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
