/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "schedule.h"
#include "watch.h"

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

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

struct WatchDir {
        WatchDir *next;
        char *path;
        int wd;
        bool marked;
        /* The folder the watch was put on: a path that now leads to another
         * (a file system mounted on it or off it) is watched afresh. */
        dev_t dev;
        ino_t ino;
};

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

static WatchDir *watch_dir_by_wd(Manager *m, int wd) {
        return watch_dir_in(m->watch_dirs, wd);
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

/* ---- images of [watch] folders ---- */

static const WatchConfig *watch_for_file(Manager *m, const char *dir, const char *file) {
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];

                if (strcmp(w->dir, dir) == 0 && fnmatch(w->pattern, file, FNM_PERIOD) == 0)
                        return w;
        }
        return NULL;
}

static int add_watch_image(Manager *m, const WatchConfig *w, const char *file, bool probe) {
        _cleanup_free_ char *name = NULL, *path = NULL, *origin = NULL;
        Disk *d;
        int r;

        if (asprintf(&name, "%s/%s", w->name, file) < 0 || asprintf(&path, "%s/%s", w->dir, file) < 0 ||
            asprintf(&origin, "watch.%s", w->name) < 0)
                return -ENOMEM;
        r = manager_add_disk(m, name, path, origin, w->sparse, &w->reclaim, &d);
        if (r < 0)
                return log_warning_errno(r, "cannot add %s: %m", path);
        log_info("%s: found by [watch.%s]", path, w->name);
        if (probe)
                disk_probe(d);
        return schedule_disk(d);
}

/* lstat(): a symlink is no regular file here. */
static bool is_regular_nofollow(const char *path) {
        struct stat st;

        return lstat(path, &st) >= 0 && S_ISREG(st.st_mode);
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

/* The [disk] that names the file at path, if any. */
static Disk *configured_disk_naming(Manager *m, const char *path) {
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
        d = configured_disk_naming(m, path);
        if (d) {
                log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, 0,
                               "%s: named by [disk.%s] and matched by [watch.%s]: managed as [disk.%s] only", path,
                               d->name, w->name, d->name);
                return false;
        }
        return true;
}

static int scan_watch(Manager *m, const WatchConfig *w, bool loud) {
        _cleanup_(closedirp) DIR *dir = opendir(w->dir);
        struct dirent *de;

        if (!dir)
                return log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, errno, "[watch.%s]: cannot read %s: %m",
                                      w->name, w->dir);
        while ((de = readdir(dir))) {
                _cleanup_free_ char *path = NULL;

                if (fnmatch(w->pattern, de->d_name, FNM_PERIOD) != 0)
                        continue;
                if (asprintf(&path, "%s/%s", w->dir, de->d_name) < 0)
                        return -ENOMEM;
                /* Not subfolders: a watch does not descend into them. */
                if ((de->d_type != DT_UNKNOWN && de->d_type != DT_REG && de->d_type != DT_LNK) ||
                    disk_by_path(m, path) || !watch_entry_wanted(m, w, path, loud))
                        continue;
                (void) add_watch_image(m, w, de->d_name, true);
        }
        return 0;
}

/* A watch image whose [watch] is gone, whose name no longer matches, whose
 * file is gone or was replaced by a symlink, or which a [disk] now names
 * is dropped; the others take their section's settings. */
static void refresh_watch_images(Manager *m) {
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];
                _cleanup_free_ char *dir = NULL;
                const char *slash = strrchr(d->path, '/');
                const WatchConfig *w;
                Disk *named;

                if (!disk_found_by_watch(d) || !slash)
                        continue;
                dir = strndup(d->path, (size_t) (slash - d->path));
                w = dir ? watch_for_file(m, dir, slash + 1) : NULL;
                if (!w || strcmp(d->origin + 6, w->name) != 0 || !is_regular_nofollow(d->path)) {
                        log_info("%s: no longer watched", d->path);
                        manager_drop_disk(m, d);
                        continue;
                }
                named = configured_disk_naming(m, d->path);
                if (named) {
                        log_warning("%s: named by [disk.%s] and matched by [watch.%s]: managed as [disk.%s] only, "
                                    "no longer as %s",
                                    d->path, named->name, w->name, named->name, d->name);
                        manager_drop_disk(m, d);
                        continue;
                }
                d->settings = w->reclaim;
                d->config_sparse = w->sparse;
        }
}

/* ---- inotify watches ---- */

static WatchDir *watch_dir_add(WatchDir **list, const char *path, int wd) {
        WatchDir *w = calloc(1, sizeof *w);

        if (!w || !(w->path = strdup(path))) {
                free(w);
                return NULL;
        }
        w->wd = wd;
        w->next = *list;
        *list = w;
        return w;
}

/* Drops the watches not marked since the last sweep. */
static void sweep(int fd, WatchDir **list) {
        for (WatchDir **p = list; *p;) {
                WatchDir *w = *p;

                if (w->marked) {
                        p = &w->next;
                        continue;
                }
                (void) inotify_rm_watch(fd, w->wd);
                *p = w->next;
                watch_dir_free(w);
        }
}

/* Watches the folder at path: 0, or a negative errno (logged when loud). */
static int ensure_dir(Manager *m, const char *path, bool loud) {
        struct stat st;
        WatchDir *w;
        int wd;

        wd = inotify_add_watch(m->inotify_fd, path, WATCH_MASK);
        if (wd < 0)
                return log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, errno, "cannot watch %s: %m", path);
        w = watch_dir_by_wd(m, wd);
        if (w) {
                w->marked = true;
                return 0;
        }
        w = watch_dir_add(&m->watch_dirs, path, wd);
        if (!w)
                return log_error_errno(ENOMEM, "out of memory watching %s", path);
        if (stat(path, &st) >= 0) {
                w->dev = st.st_dev;
                w->ino = st.st_ino;
        }
        w->marked = true;
        return 0;
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
                w = watch_dir_add(&m->watch_waits, p, wd);
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
static int ensure_dir_or_wait(Manager *m, const char *path, bool loud, char ***missing, size_t *n_missing) {
        int r = ensure_dir(m, path, false);

        if (r >= 0)
                return 0;
        if (r != -ENOENT && r != -ENOTDIR)
                return log_full_errno(loud ? LOG_WARNING : LOG_DEBUG, r, "cannot watch %s: %m", path);
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

/* Watches every folder that holds managed images, rescans the [watch]
 * folders, and waits for the missing ones. loud: at start and reload (the
 * state of everything is logged); rescans after a folder appeared or the
 * mount table changed log what changed only. */
static void sync_all(Manager *m, bool loud) {
        char **missing = NULL;
        size_t n_missing = 0;

        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                w->marked = false;
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
                        if (dir && ensure_dir_or_wait(m, dir, loud, &missing, &n_missing) == -ENOENT &&
                            (loud || !strv_has(m->watch_missing, m->n_watch_missing, dir)))
                                log_full_errno(loud ? LOG_WARNING : LOG_INFO, 0,
                                               "[disk.%s]: the folder %s does not exist: it is watched as soon as it "
                                               "appears", d->name, dir);
                }
        }
        for (size_t i = 0; i < m->config->n_watches; i++) {
                const WatchConfig *w = &m->config->watches[i];
                bool was_missing = strv_has(m->watch_missing, m->n_watch_missing, w->dir);
                int r = ensure_dir_or_wait(m, w->dir, loud, &missing, &n_missing);

                if (r >= 0) {
                        if (was_missing)
                                log_info("[watch.%s]: %s appeared, watching it", w->name, w->dir);
                } else if (r == -ENOENT && (loud || !was_missing))
                        log_warning("[watch.%s]: %s does not exist: the watch is inactive until it appears", w->name,
                                    w->dir);
        }
        sweep(m->inotify_fd, &m->watch_dirs);
        sweep(m->inotify_wait_fd, &m->watch_waits);
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
        refresh_watch_images(m);
        for (size_t i = 0; i < m->config->n_watches; i++)
                if (!strv_has(m->watch_missing, m->n_watch_missing, m->config->watches[i].dir))
                        (void) scan_watch(m, &m->config->watches[i], loud);
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
static void schedule_resync(Manager *m) {
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
 * mounted on it or unmounted from it) or a missing one is there. */
static bool dirs_changed(Manager *m) {
        struct stat st;

        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                if (stat(w->path, &st) < 0 || st.st_dev != w->dev || st.st_ino != w->ino)
                        return true;
        for (size_t i = 0; i < m->n_watch_missing; i++)
                if (stat(m->watch_missing[i], &st) >= 0)
                        return true;
        return false;
}

/* The kernel flags /proc/self/mountinfo with POLLPRI whenever the mount
 * table changes (and epoll stops reporting it once it was reported), so
 * mounts are noticed without polling. */
static int on_mountinfo(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        if (dirs_changed(m)) {
                log_debug("the mount table changed under a watched folder: rescanning");
                schedule_resync(m);
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
                schedule_resync(m);
        return 0;
}

/* ---- events ---- */

static void image_gone(Manager *m, Disk *d) {
        if (disk_running(d)) {
                /* The pass stops at its next check and ends cleanly. */
                log_info("%s: deleted or moved away during its pass, stopping the pass", d->path);
                atomic_store(&d->job->cancel, true);
        }
        watch_disarm_idle(d);
        if (strncmp(d->origin, "watch.", 6) == 0) {
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

static void image_appeared(Manager *m, WatchDir *w, const char *name, const char *path, bool complete) {
        Disk *d = disk_by_path(m, path);
        const WatchConfig *wc;

        if (d && disk_found_by_watch(d) && !is_regular_nofollow(path)) {
                /* Renamed over by a symlink (or anything but a file). */
                log_info("%s: no longer a regular file, no longer watched", path);
                manager_drop_disk(m, d);
                return;
        }
        if (!d && is_regular_nofollow(path))
                d = configured_disk_naming(m, path);
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
        wc = watch_for_file(m, w->path, name);
        if (wc && watch_entry_wanted(m, wc, path, true))
                /* A file being created is probed once its writer closes it and the idle pass runs. */
                (void) add_watch_image(m, wc, name, complete);
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
                /* The folder itself went away (or the file system it was on
                 * was unmounted): its images are missing until it is back,
                 * which the rescan waits for. */
                for (size_t i = m->n_disks; i > 0; i--) {
                        Disk *x = m->disks[i - 1];
                        size_t l = strlen(w->path);

                        if (strncmp(x->path, w->path, l) == 0 && x->path[l] == '/' && !strchr(x->path + l + 1, '/') &&
                            !x->missing)
                                image_gone(m, x);
                }
                for (WatchDir **p = &m->watch_dirs; *p; p = &(*p)->next)
                        if (*p == w) {
                                *p = w->next;
                                watch_dir_free(w);
                                break;
                        }
                schedule_resync(m);
                return;
        }
        if (ev->len == 0 || ev->name[0] == 0)
                return;
        if (asprintf(&path, "%s/%s", strcmp(w->path, "/") == 0 ? "" : w->path, ev->name) < 0)
                return;

        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
                image_appeared(m, w, ev->name, path, ev->mask & IN_MOVED_TO);
                return;
        }
        d = disk_by_path(m, path);
        if (!d)
                return;
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
                if (!d->missing)
                        image_gone(m, d);
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
        while (m->watch_dirs) {
                WatchDir *w = m->watch_dirs;

                m->watch_dirs = w->next;
                watch_dir_free(w);
        }
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
