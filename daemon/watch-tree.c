/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "log.h"
#include "schedule.h"
#include "watch-internal.h"

/* The images of [watch] sections: which section a file belongs to, the
 * scans of their folders (with recursive=true, of every folder below, each
 * watched as the scan meets it, without following a symlink or crossing
 * into another file system, as find -xdev), and the subfolders that appear
 * and go. watch.c owns the inotify watches and hands their events over.
 *
 * An FSLogix share is the case this is for: one folder per user
 * (%username%_%sid%) below the share, created at the user's first sign-in
 * with Profile_%username%.VHDX in it a moment later. */

struct WatchMount {
        char *path;
        dev_t dev;              /* of the file system mounted there */
        bool marked;            /* met by the full scan that runs */
};

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

static bool is_regular_nofollow(const char *path) {
        struct stat st;

        return lstat(path, &st) >= 0 && S_ISREG(st.st_mode);
}

/* ---- which [watch] a file belongs to ---- */

/* Whether the folder holding path, below w's folder, is reached from it
 * through folders only (no symlink) on its file system: where a scan of w
 * goes. */
static bool tree_reaches(const WatchConfig *w, const char *path) {
        _cleanup_free_ char *p = NULL;
        const char *rel = path_below(w->dir, path);
        struct stat root, st;

        if (!rel)
                return false;
        if (!strchr(rel, '/'))
                return true;
        if (stat(w->dir, &root) < 0 || !(p = strdup(path)))
                return false;
        for (char *slash = p + (rel - path); (slash = strchr(slash, '/')); slash++) {
                bool ok;

                *slash = 0;
                ok = lstat(p, &st) >= 0 && S_ISDIR(st.st_mode) && st.st_dev == root.st_dev;
                *slash = '/';
                if (!ok)
                        return false;
        }
        return true;
}

/* The [watch] whose image the file at path is: the first section in the
 * file whose folder holds it (directly, or at any depth for a recursive
 * one, where its scan goes) and whose pattern matches the file's name.
 * reached: a section whose scan found the file, which needs no check. */
static const WatchConfig *watch_owner(Manager *m, const char *path, const WatchConfig *reached) {
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];
                const char *rel = path_below(w->dir, path), *name;

                if (!rel)
                        continue;
                name = strrchr(rel, '/');
                if (name && !w->recursive)
                        continue;
                if (!watch_pattern_match(w->pattern, name ? name + 1 : rel))
                        continue;
                if (w == reached || !name || tree_reaches(w, path))
                        return w;
        }
        return NULL;
}

/* NAME/sub/dir/file: the section's name and the path below its folder. */
static char *image_name(const WatchConfig *w, const char *path) {
        const char *rel = path_below(w->dir, path);
        char *name;

        if (!rel || asprintf(&name, "%s/%s", w->name, rel) < 0)
                return NULL;
        return name;
}

static int add_watch_image(Manager *m, const WatchConfig *w, const char *path, bool probe) {
        _cleanup_free_ char *name = image_name(w, path), *origin = NULL;
        Disk *d;
        int r;

        if (!name || asprintf(&origin, "watch.%s", w->name) < 0)
                return -ENOMEM;
        r = manager_add_disk(m, name, path, origin, w->sparse, &w->reclaim, &d);
        if (r == -EEXIST) {
                /* Disk names ignore case, file names do not: Alice/ and alice/ on the host. */
                Disk *other = manager_find_disk(m, name);

                return log_warning_errno(r, "cannot add %s: its name %s is already that of %s (names of images "
                                         "ignore case)", path, name, other ? other->path : "another image");
        }
        if (r < 0)
                return log_warning_errno(r, "cannot add %s: %m", path);
        /* No symlink below the folder is followed when the image is opened. */
        d->beneath = strlen(w->dir);
        d->marked = true;
        log_info("%s: found by [watch.%s]", path, w->name);
        if (probe)
                disk_probe(d);
        return schedule_disk(d);
}

/* path resolved, or for a file not there (yet), its folder resolved. */
static char *canonical_path(const char *path) {
        _cleanup_free_ char *dir = NULL, *rdir = NULL;
        const char *slash = strrchr(path, '/');
        char *r = realpath(path, NULL);

        if (r || !slash)
                return r;
        dir = slash == path ? strdup("/") : strndup(path, (size_t) (slash - path));
        rdir = dir ? realpath(dir, NULL) : NULL;
        if (!rdir || asprintf(&r, "%s/%s", strcmp(rdir, "/") == 0 ? "" : rdir, slash + 1) < 0)
                return NULL;
        return r;
}

/* The same file whatever the spelling: the same inode (a symlink or a hard
 * link included), or for files not there, the same resolved path. */
static bool same_file_path(const char *a, const char *b) {
        _cleanup_free_ char *ca = NULL, *cb = NULL;
        struct stat sa, sb;
        bool ha = stat(a, &sa) >= 0, hb = stat(b, &sb) >= 0;

        if (ha || hb)
                return ha && hb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
        ca = canonical_path(a);
        cb = canonical_path(b);
        return ca && cb && strcmp(ca, cb) == 0;
}

Disk *watch_configured_disk_naming(Manager *m, const char *path) {
        for (size_t i = 0; i < m->n_configured_disks; i++) {
                Disk *d = m->configured_disks[i];

                if (strcmp(d->path, path) == 0 || same_file_path(path, d->path))
                        return d;
        }
        return NULL;
}

/* Whether an entry of a [watch] folder is an image the watch manages: a
 * regular file, but no symlink (the folder's users could point one at any
 * file on the host, which the daemon, as root, would then modify), and no
 * file a [disk] names (its settings are the admin's word on that file:
 * sparse=false must mean never modified). loud: at start and reload, and
 * for a file that just appeared; rescans after a mount change stay quiet. */
static bool watch_entry_wanted(Manager *m, const WatchConfig *w, const char *path, bool loud) {
        struct stat st;
        Disk *d;

        if (lstat(path, &st) < 0)
                return false;
        if (S_ISLNK(st.st_mode)) {
                log_full_errno(loud ? LOG_INFO : LOG_DEBUG, 0,
                               "%s: a symbolic link in the folder of [watch.%s], ignored: links there are not followed",
                               path, w->name);
                return false;
        }
        if (!S_ISREG(st.st_mode))
                return false;
        d = watch_configured_disk_naming(m, path);
        if (d) {
                log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, 0,
                               "%s: named by [disk.%s] and matched by [watch.%s]: managed as [disk.%s] only", path,
                               d->name, w->name, d->name);
                return false;
        }
        return true;
}

void watch_refresh_images(Manager *m) {
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];
                _cleanup_free_ char *name = NULL;
                const WatchConfig *w;
                Disk *named;

                if (!disk_found_by_watch(d))
                        continue;
                /* Its own section reaches it if it still takes it: the scan
                 * that follows drops it otherwise. */
                w = watch_owner(m, d->path, config_find_watch(m->config, d->origin + 6));
                name = w ? image_name(w, d->path) : NULL;
                /* Another name (dir= moved up, say) is another image. */
                if (!w || strcmp(d->origin + 6, w->name) != 0 || !name || strcmp(name, d->name) != 0 ||
                    !is_regular_nofollow(d->path)) {
                        log_info("%s: no longer watched", d->path);
                        manager_drop_disk(m, d);
                        continue;
                }
                named = watch_configured_disk_naming(m, d->path);
                if (named) {
                        log_warning("%s: named by [disk.%s] and matched by [watch.%s]: managed as [disk.%s] only, "
                                    "no longer as %s",
                                    d->path, named->name, w->name, named->name, d->name);
                        manager_drop_disk(m, d);
                        continue;
                }
                d->settings = w->reclaim;
                d->config_sparse = w->sparse;
                d->beneath = strlen(w->dir);
        }
}

/* ---- scans ---- */

typedef struct Walk {
        Manager *m;
        const WatchConfig *w;
        dev_t dev;              /* of the watch's folder: the walk stays on its file system */
        bool loud;
        unsigned unwatched;     /* folders the limit of inotify watches left unwatched */
        char **queue;           /* folders to scan, breadth first: no descriptor held per level */
        size_t n_queue, head;
} Walk;

static int walk_push(Walk *k, char *path) {
        char **q = reallocarray(k->queue, k->n_queue + 1, sizeof *q);

        if (!q) {
                free(path);
                return -ENOMEM;
        }
        k->queue = q;
        q[k->n_queue++] = path;
        return 0;
}

/* A file system mounted inside the tree: not descended into, said once
 * (until it is unmounted), and remembered so that its unmounting rescans. */
static void note_mount(Walk *k, const char *path, dev_t dev) {
        Manager *m = k->m;
        WatchMount *a;

        for (size_t i = 0; i < m->n_watch_mounts; i++)
                if (strcmp(m->watch_mounts[i].path, path) == 0) {
                        m->watch_mounts[i].dev = dev;
                        m->watch_mounts[i].marked = true;
                        return;
                }
        a = reallocarray(m->watch_mounts, m->n_watch_mounts + 1, sizeof *a);
        if (!a)
                return;
        m->watch_mounts = a;
        a[m->n_watch_mounts] = (WatchMount) { .path = strdup(path), .dev = dev, .marked = true };
        if (!a[m->n_watch_mounts].path)
                return;
        m->n_watch_mounts++;
        log_notice("[watch.%s]: %s is another file system, not descended into: recursive=true stays on the file "
                   "system of %s", k->w->name, path, k->w->dir);
}

/* A symlink where a recursive scan would descend: not followed (the share's
 * users could point it anywhere on the host). Said when it is met. */
static void note_symlink(const WatchConfig *w, const char *path, bool loud) {
        struct stat st;

        if (stat(path, &st) >= 0 && S_ISDIR(st.st_mode))
                log_full_errno(loud ? LOG_INFO : LOG_DEBUG, 0,
                               "%s: a symbolic link to a folder below [watch.%s], not followed", path, w->name);
}

static void walk_file(Walk *k, const char *path, const char *name) {
        Disk *d;

        if (!watch_pattern_match(k->w->pattern, name) || watch_owner(k->m, path, k->w) != k->w)
                return;
        d = manager_find_disk_by_path(k->m, path);
        if (d) {
                d->marked = true;
                return;
        }
        if (watch_entry_wanted(k->m, k->w, path, k->loud))
                (void) add_watch_image(k->m, k->w, path, true);
}

/* Scans one folder: its images, and for a recursive watch, its subfolders
 * queued. Below the watch's own folder, the folder is opened without
 * following a symlink, kept to the watch's file system, and watched (through
 * the descriptor: what was checked is what is watched) before it is read,
 * so that nothing created in it meanwhile is missed. */
static int walk_folder(Walk *k, const char *path) {
        bool root = strcmp(path, k->w->dir) == 0;
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        struct stat st;
        int r;

        if (root) {
                /* dir= itself may be a symlink: the administrator wrote it. */
                fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        fd = -errno;
        } else
                fd = open_beneath(path, strlen(k->w->dir), O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
                /* A subfolder gone or replaced by a symlink meanwhile: its own event says so. */
                log_full_errno(k->loud && fd != -ENOENT && fd != -ELOOP ? LOG_WARNING : LOG_DEBUG, -fd,
                               "[watch.%s]: cannot read %s: %m", k->w->name, path);
                return fd;
        }
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!root) {
                if (st.st_dev != k->dev) {
                        note_mount(k, path, st.st_dev);
                        return 0;
                }
                r = watch_dir_add_fd(k->m, fd, path);
                if (r == -ENOSPC) {
                        if (k->unwatched++ == 0)
                                watch_log_failure(LOG_WARNING, ENOSPC, path);
                } else if (r < 0)
                        watch_log_failure(k->loud ? LOG_WARNING : LOG_DEBUG, -r, path);
        }
        dir = fdopendir(fd);
        if (!dir)
                return -errno;
        fd = -1;        /* the DIR has it */
        while ((de = readdir(dir))) {
                _cleanup_free_ char *child = NULL;
                unsigned char type = de->d_type;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (!k->w->recursive && type != DT_REG && type != DT_LNK && type != DT_UNKNOWN)
                        continue;
                child = path_join(path, de->d_name);
                if (!child)
                        return -ENOMEM;
                if (type == DT_DIR || type == DT_LNK || type == DT_UNKNOWN) {
                        if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) < 0)
                                continue;
                        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : DT_REG;
                }
                if (type == DT_DIR) {
                        if (!k->w->recursive)
                                continue;
                        if (st.st_dev != k->dev) {
                                note_mount(k, child, st.st_dev);
                                continue;
                        }
                        r = walk_push(k, TAKE_PTR(child));
                        if (r < 0)
                                return r;
                        continue;
                }
                if (type == DT_LNK && k->w->recursive && !watch_pattern_match(k->w->pattern, de->d_name)) {
                        note_symlink(k->w, child, k->loud);
                        continue;
                }
                walk_file(k, child, de->d_name);
        }
        return 0;
}

/* Scans start (w's folder, or a folder below it that just appeared) and,
 * for a recursive w, every folder below it. Negative errno when start
 * could not be read. */
static int walk(Manager *m, const WatchConfig *w, const char *start, bool loud) {
        Walk k = { .m = m, .w = w, .loud = loud };
        struct stat root;
        char *first;
        int r = 0;

        if (stat(w->dir, &root) < 0)
                return log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, errno, "[watch.%s]: cannot read %s: %m",
                                      w->name, w->dir);
        k.dev = root.st_dev;
        first = strdup(start);
        if (!first || walk_push(&k, first) < 0)
                return log_error_errno(ENOMEM, "out of memory scanning %s", start);
        while (k.head < k.n_queue) {
                _cleanup_free_ char *path = TAKE_PTR(k.queue[k.head]);
                int q = walk_folder(&k, path);

                if (q < 0 && (k.head == 0 || q == -ENOMEM))
                        r = q;
                k.head++;
                if (q == -ENOMEM) {
                        log_error("out of memory scanning %s", start);
                        break;
                }
        }
        for (size_t i = k.head; i < k.n_queue; i++)
                free(k.queue[i]);
        free(k.queue);
        if (k.unwatched > 1)
                log_warning("[watch.%s]: %u folders below %s are not watched for the limit of inotify watches",
                            w->name, k.unwatched, start);
        return r;
}

void watch_scan_all(Manager *m, bool loud) {
        _cleanup_free_ bool *scanned = calloc(m->config->n_watches + 1, sizeof(bool));

        for (size_t i = 0; i < m->n_disks; i++)
                m->disks[i]->marked = false;
        for (size_t i = 0; i < m->n_watch_mounts; i++)
                m->watch_mounts[i].marked = false;
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];
                int r;

                if (watch_folder_missing(m, w->dir))
                        continue;
                r = walk(m, w, w->dir, loud);
                if (scanned)
                        scanned[i] = r >= 0;
        }

        /* Where no scan goes now: a subfolder that became a symlink or a
         * mount point, or the file gone without our seeing the event (an
         * overflow). Only for folders that could be read. */
        for (size_t i = m->n_disks; scanned && i > 0; i--) {
                Disk *d = m->disks[i - 1];
                const WatchConfig *w;

                if (!disk_found_by_watch(d) || d->marked)
                        continue;
                w = config_find_watch(m->config, d->origin + 6);
                if (!w || !scanned[w - m->config->watches])
                        continue;
                log_info("%s: no longer in the folders [watch.%s] scans, no longer watched", d->path, w->name);
                manager_drop_disk(m, d);
        }
        for (size_t i = m->n_watch_mounts; i > 0; i--) {
                WatchMount *x = &m->watch_mounts[i - 1];

                if (x->marked)
                        continue;
                free(x->path);
                memmove(x, x + 1, (m->n_watch_mounts - i) * sizeof *x);
                m->n_watch_mounts--;
        }
}

/* ---- events ---- */

void watch_tree_file_appeared(Manager *m, const WatchDir *parent, const char *path, bool complete) {
        const WatchConfig *w = watch_owner(m, path, NULL);
        struct stat st;

        if (w) {
                if (watch_entry_wanted(m, w, path, true))
                        /* A file being created is probed once its writer closes it and the idle pass runs. */
                        (void) add_watch_image(m, w, path, complete);
                return;
        }
        if (lstat(path, &st) < 0 || !S_ISLNK(st.st_mode))
                return;
        for (size_t i = 0; i < m->config->n_watches; i++) {
                w = &m->config->watches[i];
                if (w->recursive && path_below(w->dir, path) && tree_reaches(w, path)) {
                        note_symlink(w, path, true);
                        return;
                }
        }
}

void watch_tree_folder_appeared(Manager *m, const WatchDir *parent, const char *path) {
        /* A new user's first sign-in: the folder, then the container in it,
         * possibly before this scan; anything later has the watch's event. */
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];

                if (w->recursive && path_below(w->dir, path) && tree_reaches(w, path))
                        (void) walk(m, w, path, true);
        }
}

void watch_tree_folder_gone(Manager *m, const char *path) {
        bool resync = false;
        size_t n = 0;

        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];

                if (d->missing || !path_below(path, d->path))
                        continue;
                n++;
                watch_image_gone(m, d);
        }
        for (WatchDir *w = m->watch_dirs, *next; w; w = next) {
                next = w->next;
                if (strcmp(w->path, path) == 0 || path_below(path, w->path))
                        watch_dir_remove(m, w);
        }
        for (size_t i = m->n_watch_mounts; i > 0; i--) {
                WatchMount *x = &m->watch_mounts[i - 1];

                if (!path_below(path, x->path))
                        continue;
                free(x->path);
                memmove(x, x + 1, (m->n_watch_mounts - i) * sizeof *x);
                m->n_watch_mounts--;
        }
        /* A [watch]'s own folder or a [disk]'s went with it: the rescan
         * waits for it to come back. */
        for (size_t i = 0; i < m->config->n_watches && !resync; i++)
                resync = strcmp(m->config->watches[i].dir, path) == 0 ||
                         path_below(path, m->config->watches[i].dir);
        for (size_t i = 0; i < m->n_configured_disks && !resync; i++)
                resync = path_below(path, m->configured_disks[i]->path);
        if (resync)
                watch_schedule_resync(m);
        if (n > 0)
                log_info("%s: removed or moved away, images below it dropped: %zu", path, n);
}

bool watch_tree_mounts_changed(Manager *m) {
        struct stat st;

        for (size_t i = 0; i < m->n_watch_mounts; i++)
                if (stat(m->watch_mounts[i].path, &st) < 0 || st.st_dev != m->watch_mounts[i].dev)
                        return true;
        return false;
}

void watch_tree_done(Manager *m) {
        for (size_t i = 0; i < m->n_watch_mounts; i++)
                free(m->watch_mounts[i].path);
        free(m->watch_mounts);
        m->watch_mounts = NULL;
        m->n_watch_mounts = 0;
}
