/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Helpers for the unit tests that build real disk images with real tools
 * (mkfs.ext4, debugfs, sfdisk, ...): a VDisk over a plain image file read
 * with pread, a shell runner, temporary directories and trees of random
 * files. Everything is static inline so each test takes what it needs. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "prerequisite.h"
#include "vdisk.h"

typedef struct FileVDisk {
        VDisk vdisk;
        int fd;
        /* Reads touching [fail_from, ...) fail with fail_errno; 0 = never. */
        uint64_t fail_from;
        int fail_errno;
        unsigned n_reads;
} FileVDisk;

static inline int file_vdisk_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        FileVDisk *f = d->userdata;
        size_t done = 0;

        f->n_reads++;
        if (offset > d->size || len > d->size - offset)
                return -EIO;
        if (f->fail_errno != 0 && offset + len > f->fail_from)
                return -f->fail_errno;
        while (done < len) {
                ssize_t n = pread(f->fd, (uint8_t *) buf + done, len - done, (off_t) (offset + done));
                if (n < 0)
                        return -errno;
                if (n == 0) /* a sparse tail that was never written reads as zeros */
                        break;
                done += (size_t) n;
        }
        memset((uint8_t *) buf + done, 0, len - done);
        return 0;
}

static inline int file_vdisk_open(const char *path, uint32_t sector_size, FileVDisk *ret) {
        struct stat st;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret = (FileVDisk) {
                .vdisk = {
                        .size = (uint64_t) st.st_size,
                        .logical_sector_size = sector_size,
                        .read = file_vdisk_read,
                },
                .fd = fd,
        };
        ret->vdisk.userdata = ret;
        return 0;
}

static inline void file_vdisk_close(FileVDisk *f) {
        if (f->fd >= 0)
                close(f->fd);
        f->fd = -1;
}

/* Runs a shell command with the sbin directories on PATH (mkfs and friends
 * live there); returns its exit status, or -1 when it did not exit. */
_printf_(1, 2)
static inline int run(const char *format, ...) {
        _cleanup_free_ char *cmd = NULL, *full = NULL;
        va_list ap;
        int r, status;

        va_start(ap, format);
        r = vasprintf(&cmd, format, ap);
        va_end(ap);
        if (r < 0)
                return -1;
        if (asprintf(&full, "PATH=/usr/sbin:/sbin:$PATH; %s", cmd) < 0)
                return -1;
        status = system(full);
        if (status == -1 || !WIFEXITED(status))
                return -1;
        return WEXITSTATUS(status);
}

/* Runs a command and returns its standard output, NUL-terminated, or NULL
 * when it could not run or failed. */
_printf_(1, 2)
static inline char *run_capture(const char *format, ...) {
        _cleanup_free_ char *cmd = NULL, *full = NULL;
        char *out = NULL;
        size_t size = 0;
        FILE *p, *m;
        char chunk[4096];
        size_t n;
        va_list ap;
        int r, status;

        va_start(ap, format);
        r = vasprintf(&cmd, format, ap);
        va_end(ap);
        if (r < 0)
                return NULL;
        if (asprintf(&full, "PATH=/usr/sbin:/sbin:$PATH; %s", cmd) < 0)
                return NULL;
        p = popen(full, "r");
        if (!p)
                return NULL;
        m = open_memstream(&out, &size);
        if (!m) {
                pclose(p);
                return NULL;
        }
        while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
                fwrite(chunk, 1, n, m);
        fclose(m);
        status = pclose(p);
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                free(out);
                return NULL;
        }
        return out;
}

/* Whether every named tool is there; prints what is missing. */
static inline bool have_tools(const char *const *tools) {
        bool ok = true;

        for (; *tools; tools++)
                if (run("command -v %s >/dev/null 2>&1", *tools) != 0) {
                        fprintf(stderr, "missing tool: %s\n", *tools);
                        ok = false;
                }
        return ok;
}

static inline char *make_temp_dir(void) {
        const char *base = getenv("TMPDIR");
        char *path = NULL;

        if (asprintf(&path, "%s/vhdreclaim-test-XXXXXX", base && *base ? base : "/tmp") < 0)
                return NULL;
        if (!mkdtemp(path)) {
                free(path);
                return NULL;
        }
        return path;
}

static inline void remove_temp_dir(char *path) {
        if (path) {
                (void) run("rm -rf '%s'", path);
                free(path);
        }
}

/* xorshift64*: reproducible random content without global state. */
static inline uint64_t next_random(uint64_t *state) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        return *state * UINT64_C(2685821657736338717);
}

/* Writes n_files files of random content and size (up to max_size) under
 * dir/tree/dNN/fNN; returns 0 or -errno. */
static inline int write_random_tree(const char *dir, unsigned n_files, size_t max_size, uint64_t seed) {
        uint64_t state = seed | 1;
        _cleanup_free_ uint8_t *buf = malloc(max_size + 1);

        if (!buf)
                return -ENOMEM;
        for (unsigned i = 0; i < n_files; i++) {
                _cleanup_free_ char *sub = NULL, *path = NULL;
                size_t size = (size_t) (next_random(&state) % (max_size + 1));
                FILE *f;

                if (asprintf(&sub, "%s/tree/d%02u", dir, i % 4) < 0 ||
                    asprintf(&path, "%s/f%02u", sub, i) < 0)
                        return -ENOMEM;
                if (run("mkdir -p '%s'", sub) != 0)
                        return -EIO;
                for (size_t j = 0; j < size; j += 8) {
                        uint64_t v = next_random(&state);
                        memcpy(buf + j, &v, MIN((size_t) 8, size - j));
                }
                f = fopen(path, "we");
                if (!f)
                        return -errno;
                if (fwrite(buf, 1, size, f) != size) {
                        fclose(f);
                        return -EIO;
                }
                if (fclose(f) != 0)
                        return -errno;
        }
        return 0;
}
