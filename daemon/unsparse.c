/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include "extent.h"
#include "guard.h"
#include "log.h"
#include "macro.h"
#include "unsparse.h"

static int collect_holes(int fd, uint64_t size, ExtentList *holes) {
        uint64_t pos = 0;

        while (pos < size) {
                off_t hole = lseek(fd, (off_t) pos, SEEK_HOLE), data;
                int r;

                if (hole < 0)
                        return -errno;
                if ((uint64_t) hole >= size)
                        break;
                data = lseek(fd, hole, SEEK_DATA);
                if (data < 0 && errno != ENXIO)
                        return -errno;
                if (data < 0 || (uint64_t) data > size)
                        data = (off_t) size;
                r = extent_list_add(holes, (uint64_t) hole, (uint64_t) (data - hole));
                if (r < 0)
                        return r;
                pos = (uint64_t) data;
        }
        return 0;
}

/* Punches the first n holes again: they read as zeros before and after. */
static void roll_back(int fd, const ExtentList *holes, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t) holes->items[i].offset, (off_t) holes->items[i].length) < 0)
                        log_warning_errno(errno, "Cannot punch back the hole at %llu: %m",
                                          (unsigned long long) holes->items[i].offset);
}

static int fill_holes(int fd, const ExtentList *holes, const atomic_bool *cancel) {
        for (size_t i = 0; i < holes->n; i++) {
                int r = 0;

                if (guard_lease_broken(fd))
                        r = -EBUSY;
                else if (cancel && atomic_load(cancel))
                        r = -ECANCELED;
                else if (fallocate(fd, 0, (off_t) holes->items[i].offset, (off_t) holes->items[i].length) < 0)
                        r = -errno;
                if (r < 0) {
                        /* A failed fallocate may have allocated part of its range. */
                        roll_back(fd, holes, i + 1);
                        return r;
                }
        }
        return 0;
}

int unsparse_file(const char *path, size_t beneath, const atomic_bool *cancel) {
        _cleanup_close_ int fd = -1;
        ExtentList holes = {};
        struct stat st;
        int r;

        r = guard_open_leased(path, true, beneath, &fd);
        if (r < 0)
                return r == -ESTALE ? -EBUSY : r;
        if (fstat(fd, &st) < 0)
                r = -errno;
        if (r >= 0)
                r = collect_holes(fd, (uint64_t) st.st_size, &holes);
        if (r >= 0)
                r = fill_holes(fd, &holes, cancel);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        guard_release(fd);
        extent_list_done(&holes);
        return r;
}
