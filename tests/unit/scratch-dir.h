/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* A scratch directory for a whole cmocka group: the group teardown runs even
 * after a failed test, so nothing is left behind. Header-only, for tests. */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline int scratch_dir_setup(void **state, const char *prefix) {
        const char *tmp = getenv("TMPDIR") ?: "/var/tmp";
        char *dir;

        if (asprintf(&dir, "%s/%s-XXXXXX", tmp, prefix) < 0)
                return -1;
        if (!mkdtemp(dir)) {
                free(dir);
                return -1;
        }
        *state = dir;
        return 0;
}

static inline int scratch_dir_teardown(void **state) {
        char *dir = *state;
        struct dirent *de;
        DIR *d = opendir(dir);

        if (d) {
                while ((de = readdir(d)))
                        if (de->d_name[0] != '.')
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
        rmdir(dir);
        free(dir);
        return 0;
}
