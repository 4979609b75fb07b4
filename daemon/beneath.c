/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "macro.h"

int open_beneath(const char *path, size_t beneath, int flags) {
        _cleanup_free_ char *top = NULL;
        _cleanup_close_ int dir = -1;
        const char *p;
        int fd;

        if (beneath == 0) {
                fd = open(path, flags | O_CLOEXEC);
                return fd < 0 ? -errno : fd;
        }
        if (beneath > strlen(path))
                return -EINVAL;
        top = strndup(path, beneath);
        if (!top)
                return -ENOMEM;
        /* O_RDONLY, not O_PATH: O_PATH | O_NOFOLLOW would open a symlink itself. */
        dir = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return -errno;
        for (p = path + beneath;;) {
                _cleanup_free_ char *name = NULL;
                const char *slash;
                size_t n;
                int next;

                while (*p == '/')
                        p++;
                slash = strchr(p, '/');
                n = slash ? (size_t) (slash - p) : strlen(p);
                if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return -EINVAL;
                if (!slash) {
                        fd = openat(dir, p, flags | O_NOFOLLOW | O_CLOEXEC);
                        return fd < 0 ? -errno : fd;
                }
                name = strndup(p, n);
                if (!name)
                        return -ENOMEM;
                next = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        struct stat st;
                        int r = -errno;

                        /* O_DIRECTORY's verdict on a symlink comes first: say what it is. */
                        if (r == -ENOTDIR && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
                            S_ISLNK(st.st_mode))
                                r = -ELOOP;
                        return r;
                }
                close(dir);
                dir = next;
                p = slash;
        }
}
