/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "log.h"
#include "trim.h"

#define streq(a, b) (strcmp((a), (b)) == 0)

/* Mirrors util-linux's lists of what fstrim never trims. */
static const char *const pseudo_fs[] = {
        "anon_inodefs", "autofs", "bdev", "binder", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs",
        "cpuset", "debugfs", "devfs", "devpts", "devtmpfs", "dlmfs", "efivarfs", "fuse.gvfs-fuse-daemon",
        "fusectl", "hugetlbfs", "mqueue", "nfsd", "none", "nsfs", "overlay", "pipefs", "proc", "pstore",
        "ramfs", "rootfs", "rpc_pipefs", "securityfs", "selinuxfs", "smackfs", "sockfs", "spufs", "swap",
        "sysfs", "tmpfs", "tracefs", "squashfs", "iso9660",
};
static const char *const net_fs[] = {
        "afs", "ceph", "cifs", "smb3", "smbfs", "gfs", "gfs2", "glusterfs", "fuse.glusterfs", "fuse.sshfs",
        "9p", "ncpfs", "nfs", "nfs4", "ocfs2", "lustre", "coda", "shfs", "davfs", "fuse.s3fs",
};

static bool in_list(const char *s, const char *const *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (streq(s, list[i]))
                        return true;
        return false;
}

static bool fs_type_skipped(const char *type) {
        return in_list(type, pseudo_fs, ELEMENTSOF(pseudo_fs)) || in_list(type, net_fs, ELEMENTSOF(net_fs));
}

/* "a,b,ro,c" contains the option word? */
static bool has_option(const char *opts, const char *word) {
        size_t wl = strlen(word);

        for (const char *p = opts; p && *p;) {
                const char *comma = strchrnul(p, ',');

                if ((size_t) (comma - p) == wl && memcmp(p, word, wl) == 0)
                        return true;
                p = *comma ? comma + 1 : comma;
        }
        return false;
}

/* Octal escapes (\040 for a space) as mountinfo and fstab write them. In place. */
static void unoctal(char *s) {
        char *o = s;

        for (char *p = s; *p;) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                        *o++ = (char) ((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 4;
                } else
                        *o++ = *p++;
        }
        *o = 0;
}

typedef struct MountEntry {
        char *target;
        unsigned major, minor;
        char *mount_opts;
        char *fstype;
        char *source;
        char *super_opts;
} MountEntry;

typedef struct MountTable {
        MountEntry *items;
        size_t n;
        char *buf;      /* every string above points into this copy */
} MountTable;

static void mount_table_done(MountTable *t) {
        free(t->items);
        free(t->buf);
        *t = (MountTable) {};
}

/* Splits a line into at most max blank-separated fields, in place. */
static size_t split_fields(char *line, char **fields, size_t max) {
        size_t n = 0;
        char *save = NULL;

        for (char *tok = strtok_r(line, " \t", &save); tok && n < max; tok = strtok_r(NULL, " \t", &save))
                fields[n++] = tok;
        return n;
}

static int mountinfo_parse_line(char *line, MountEntry *e) {
        char *f[64];
        size_t n = split_fields(line, f, ELEMENTSOF(f)), sep;

        /* id parent major:minor root target options [optional...] - fstype source superoptions */
        if (n < 10)
                return -EBADMSG;
        for (sep = 6; sep < n && !streq(f[sep], "-"); sep++)
                ;
        if (sep + 3 > n)
                return -EBADMSG;
        if (sscanf(f[2], "%u:%u", &e->major, &e->minor) != 2)
                return -EBADMSG;
        unoctal(f[4]);
        unoctal(f[sep + 2]);
        if (f[4][0] != '/')
                return -EBADMSG;
        e->target = f[4];
        e->mount_opts = f[5];
        e->fstype = f[sep + 1];
        e->source = f[sep + 2];
        e->super_opts = sep + 3 < n ? f[sep + 3] : (char *) "";
        return 0;
}

static int mountinfo_parse(const char *text, MountTable *ret) {
        MountTable t = {};
        char *save = NULL;
        size_t allocated = 0;

        t.buf = strdup(text);
        if (!t.buf)
                return -ENOMEM;
        for (char *line = strtok_r(t.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                MountEntry e = {};

                if (mountinfo_parse_line(line, &e) < 0)
                        continue;
                if (t.n == allocated) {
                        size_t na = allocated ? allocated * 2 : 32;
                        MountEntry *ni = reallocarray(t.items, na, sizeof *ni);

                        if (!ni) {
                                mount_table_done(&t);
                                return -ENOMEM;
                        }
                        t.items = ni;
                        allocated = na;
                }
                t.items[t.n++] = e;
        }
        *ret = t;
        return 0;
}

/* The mount now visible at target: the last one mounted there. */
static const MountEntry *mount_table_find(const MountTable *t, const char *target) {
        for (size_t i = t->n; i > 0; i--)
                if (streq(t->items[i - 1].target, target))
                        return &t->items[i - 1];
        return NULL;
}

static bool mount_trimmable(const MountEntry *e) {
        if (fs_type_skipped(e->fstype))
                return false;
        if (has_option(e->mount_opts, "ro") || has_option(e->super_opts, "ro"))
                return false;
        /* Only block devices can discard. (Not "major != 0": btrfs reports
         * an anonymous device there.) */
        return strncmp(e->source, "/dev/", 5) == 0;
}

void trim_mounts_free(TrimMount *m, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(m[i].path);
        free(m);
}

typedef struct MountList {
        TrimMount *items;
        size_t n;
} MountList;

/* Adds e, to be trimmed through path, unless its device is there already. */
static int mount_list_add(MountList *l, const MountEntry *e, const char *path) {
        TrimMount *ni;

        for (size_t i = 0; i < l->n; i++)
                if (l->items[i].major == e->major && l->items[i].minor == e->minor)
                        return 0;
        ni = reallocarray(l->items, l->n + 1, sizeof *ni);
        if (!ni)
                return -ENOMEM;
        l->items = ni;
        ni[l->n] = (TrimMount) { .path = strdup(path), .major = e->major, .minor = e->minor };
        if (!ni[l->n].path)
                return -ENOMEM;
        l->n++;
        return 0;
}

/* fstab's mount points that may be trimmed, in file order; *ret_n 0 when
 * fstab lists nothing. */
static int fstab_targets(const char *fstab, char ***ret, size_t *ret_n) {
        _cleanup_free_ char *buf = fstab ? strdup(fstab) : NULL;
        char **targets = NULL, *save = NULL;
        size_t n = 0;

        if (fstab && !buf)
                return -ENOMEM;
        for (char *line = buf ? strtok_r(buf, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
                char *f[6], **nt;
                size_t nf;

                line += strspn(line, " \t");
                if (*line == '#' || *line == 0)
                        continue;
                nf = split_fields(line, f, ELEMENTSOF(f));
                if (nf < 3 || streq(f[2], "swap") || streq(f[1], "none") || f[1][0] != '/')
                        continue;
                if (nf >= 4 && has_option(f[3], "X-fstrim.notrim"))
                        continue;
                unoctal(f[1]);
                nt = reallocarray(targets, n + 1, sizeof *nt);
                if (!nt)
                        goto oom;
                targets = nt;
                if (!(targets[n] = strdup(f[1])))
                        goto oom;
                n++;
        }
        *ret = targets;
        *ret_n = n;
        return 0;
oom:
        for (size_t i = 0; i < n; i++)
                free(targets[i]);
        free(targets);
        return -ENOMEM;
}

int trim_select_all(const char *fstab, const char *mountinfo, TrimMount **ret, size_t *ret_n) {
        MountTable t = {};
        MountList l = {};
        char **targets = NULL;
        size_t n_targets = 0;
        int r;

        r = mountinfo_parse(mountinfo, &t);
        if (r < 0)
                return r;
        r = fstab_targets(fstab, &targets, &n_targets);
        if (r < 0)
                goto finish;

        if (n_targets > 0) {
                for (size_t i = 0; i < n_targets && r >= 0; i++) {
                        const MountEntry *e = mount_table_find(&t, targets[i]);

                        if (e && mount_trimmable(e))
                                r = mount_list_add(&l, e, e->target);
                }
        } else
                for (size_t i = 0; i < t.n && r >= 0; i++) {
                        const MountEntry *e = mount_table_find(&t, t.items[i].target);

                        /* Only the mount on top at each mount point. */
                        if (e == &t.items[i] && mount_trimmable(e))
                                r = mount_list_add(&l, e, e->target);
                }
finish:
        for (size_t i = 0; i < n_targets; i++)
                free(targets[i]);
        free(targets);
        mount_table_done(&t);
        if (r < 0) {
                trim_mounts_free(l.items, l.n);
                return r;
        }
        *ret = l.items;
        *ret_n = l.n;
        return 0;
}

/* Is mount point m a prefix of path at a component boundary? */
static size_t mount_prefix_len(const char *m, const char *path) {
        size_t ml = strlen(m);

        if (streq(m, "/"))
                return 1;
        if (strncmp(m, path, ml) != 0 || (path[ml] != 0 && path[ml] != '/'))
                return 0;
        return ml;
}

/* The mount that holds path: the longest matching mount point, and of
 * several mounted on one point the last (it is on top). */
static const MountEntry *mount_table_holding(const MountTable *t, const char *path) {
        const MountEntry *best = NULL;
        size_t best_len = 0;

        for (size_t j = 0; j < t->n; j++) {
                size_t len = mount_prefix_len(t->items[j].target, path);

                if (len > 0 && len >= best_len) {
                        best = &t->items[j];
                        best_len = len;
                }
        }
        return best;
}

/* path without trailing slashes ("/" stays "/"), as mountinfo spells mount points. */
static char *strip_trailing_slashes(const char *path) {
        size_t n = strlen(path);

        while (n > 1 && path[n - 1] == '/')
                n--;
        return strndup(path, n);
}

/* FITRIM acts on the whole file system whatever directory it is issued on,
 * so a listed path must be the mount point itself: a directory inside a
 * mount would trim all of it under a name that says otherwise. */
static int listed_mount(const MountTable *t, const char *path, const MountEntry **ret, char **ret_error) {
        _cleanup_free_ char *p = strip_trailing_slashes(path);
        const MountEntry *e;

        if (!p)
                return -ENOMEM;
        e = mount_table_holding(t, p);
        if (!e) {
                if (ret_error && asprintf(ret_error, "%s is on no mounted file system", path) < 0)
                        *ret_error = NULL;
                return -ENOENT;
        }
        if (!streq(e->target, p)) {
                if (ret_error && asprintf(ret_error,
                                          "%s is not a mount point: it is on the file system mounted at %s, "
                                          "and FITRIM would trim all of that; list %s to trim it",
                                          path, e->target, e->target) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        *ret = e;
        return 0;
}

int trim_select_listed(char *const *paths, size_t n_paths, const char *mountinfo, TrimMount **ret,
                       size_t *ret_n, char **ret_error) {
        MountTable t = {};
        MountList l = {};
        int r;

        if (ret_error)
                *ret_error = NULL;
        r = mountinfo_parse(mountinfo, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_paths && r >= 0; i++) {
                const MountEntry *e = NULL;

                r = listed_mount(&t, paths[i], &e, ret_error);
                if (r >= 0)
                        r = mount_list_add(&l, e, e->target);
        }
        mount_table_done(&t);
        if (r < 0) {
                trim_mounts_free(l.items, l.n);
                return r;
        }
        *ret = l.items;
        *ret_n = l.n;
        return 0;
}

static int read_text(const char *path, char **ret) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *out;
        char chunk[4096];
        size_t n;

        if (!f)
                return -errno;
        out = open_memstream(&buf, &size);
        if (!out)
                return -ENOMEM;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
                fwrite(chunk, 1, n, out);
        if (fclose(out) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

int trim_list_all(TrimMount **ret, size_t *ret_n) {
        _cleanup_free_ char *fstab = NULL, *mountinfo = NULL;
        int r;

        r = read_text("/proc/self/mountinfo", &mountinfo);
        if (r < 0)
                return log_error_errno(r, "cannot read /proc/self/mountinfo: %m");
        (void) read_text("/etc/fstab", &fstab);
        return trim_select_all(fstab, mountinfo, ret, ret_n);
}

/* The paths as the kernel names them (symlinks and "." resolved), so they
 * compare with mountinfo's mount points. */
static int canonical_paths(char *const *paths, size_t n, char ***ret, char **ret_error) {
        char **out = calloc(n + 1, sizeof *out);

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                out[i] = realpath(paths[i], NULL);
                if (!out[i]) {
                        int r = -errno;

                        if (ret_error && asprintf(ret_error, "%s: %s", paths[i], strerror(-r)) < 0)
                                *ret_error = NULL;
                        for (size_t k = 0; k < i; k++)
                                free(out[k]);
                        free(out);
                        return r == -ENOMEM ? r : -ENOENT;
                }
        }
        *ret = out;
        return 0;
}

int trim_list_mounts(char *const *paths, size_t n_paths, TrimMount **ret, size_t *ret_n, char **ret_error) {
        _cleanup_free_ char *mountinfo = NULL;
        char **canonical = NULL;
        int r;

        if (ret_error)
                *ret_error = NULL;
        r = read_text("/proc/self/mountinfo", &mountinfo);
        if (r < 0)
                return log_error_errno(r, "cannot read /proc/self/mountinfo: %m");
        r = canonical_paths(paths, n_paths, &canonical, ret_error);
        if (r < 0)
                return r;
        r = trim_select_listed(canonical, n_paths, mountinfo, ret, ret_n, ret_error);
        for (size_t i = 0; i < n_paths; i++)
                free(canonical[i]);
        free(canonical);
        return r;
}

/* Sleeps usec, waking every 50 ms to look at the cancel flag. */
static int pause_cancellable(uint64_t usec, const atomic_bool *cancel) {
        while (usec > 0) {
                uint64_t step = MIN(usec, UINT64_C(50000));
                struct timespec ts = { .tv_sec = (time_t) (step / 1000000), .tv_nsec = (long) (step % 1000000) * 1000 };

                if (cancel && atomic_load(cancel))
                        return -ECANCELED;
                nanosleep(&ts, NULL);
                usec -= step;
        }
        return cancel && atomic_load(cancel) ? -ECANCELED : 0;
}

/* Still the root of a mount? Between listing and trimming the file system
 * may have been unmounted, leaving a plain directory of the one below: FITRIM
 * there would trim a file system nobody listed. */
static int check_mount_root(int fd) {
        struct statx sx;

        if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) < 0)
                return -errno;
        if (!(sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
                return 0;       /* the kernel cannot tell (before 5.8): trust the listing */
        return sx.stx_attributes & STATX_ATTR_MOUNT_ROOT ? 0 : -ENOENT;
}

/* One FITRIM call on [start, start + len); len UINT64_MAX - start is open-ended. */
static int fitrim(int fd, uint64_t start, uint64_t len, uint64_t *ret_trimmed) {
        struct fstrim_range range = { .start = start, .len = len, .minlen = 0 };

        if (ioctl(fd, FITRIM, &range) < 0)
                return -errno;
        *ret_trimmed = range.len;
        return 0;
}

int trim_run(const char *path, uint64_t chunk, uint64_t pause_usec, const atomic_bool *cancel,
             void (*progress)(uint64_t done, uint64_t total, void *userdata), void *userdata,
             uint64_t *ret_trimmed) {
        _cleanup_close_ int fd = -1;
        struct statvfs sv;
        uint64_t estimate, trimmed = 0;
        int r = 0;

        *ret_trimmed = 0;
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        r = check_mount_root(fd);
        if (r < 0)
                return r;
        if (fstatvfs(fd, &sv) < 0)
                return -errno;
        /* f_blocks leaves out what the file system counts as overhead (on a
         * 512 MiB XFS it says 448 MiB), so it only paces the chunks and
         * scales the progress: the last chunk is open-ended, as fstrim's one
         * call is (len = ULLONG_MAX), and reaches the real end. */
        estimate = (uint64_t) sv.f_blocks * sv.f_frsize;
        if (chunk == 0)
                chunk = UINT64_MAX;

        for (uint64_t start = 0;;) {
                bool last = chunk >= estimate || start >= estimate - chunk;
                uint64_t len = last ? UINT64_MAX - start : chunk, got = 0;

                if (cancel && atomic_load(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                r = fitrim(fd, start, len, &got);
                if (r == -EINVAL && start > 0) {
                        /* Past the end: f_blocks said more than there is. */
                        r = 0;
                        break;
                }
                if (r < 0)
                        break;
                trimmed += got;
                if (last) {
                        if (progress)
                                progress(MAX(estimate, start), MAX(estimate, start), userdata);
                        break;
                }
                start += chunk;
                if (progress)
                        progress(start, estimate, userdata);
                r = pause_cancellable(pause_usec, cancel);
                if (r < 0)
                        break;
        }
        *ret_trimmed = trimmed;
        return r;
}
