/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "schedule.h"
#include "watch-internal.h"

#define WATCH_MASK                                                                                              \
        (IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |     \
         IN_ONLYDIR)
/* What the nearest existing ancestor of a missing folder is watched for. */
#define WAIT_MASK (IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)
/* Events that come in a burst (mkdir -p, a mount with its submounts) are
 * answered with one rescan. */
#define RESYNC_DELAY_USEC (100 * USEC_PER_MSEC)
/* The idle timers of images closed together fire together. */
#define IDLE_TIMER_ACCURACY_USEC (50 * USEC_PER_MSEC)

static void watch_dir_free(WatchDir *w) {
        free(w->path);
        free(w);
}

static WatchDir *watch_dir_in(WatchDir *list, int wd) {
        for (WatchDir *w = list; w; w = w->next)
                if (w->wd == wd)
                        return w;
        return NULL;
}

/* Thousands of folders with recursive=true: found by wd without a walk of the list. */
WatchDir *watch_dir_by_wd(Manager *m, int wd) {
        char key[16];

        snprintf(key, sizeof key, "%d", wd);
        return hashmap_get(&m->watch_dirs_by_wd, key);
}

char *path_join(const char *dir, const char *name) {
        char *p;

        if (asprintf(&p, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name) < 0)
                return NULL;
        return p;
}

const char *path_below(const char *dir, const char *path) {
        size_t l = strcmp(dir, "/") == 0 ? 0 : strlen(dir);

        if (strncmp(path, dir, l) != 0 || path[l] != '/' || path[l + 1] == 0)
                return NULL;
        return path + l + 1;
}

/* By the configured path, or where it leads: a writer that opened the image
 * through a symlink shows up in the target's folder. */
static Disk *disk_by_path(Manager *m, const char *path) {
        return manager_find_disk_by_path(m, path);
}

static bool disk_running(const Disk *d) {
        return d->job && d->job->running;
}

/* ---- idle trigger ---- */

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        Disk *d = userdata;
        Job *j;
        int r;

        r = manager_queue_reclaim(d->manager, d, TRIGGER_IDLE, false, _DISCARD_MODE_INVALID, &j);
        if (r < 0)
                log_warning_errno(r, "cannot queue the idle pass of %s: %m", d->name);
        manager_state_changed(d->manager);
        return 0;
}

int watch_arm_idle(Disk *d) {
        uint64_t delay = d->settings.idle_delay_usec;
        int r;

        if (d->idle_timer) {
                r = sd_event_source_set_time_relative(d->idle_timer, delay);
                if (r >= 0)
                        r = sd_event_source_set_enabled(d->idle_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(d->manager->event, &d->idle_timer, CLOCK_BOOTTIME, delay,
                                               IDLE_TIMER_ACCURACY_USEC, on_idle, d);
        if (r < 0)
                return log_warning_errno(r, "cannot arm the idle timer of %s: %m", d->name);
        log_debug("%s: closed after writing, a pass follows in %" PRIu64 " ms unless it is opened again", d->name,
                  delay / USEC_PER_MSEC);
        return 0;
}

void watch_disarm_idle(Disk *d) {
        if (d->idle_timer)
                sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
}

static bool idle_armed(const Disk *d) {
        int enabled = SD_EVENT_OFF;

        return d->idle_timer && sd_event_source_get_enabled(d->idle_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF;
}

/* ---- inotify watches ---- */

static WatchDir *watch_dir_new(const char *path, int wd) {
        WatchDir *w = calloc(1, sizeof *w);

        if (!w || !(w->path = strdup(path))) {
                free(w);
                return NULL;
        }
        w->wd = wd;
        snprintf(w->wd_key, sizeof w->wd_key, "%d", wd);
        return w;
}

static WatchDir *watch_wait_add(Manager *m, const char *path, int wd) {
        WatchDir *w = watch_dir_new(path, wd);

        if (!w)
                return NULL;
        w->next = m->watch_waits;
        m->watch_waits = w;
        return w;
}

/* A folder of m->watch_dirs, indexed by wd. */
static WatchDir *watch_dir_add(Manager *m, const char *path, int wd, const struct stat *st) {
        WatchDir *w = watch_dir_new(path, wd);

        if (!w)
                return NULL;
        if (hashmap_put(&m->watch_dirs_by_wd, w->wd_key, w) < 0) {
                watch_dir_free(w);
                return NULL;
        }
        if (st) {
                w->dev = st->st_dev;
                w->ino = st->st_ino;
        }
        w->next = m->watch_dirs;
        m->watch_dirs = w;
        return w;
}

static void watch_dir_unlink(Manager *m, WatchDir *w) {
        hashmap_remove(&m->watch_dirs_by_wd, w->wd_key, w);
        for (WatchDir **p = &m->watch_dirs; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        watch_dir_free(w);
}

void watch_dir_remove(Manager *m, WatchDir *w) {
        /* Fails harmlessly for a folder already gone: the kernel dropped its watch. */
        (void) inotify_rm_watch(m->inotify_fd, w->wd);
        watch_dir_unlink(m, w);
}

/* Drops the watches not marked since the last sweep. */
static void sweep_dirs(Manager *m) {
        for (WatchDir *w = m->watch_dirs, *next; w; w = next) {
                next = w->next;
                if (!w->marked)
                        watch_dir_remove(m, w);
        }
}

static void sweep_waits(Manager *m) {
        for (WatchDir **p = &m->watch_waits; *p;) {
                WatchDir *w = *p;

                if (w->marked) {
                        p = &w->next;
                        continue;
                }
                (void) inotify_rm_watch(m->inotify_wait_fd, w->wd);
                *p = w->next;
                watch_dir_free(w);
        }
}

void watch_log_failure(int level, int error, const char *path) {
        _cleanup_free_ char *limit = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0;

        if (error != ENOSPC) {
                log_full_errno(level, error, "cannot watch %s: %m", path);
                return;
        }
        /* inotify_add_watch()'s ENOSPC: no disk is full, the watches of this
         * user are used up. */
        f = fopen("/proc/sys/fs/inotify/max_user_watches", "re");
        if (!f || getline(&limit, &size, f) < 0) {
                free(limit);
                limit = strdup("?\n");
        }
        if (limit)
                limit[strcspn(limit, "\n")] = 0;
        log_full_errno(LOG_WARNING, 0,
                       "cannot watch %s: the limit of inotify watches is reached (sysctl fs.inotify.max_user_watches "
                       "= %s, one watch per folder): images created or written there are not noticed until a "
                       "reload; raise the limit", path, limit ? limit : "?");
}

/* Watches a new folder, or marks the one already watched (the same inode
 * gives the same wd). opened: path is where a scan just opened the folder
 * (st its fstat()), so where its events are now: a folder renamed while
 * its events were lost (an overflow) is known by its new path from here on. */
static int watch_dir_put(Manager *m, const char *watch_path, const char *path, const struct stat *st, bool tree,
                         bool opened) {
        WatchDir *w;
        int wd;

        wd = inotify_add_watch(m->inotify_fd, watch_path, WATCH_MASK);
        if (wd < 0)
                return -errno;
        w = watch_dir_by_wd(m, wd);
        if (w && opened && strcmp(w->path, path) != 0) {
                char *p = strdup(path);

                if (p) {
                        free(w->path);
                        w->path = p;
                        w->dev = st->st_dev;
                        w->ino = st->st_ino;
                }
        }
        if (!w)
                w = watch_dir_add(m, path, wd, st);
        if (!w) {
                (void) inotify_rm_watch(m->inotify_fd, wd);
                return log_error_errno(ENOMEM, "out of memory watching %s", path);
        }
        w->marked = true;
        w->tree = w->tree || tree;
        return 0;
}

int watch_dir_add_fd(Manager *m, int fd, const char *path) {
        char proc[64];
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        /* The folder open at fd, whatever its path leads to by now. */
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        return watch_dir_put(m, proc, path, &st, true, true);
}

/* Watches the folder at path (a [disk]'s folder, or a [watch]'s own
 * folder: tree): 0, or a negative errno, not logged. */
static int ensure_dir(Manager *m, const char *path, bool tree) {
        struct stat st;
        bool have = stat(path, &st) >= 0;

        return watch_dir_put(m, path, path, have ? &st : NULL, tree, false);
}

/* Waits for the missing folder at path to appear: watches its nearest
 * existing ancestor for folders created or moved in. */
static void ensure_wait(Manager *m, const char *path) {
        _cleanup_free_ char *p = strdup(path);
        WatchDir *w;
        int wd = -1;

        while (p && wd < 0) {
                char *slash = strrchr(p, '/');

                if (!slash)
                        return;
                if (slash == p)
                        slash[1] = 0;
                else
                        *slash = 0;
                wd = inotify_add_watch(m->inotify_wait_fd, p, WAIT_MASK);
                if (wd < 0 && ((errno != ENOENT && errno != ENOTDIR) || strcmp(p, "/") == 0)) {
                        log_warning_errno(errno, "cannot watch %s for %s to appear: %m", p, path);
                        return;
                }
        }
        if (!p)
                return;
        w = watch_dir_in(m->watch_waits, wd);
        if (!w)
                w = watch_wait_add(m, p, wd);
        if (w)
                w->marked = true;
        log_debug("%s: missing, watching %s for it to appear", path, p);
}

static bool strv_has(char **l, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(l[i], s) == 0)
                        return true;
        return false;
}

static int strv_push(char ***l, size_t *n, const char *s) {
        char **nl = reallocarray(*l, *n + 1, sizeof *nl);

        if (!nl)
                return -ENOMEM;
        *l = nl;
        if (!(nl[*n] = strdup(s)))
                return -ENOMEM;
        (*n)++;
        return 0;
}

/* Watches path (0), or if it is missing, waits for it (-ENOENT; remembered
 * in missing). Another negative errno is logged. */
static int ensure_dir_or_wait(Manager *m, const char *path, bool tree, bool loud, char ***missing,
                              size_t *n_missing) {
        int r = ensure_dir(m, path, tree);

        if (r >= 0)
                return 0;
        if (r != -ENOENT && r != -ENOTDIR) {
                watch_log_failure(loud || r == -ENOSPC ? LOG_WARNING : LOG_DEBUG, -r, path);
                return r;
        }
        if (!strv_has(*missing, *n_missing, path))
                (void) strv_push(missing, n_missing, path);
        ensure_wait(m, path);
        return -ENOENT;
}

static char *parent_of(const char *path) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                return NULL;
        return slash == path ? strdup("/") : strndup(path, (size_t) (slash - path));
}

bool watch_folder_missing(Manager *m, const char *dir) {
        return strv_has(m->watch_missing, m->n_watch_missing, dir);
}

/* Watches every folder that holds managed images, rescans the [watch]
 * folders (and the trees of recursive ones, watching their subfolders),
 * and waits for the missing ones. loud: at start and reload (the state of
 * everything is logged); rescans after a folder appeared or the mount table
 * changed log what changed only. */
static void sync_all(Manager *m, bool loud) {
        char **missing = NULL;
        size_t n_missing = 0;

        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                w->marked = w->tree = false;
        for (WatchDir *w = m->watch_waits; w; w = w->next)
                w->marked = false;
        for (size_t i = 0; i < m->n_disks; i++) {
                const Disk *d = m->disks[i];
                const char *paths[2] = { d->path, d->real_path };

                if (disk_found_by_watch(d))
                        continue;
                for (size_t k = 0; k < 2; k++) {
                        _cleanup_free_ char *dir = NULL;

                        if (!paths[k] || (k == 1 && strcmp(paths[1], paths[0]) == 0))
                                continue;
                        dir = parent_of(paths[k]);
                        if (dir && ensure_dir_or_wait(m, dir, false, loud, &missing, &n_missing) == -ENOENT &&
                            (loud || !strv_has(m->watch_missing, m->n_watch_missing, dir)))
                                log_full_errno(loud ? LOG_WARNING : LOG_INFO, 0,
                                               "[disk.%s]: the folder %s does not exist: it is watched as soon as it "
                                               "appears", d->name, dir);
                }
        }
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];
                bool was_missing = strv_has(m->watch_missing, m->n_watch_missing, w->dir);
                int r = ensure_dir_or_wait(m, w->dir, true, loud, &missing, &n_missing);

                if (r >= 0) {
                        if (was_missing)
                                log_info("[watch.%s]: %s appeared, watching it", w->name, w->dir);
                } else if (r == -ENOENT && (loud || !was_missing))
                        log_warning("[watch.%s]: %s does not exist: the watch is inactive until it appears", w->name,
                                    w->dir);
        }
        strv_free_n(m->watch_missing, m->n_watch_missing);
        m->watch_missing = missing;
        m->n_watch_missing = n_missing;

        /* A [disk] whose folder came back (created, moved or mounted) with
         * the image already in it: no event in the folder says so. */
        for (size_t i = 0; i < m->n_disks; i++) {
                Disk *d = m->disks[i];

                if (!disk_found_by_watch(d) && d->missing && access(d->path, F_OK) >= 0) {
                        log_info("%s: present again", d->path);
                        d->missing = false;
                        disk_probe(d);
                        (void) schedule_disk(d);
                }
        }
        watch_refresh_images(m);
        /* Before the sweep: the subfolders of recursive trees are marked as
         * the scan meets them, so those still there keep their watch. */
        watch_scan_all(m, loud);
        sweep_dirs(m);
        sweep_waits(m);
}

int watch_sync(Manager *m) {
        sync_all(m, true);
        return 0;
}

size_t watch_inactive(Manager *m) {
        size_t n = 0;

        if (!m->config)
                return 0;       /* before the first configuration is in effect */
        for (size_t i = 0; i < m->config->n_watches; i++)
                if (strv_has(m->watch_missing, m->n_watch_missing, m->config->watches[i].dir))
                        n++;
        return n;
}

static int on_resync(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        sync_all(m, false);
        worker_dispatch(m);
        manager_state_changed(m);
        return 0;
}

/* A rescan shortly, once for a burst of reasons. */
void watch_schedule_resync(Manager *m) {
        int r;

        if (m->watch_resync) {
                r = sd_event_source_set_time_relative(m->watch_resync, RESYNC_DELAY_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->watch_resync, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(m->event, &m->watch_resync, CLOCK_MONOTONIC, RESYNC_DELAY_USEC,
                                               RESYNC_DELAY_USEC / 2, on_resync, m);
        if (r < 0)
                log_warning_errno(r, "cannot schedule a rescan of the watched folders: %m");
}

/* Whether a watched folder's path now leads elsewhere (a file system was
 * mounted on it or unmounted from it), a missing one is there, or a file
 * system that a recursive tree did not descend into is gone. */
static bool dirs_changed(Manager *m) {
        struct stat st;

        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                if (stat(w->path, &st) < 0 || st.st_dev != w->dev || st.st_ino != w->ino)
                        return true;
        for (size_t i = 0; i < m->n_watch_missing; i++)
                if (stat(m->watch_missing[i], &st) >= 0)
                        return true;
        return watch_tree_mounts_changed(m);
}

/* The kernel flags /proc/self/mountinfo with POLLPRI whenever the mount
 * table changes (and epoll stops reporting it once it was reported), so
 * mounts are noticed without polling. */
static int on_mountinfo(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        if (dirs_changed(m)) {
                log_debug("the mount table changed under a watched folder: rescanning");
                watch_schedule_resync(m);
        }
        return 0;
}

static int on_inotify_wait(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        Manager *m = userdata;
        bool relevant = false;
        ssize_t n;

        while ((n = read(fd, buf, sizeof buf)) > 0)
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *) p;
                        const WatchDir *w = watch_dir_in(m->watch_waits, ev->wd);

                        p += sizeof *ev + ev->len;
                        /* An ancestor gone, or the events lost: look again. */
                        if ((ev->mask & (IN_IGNORED | IN_Q_OVERFLOW)) && (w || ev->wd < 0))
                                relevant = true;
                        if (!w || ev->len == 0)
                                continue;
                        /* A folder on the way to a missing one: the next component. */
                        for (size_t i = 0; i < m->n_watch_missing && !relevant; i++) {
                                const char *x = m->watch_missing[i];
                                size_t l = strcmp(w->path, "/") == 0 ? 0 : strlen(w->path);
                                size_t nl = strlen(ev->name);

                                relevant = strncmp(x, w->path, l) == 0 && x[l] == '/' &&
                                           strncmp(x + l + 1, ev->name, nl) == 0 &&
                                           (x[l + 1 + nl] == '/' || x[l + 1 + nl] == 0);
                        }
                }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
                log_warning_errno(errno, "reading inotify events: %m");
        if (relevant)
                watch_schedule_resync(m);
        return 0;
}

/* ---- events ---- */

void watch_image_gone(Manager *m, Disk *d) {
        if (disk_running(d)) {
                /* The pass stops at its next check and ends cleanly. */
                log_info("%s: deleted or moved away during its pass, stopping the pass", d->path);
                atomic_store(&d->job->cancel, true);
        }
        watch_disarm_idle(d);
        if (disk_found_by_watch(d)) {
                /* Images come and go in a [watch] folder (profiles of departed
                 * users): their records would pile up in the state directory. */
                log_info("%s: gone, no longer managed", d->path);
                (void) state_remove_disk(m->state_dir_fd, d->name);
                manager_drop_disk(m, d);
                return;
        }
        log_info("%s: missing", d->path);
        d->missing = true;
        d->written = false;
        schedule_disk_cancel(d);
}

/* lstat(): a symlink is no regular file here. */
static bool is_regular_nofollow(const char *path) {
        struct stat st;

        return lstat(path, &st) >= 0 && S_ISREG(st.st_mode);
}

static void image_appeared(Manager *m, const WatchDir *w, const char *path, bool complete) {
        Disk *d = disk_by_path(m, path);

        if (d && disk_found_by_watch(d) && !is_regular_nofollow(path)) {
                /* Renamed over by a symlink (or anything but a file). */
                log_info("%s: no longer a regular file, no longer watched", path);
                manager_drop_disk(m, d);
                return;
        }
        if (!d && is_regular_nofollow(path))
                d = watch_configured_disk_naming(m, path);
        if (d) {
                if (!d->missing)
                        return;
                log_info("%s: present again", d->path);
                d->missing = false;
                if (complete)
                        disk_probe(d);
                (void) schedule_disk(d);
                return;
        }
        if (w->tree)
                watch_tree_file_appeared(m, w, path, complete);
}

/* A subfolder that only a recursive tree watches: neither a [watch]'s own
 * folder nor a [disk]'s, which a rescan must then wait for. */
static bool only_in_tree(Manager *m, const WatchDir *w) {
        if (!w->tree)
                return false;
        for (size_t i = 0; i < m->config->n_watches; i++)
                if (strcmp(m->config->watches[i].dir, w->path) == 0)
                        return false;
        for (size_t i = 0; i < m->n_configured_disks; i++) {
                const Disk *d = m->configured_disks[i];
                const char *rel = path_below(w->path, d->path);

                if (rel && !strchr(rel, '/'))
                        return false;
        }
        return true;
}

static void folder_ignored(Manager *m, WatchDir *w) {
        size_t l = strlen(w->path);

        if (only_in_tree(m, w)) {
                /* Removed (its parent's event says so too) or its file
                 * system unmounted: what was below it is gone. */
                _cleanup_free_ char *path = strdup(w->path);

                if (path)
                        watch_tree_folder_gone(m, path);
                else
                        watch_dir_unlink(m, w);
                return;
        }
        /* The folder itself went away (or the file system it was on was
         * unmounted): its images are missing until it is back, which the
         * rescan waits for. */
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *x = m->disks[i - 1];

                if (strncmp(x->path, w->path, l) == 0 && x->path[l] == '/' && !strchr(x->path + l + 1, '/') &&
                    !x->missing)
                        watch_image_gone(m, x);
        }
        watch_dir_unlink(m, w);
        watch_schedule_resync(m);
}

static void handle_event(Manager *m, const struct inotify_event *ev, Disk *self) {
        _cleanup_free_ char *path = NULL;
        WatchDir *w;
        Disk *d;

        if (ev->mask & IN_Q_OVERFLOW) {
                log_warning("inotify queue overflow: rescanning the watched folders");
                sync_all(m, false);
                return;
        }
        w = watch_dir_by_wd(m, ev->wd);
        if (!w)
                return;
        if (ev->mask & IN_IGNORED) {
                folder_ignored(m, w);
                return;
        }
        if (ev->len == 0 || ev->name[0] == 0)
                return;
        path = path_join(w->path, ev->name);
        if (!path)
                return;

        if (ev->mask & IN_ISDIR) {
                /* A subfolder: of interest to a recursive [watch] only. */
                if (!w->tree)
                        return;
                if (ev->mask & (IN_CREATE | IN_MOVED_TO))
                        watch_tree_folder_appeared(m, w, path);
                else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
                        watch_tree_folder_gone(m, path);
                return;
        }
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
                image_appeared(m, w, path, ev->mask & IN_MOVED_TO);
                return;
        }
        d = disk_by_path(m, path);
        if (!d)
                return;
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
                if (!d->missing)
                        watch_image_gone(m, d);
                return;
        }
        /* A pass's own open and close of its image are no writer's. */
        if (disk_running(d))
                return;
        if ((d == self || disk_probing(d)) && (ev->mask & (IN_OPEN | IN_CLOSE_NOWRITE)))
                return;
        /* A periodic pass keeps idleDelay away from it (schedule.c): smbd
         * closes a durable handle's file and may reopen it later. */
        if (ev->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE))
                d->last_close = usec_now(CLOCK_BOOTTIME);
        if (ev->mask & IN_OPEN) {
                if (idle_armed(d))
                        log_debug("%s: opened again before its idle delay ended", d->name);
                watch_disarm_idle(d);
        } else if (ev->mask & IN_CLOSE_WRITE) {
                d->written = true;
                (void) watch_arm_idle(d);
                /* Found while its writer was still copying it in: read its
                 * format now that it is whole, not at its first pass. */
                if (d->record.format < 0)
                        disk_probe(d);
        } else if ((ev->mask & IN_CLOSE_NOWRITE) && d->written && !idle_armed(d))
                (void) watch_arm_idle(d);
}

static void process_events(Manager *m, Disk *self) {
        /* Aligned as struct inotify_event needs. */
        char buf[16 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));

        /* A probe inside an event's handling does not read events in turn:
         * its own open then counts as a reader's, which only delays an idle pass. */
        if (m->watch_processing)
                return;
        m->watch_processing = true;

        for (;;) {
                ssize_t n = read(m->inotify_fd, buf, sizeof buf);

                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                log_warning_errno(errno, "reading inotify events: %m");
                        if (errno != EINTR)
                                break;
                        continue;
                }
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *) p;

                        handle_event(m, ev, self);
                        p += sizeof *ev + ev->len;
                }
        }
        m->watch_processing = false;
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        process_events(m, NULL);
        manager_state_changed(m);
        return 0;
}

void watch_flush_self(Manager *m, Disk *d) {
        if (m->inotify_fd >= 0)
                process_events(m, d);
}

int watch_setup(Manager *m) {
        int r;

        m->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        m->inotify_wait_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (m->inotify_fd < 0 || m->inotify_wait_fd < 0)
                return log_error_errno(errno, "inotify_init1: %m");
        r = sd_event_add_io(m->event, &m->inotify_source, m->inotify_fd, EPOLLIN, on_inotify, m);
        if (r >= 0)
                r = sd_event_add_io(m->event, &m->inotify_wait_source, m->inotify_wait_fd, EPOLLIN, on_inotify_wait,
                                    m);
        if (r < 0)
                return log_error_errno(r, "cannot watch the inotify descriptor: %m");
        /* Without it, a file system mounted on a watched folder is seen at the next reload only. */
        m->mountinfo_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (m->mountinfo_fd < 0)
                log_warning_errno(errno, "cannot open /proc/self/mountinfo, mounts on watched folders are seen "
                                  "at the next reload only: %m");
        else {
                r = sd_event_add_io(m->event, &m->mountinfo_source, m->mountinfo_fd, EPOLLPRI, on_mountinfo, m);
                if (r < 0)
                        return log_error_errno(r, "cannot watch /proc/self/mountinfo: %m");
        }
        return 0;
}

void watch_done(Manager *m) {
        while (m->watch_dirs)
                watch_dir_unlink(m, m->watch_dirs);
        hashmap_done(&m->watch_dirs_by_wd);
        watch_tree_done(m);
        while (m->watch_waits) {
                WatchDir *w = m->watch_waits;

                m->watch_waits = w->next;
                watch_dir_free(w);
        }
        strv_free_n(m->watch_missing, m->n_watch_missing);
        m->watch_missing = NULL;
        m->n_watch_missing = 0;
        m->watch_resync = sd_event_source_disable_unref(m->watch_resync);
        m->mountinfo_source = sd_event_source_disable_unref(m->mountinfo_source);
        m->inotify_wait_source = sd_event_source_disable_unref(m->inotify_wait_source);
        m->inotify_source = sd_event_source_disable_unref(m->inotify_source);
        if (m->inotify_fd >= 0)
                close(m->inotify_fd);
        if (m->inotify_wait_fd >= 0)
                close(m->inotify_wait_fd);
        if (m->mountinfo_fd >= 0)
                close(m->mountinfo_fd);
        m->inotify_fd = m->inotify_wait_fd = m->mountinfo_fd = -1;
}
