/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
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
};

static void watch_dir_free(WatchDir *w) {
        free(w->path);
        free(w);
}

static WatchDir *watch_dir_by_wd(Manager *m, int wd) {
        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                if (w->wd == wd)
                        return w;
        return NULL;
}

/* By the configured path, or where it leads: a writer that opened the image
 * through a symlink shows up in the target's folder. */
static Disk *disk_by_path(Manager *m, const char *path) {
        for (size_t i = 0; i < m->n_disks; i++)
                if (strcmp(m->disks[i]->path, path) == 0)
                        return m->disks[i];
        for (size_t i = 0; i < m->n_disks; i++)
                if (m->disks[i]->real_path && strcmp(m->disks[i]->real_path, path) == 0)
                        return m->disks[i];
        return NULL;
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

static bool is_regular(const char *path) {
        struct stat st;

        return stat(path, &st) >= 0 && S_ISREG(st.st_mode);
}

static int scan_watch(Manager *m, const WatchConfig *w) {
        _cleanup_(closedirp) DIR *dir = opendir(w->dir);
        struct dirent *de;

        if (!dir)
                return log_warning_errno(errno, "[watch.%s]: cannot read %s: %m", w->name, w->dir);
        while ((de = readdir(dir))) {
                _cleanup_free_ char *path = NULL;

                if (fnmatch(w->pattern, de->d_name, FNM_PERIOD) != 0)
                        continue;
                if (asprintf(&path, "%s/%s", w->dir, de->d_name) < 0)
                        return -ENOMEM;
                if (disk_by_path(m, path) || !is_regular(path))
                        continue;
                (void) add_watch_image(m, w, de->d_name, true);
        }
        return 0;
}

/* A watch image whose [watch] is gone, whose name no longer matches, or
 * whose file is gone is dropped; the others take their section's settings. */
static void refresh_watch_images(Manager *m) {
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];
                _cleanup_free_ char *dir = NULL;
                const char *slash = strrchr(d->path, '/');
                const WatchConfig *w;

                if (strncmp(d->origin, "watch.", 6) != 0 || !slash)
                        continue;
                dir = strndup(d->path, (size_t) (slash - d->path));
                w = dir ? watch_for_file(m, dir, slash + 1) : NULL;
                if (!w || strcmp(d->origin + 6, w->name) != 0 || !is_regular(d->path)) {
                        log_info("%s: no longer watched", d->path);
                        manager_drop_disk(m, d);
                        continue;
                }
                d->settings = w->reclaim;
                d->config_sparse = w->sparse;
        }
}

/* ---- inotify watches ---- */

static void ensure_dir(Manager *m, const char *path) {
        WatchDir *w;
        int wd;

        wd = inotify_add_watch(m->inotify_fd, path, WATCH_MASK);
        if (wd < 0) {
                log_warning_errno(errno, "cannot watch %s: %m", path);
                return;
        }
        w = watch_dir_by_wd(m, wd);
        if (w) {
                w->marked = true;
                return;
        }
        w = calloc(1, sizeof *w);
        if (!w || !(w->path = strdup(path))) {
                free(w);
                log_error("out of memory watching %s", path);
                return;
        }
        w->wd = wd;
        w->marked = true;
        w->next = m->watch_dirs;
        m->watch_dirs = w;
}

static void ensure_parent(Manager *m, const char *path) {
        _cleanup_free_ char *dir = NULL;
        const char *slash = strrchr(path, '/');

        if (!slash)
                return;
        dir = slash == path ? strdup("/") : strndup(path, (size_t) (slash - path));
        if (dir)
                ensure_dir(m, dir);
}

int watch_sync(Manager *m) {
        for (WatchDir *w = m->watch_dirs; w; w = w->next)
                w->marked = false;
        for (size_t i = 0; i < m->n_disks; i++) {
                const Disk *d = m->disks[i];

                if (strcmp(d->origin, "disk") != 0)
                        continue;
                ensure_parent(m, d->path);
                if (d->real_path && strcmp(d->real_path, d->path) != 0)
                        ensure_parent(m, d->real_path);
        }
        for (size_t i = 0; i < m->config->n_watches; i++)
                ensure_dir(m, m->config->watches[i].dir);
        for (WatchDir **p = &m->watch_dirs; *p;) {
                WatchDir *w = *p;

                if (w->marked) {
                        p = &w->next;
                        continue;
                }
                (void) inotify_rm_watch(m->inotify_fd, w->wd);
                *p = w->next;
                watch_dir_free(w);
        }

        refresh_watch_images(m);
        for (size_t i = 0; i < m->config->n_watches; i++)
                (void) scan_watch(m, &m->config->watches[i]);
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
        if (wc && is_regular(path))
                /* A file being created is probed once its writer closes it and the idle pass runs. */
                (void) add_watch_image(m, wc, name, complete);
}

static void handle_event(Manager *m, const struct inotify_event *ev, Disk *self) {
        _cleanup_free_ char *path = NULL;
        WatchDir *w;
        Disk *d;

        if (ev->mask & IN_Q_OVERFLOW) {
                log_warning("inotify queue overflow: rescanning the watched folders");
                (void) watch_sync(m);
                return;
        }
        w = watch_dir_by_wd(m, ev->wd);
        if (!w)
                return;
        if (ev->mask & IN_IGNORED) {
                /* The folder itself went away: its images are missing until a reload finds it again. */
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
        if (m->inotify_fd < 0)
                return log_error_errno(errno, "inotify_init1: %m");
        r = sd_event_add_io(m->event, &m->inotify_source, m->inotify_fd, EPOLLIN, on_inotify, m);
        if (r < 0)
                return log_error_errno(r, "cannot watch the inotify descriptor: %m");
        return 0;
}

void watch_done(Manager *m) {
        while (m->watch_dirs) {
                WatchDir *w = m->watch_dirs;

                m->watch_dirs = w->next;
                watch_dir_free(w);
        }
        m->inotify_source = sd_event_source_disable_unref(m->inotify_source);
        if (m->inotify_fd >= 0)
                close(m->inotify_fd);
        m->inotify_fd = -1;
}
