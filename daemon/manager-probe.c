/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard.h"
#include "image.h"
#include "log.h"
#include "manager.h"
#include "thread.h"
#include "watch.h"

/* Reading an image's format and virtual size, for status before its first
 * pass. The image is untrusted (anything can appear in a watched folder) and
 * parsing it reads its whole BAT, so the probe runs on a worker thread of its
 * own, like a pass, and reports back through the loop's worker eventfd. A few
 * at a time: a folder of a thousand images must not start a thousand threads. */

#define PROBE_MAX_PARALLEL 2

struct Probe {
        Probe *prev, *next;     /* in the manager's list, oldest first */
        Manager *manager;
        Disk *disk;             /* NULL once the disk was dropped */
        char *path;
        DiskFormat configured;  /* the disk's format= setting */
        size_t beneath;         /* found by a [watch]: no symlink below its folder is followed */
        bool have_known;        /* `known` holds the file as our last pass left it */
        Fingerprint known;
        bool running;
        pthread_t thread;
        atomic_bool finished;

        /* Written by the thread before `finished`, read by the loop after. */
        int open_error;         /* negative errno of the open, 0 if it opened */
        int error;              /* of image_open() */
        char *message;
        char *real_path;
        ImageFormat format;
        uint64_t virtual_size;
        bool unchanged;         /* as `known`: the state's format and size stand */
};

static Probe *probe_free(Probe *p) {
        if (!p)
                return NULL;
        free(p->path);
        free(p->message);
        free(p->real_path);
        free(p);
        return NULL;
}

/* Both ends in O(1): a folder of thousands queues thousands at once. */
static void probe_append(Manager *m, Probe *p) {
        p->next = NULL;
        p->prev = m->probes_last;
        if (m->probes_last)
                m->probes_last->next = p;
        else
                m->probes = p;
        m->probes_last = p;
}

static void probe_unlink(Manager *m, Probe *p) {
        if (p->prev)
                p->prev->next = p->next;
        else
                m->probes = p->next;
        if (p->next)
                p->next->prev = p->prev;
        else
                m->probes_last = p->prev;
        p->prev = p->next = NULL;
}

/* The file is as our last pass left it (a writer cannot avoid changing
 * ctime): its format and virtual size on record still hold, and a restart
 * over thousands of images opens none of them. */
static bool probe_known_unchanged(const Probe *p) {
        struct stat st;

        if (!p->have_known || (p->beneath ? lstat(p->path, &st) : stat(p->path, &st)) < 0 ||
            !S_ISREG(st.st_mode))
                return false;
        return fingerprint_stat_matches(&p->known, &st);
}

static void *probe_thread(void *userdata) {
        Probe *p = userdata;
        Image *img = NULL;
        int fd, r;

        if (probe_known_unchanged(p)) {
                p->unchanged = true;
                p->real_path = realpath(p->path, NULL);
                atomic_store(&p->finished, true);
                worker_wake(p->manager);
                return NULL;
        }
        fd = guard_open_image_beneath(p->path, p->beneath, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                p->open_error = fd;
        else {
                p->real_path = realpath(p->path, NULL);
                r = image_open(fd, p->path, p->configured, &img, &p->message);
                p->error = r;
                if (r >= 0) {
                        p->format = img->format;
                        p->virtual_size = img->virtual_size;
                        image_free(img);
                }
                /* Closed before the loop hears of the end: the close's inotify
                 * event is then queued before the flush in probe_apply(). */
                close(fd);
        }
        atomic_store(&p->finished, true);
        worker_wake(p->manager);
        return NULL;
}

static void probe_apply(Manager *m, Probe *p) {
        Disk *d = p->disk;

        if (!d)
                return;
        if (p->open_error < 0) {
                d->missing = p->open_error == -ENOENT;
                if (p->open_error != -ENOENT)
                        log_debug_errno(p->open_error, "%s: cannot open to read its format: %m", d->path);
        } else {
                d->missing = false;
                disk_set_real_path(d, TAKE_PTR(p->real_path));
                /* Changed since our last pass while nobody watched (a
                 * restart after a wave of logoffs): the idle pass its
                 * writer's close would have brought, idleDelay from now. */
                if (p->have_known && !p->unchanged && !d->written) {
                        d->written = true;
                        (void) watch_arm_idle(d);
                }
                /* Unchanged: the record's format and virtual size stand. */
                if (!p->unchanged && p->error >= 0) {
                        d->record.format = (int) p->format;
                        d->record.virtual_size = p->virtual_size;
                } else if (!p->unchanged)
                        log_debug("%s: cannot read the image: %s", d->path,
                                  p->message ? p->message : strerror(-p->error));
        }
        /* Our own open and close are no writer's: read them while still probing. */
        watch_flush_self(m, d);
        d->probe = NULL;
}

static void probe_start(Manager *m, Probe *p) {
        int r;

        p->running = true;
        r = thread_spawn(&p->thread, probe_thread, p);
        if (r < 0) {
                log_warning_errno(r, "%s: cannot start the thread that reads its format: %m", p->path);
                p->running = false;
                if (p->disk)
                        p->disk->probe = NULL;
                probe_unlink(m, p);
                probe_free(p);
                return;
        }
        m->n_running_probes++;
}

static void probe_dispatch(Manager *m) {
        for (Probe *p = m->probes, *next; p && m->n_running_probes < PROBE_MAX_PARALLEL; p = next) {
                next = p->next;
                if (p->running)
                        continue;
                if (p->disk->job && p->disk->job->running) {
                        /* Our open would break its lease; the pass reads the format itself. */
                        p->disk->probe = NULL;
                        probe_unlink(m, p);
                        probe_free(p);
                        continue;
                }
                probe_start(m, p);
        }
}

void disk_probe(Disk *d) {
        Manager *m = d->manager;
        Probe *p;

        /* Never while a pass holds its lease: our open would break it. */
        if (d->job && d->job->running)
                return;
        /* One queued or running is enough: it opens the file as it is then. */
        if (d->probe)
                return;
        p = calloc(1, sizeof *p);
        if (p) {
                p->configured = d->settings.format;
                p->beneath = d->beneath;
                p->have_known = d->record.have_fingerprint && d->record.format >= 0 && d->record.virtual_size > 0;
                p->known = d->record.fingerprint;
        }
        if (!p || !(p->path = strdup(d->path))) {
                free(p);
                log_error("%s: out of memory reading its format", d->path);
                return;
        }
        p->manager = m;
        p->disk = d;
        d->probe = p;
        probe_append(m, p);
        probe_dispatch(m);
}

bool disk_probing(const Disk *d) {
        return d->probe && d->probe->running;
}

void disk_probe_forget(Disk *d) {
        Probe *p = d->probe;

        if (!p)
                return;
        d->probe = NULL;
        p->disk = NULL;
        if (!p->running) {
                probe_unlink(d->manager, p);
                probe_free(p);
        }
}

static void probe_reap(Manager *m, Probe *p) {
        pthread_join(p->thread, NULL);
        p->running = false;
        m->n_running_probes--;
        probe_unlink(m, p);
        if (m->stopping) {
                if (p->disk)
                        p->disk->probe = NULL;
        } else
                probe_apply(m, p);
        probe_free(p);
}

bool manager_reap_probes(Manager *m) {
        bool changed = false;
        unsigned running = m->n_running_probes;

        /* The running ones are the few oldest (they start in order): the
         * walk ends once all were seen, not at the end of a long queue. */
        for (Probe *p = m->probes, *next; p && running > 0; p = next) {
                next = p->next;
                if (!p->running)
                        continue;
                running--;
                if (atomic_load(&p->finished)) {
                        probe_reap(m, p);
                        changed = true;
                }
        }
        if (changed && !m->stopping)
                probe_dispatch(m);
        return changed;
}

void manager_stop_probes(Manager *m) {
        /* A probe cannot be interrupted, but it only reads: a bounded wait. */
        while (m->probes) {
                Probe *p = m->probes;

                if (p->running)
                        probe_reap(m, p);
                else {
                        if (p->disk)
                                p->disk->probe = NULL;
                        probe_unlink(m, p);
                        probe_free(p);
                }
        }
}
