/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "manager.h"
#include "schedule.h"
#include "thread.h"
#include "unsparse.h"

/* Passes and trims run on their own threads, one per running job, so the
 * event loop never waits on image I/O. A thread shares only the Job's atomic
 * fields with the loop and wakes it through an eventfd: at most every
 * PROGRESS_INTERVAL for progress, and once when it is finished. */

#define PROGRESS_INTERVAL_USEC (250 * USEC_PER_MSEC)

const char *job_kind_to_string(JobKind k) {
        return k == JOB_TRIM ? "trim" : k == JOB_UNSPARSE ? "set-sparse" : "reclaim";
}

double job_rate(const Job *j, uint64_t done, uint64_t now) {
        uint64_t elapsed;

        if (!j->running || now <= j->start_monotonic)
                return 0;
        elapsed = now - j->start_monotonic;
        return (double) done * (double) USEC_PER_SEC / (double) elapsed;
}

Job *job_free(Job *j) {
        if (!j)
                return NULL;
        free(j->target);
        free(j->path);
        strv_free_n(j->local_mounts, j->n_local_mounts);
        pass_report_done(&j->report);
        pass_options_done(&j->options);
        trim_mounts_free(j->trim_mounts, j->n_trim_mounts);
        free(j->trim_results);
        free(j->trim_skipped);
        sd_bus_message_unref(j->request);
        free(j);
        return NULL;
}

void worker_wake(Manager *m) {
        uint64_t one = 1;

        /* Can only fail when the counter is about to overflow: the loop is awake anyway. */
        (void) !write(m->worker_efd, &one, sizeof one);
}

static void job_progress(uint64_t done, uint64_t total, void *userdata) {
        Job *j = userdata;
        uint64_t now = usec_now(CLOCK_MONOTONIC);

        atomic_store(&j->done, done);
        atomic_store(&j->total, total);
        if (now - j->last_wakeup >= PROGRESS_INTERVAL_USEC) {
                j->last_wakeup = now;
                worker_wake(j->manager);
        }
}

static void job_run_trim(Job *j) {
        for (size_t i = 0; i < j->n_trim_mounts; i++) {
                TrimResult *res = &j->trim_results[i];

                atomic_store(&j->done, 0);
                res->error = trim_run(j->trim_mounts[i].path, j->trim_chunk, j->trim_pause_usec, &j->cancel,
                                      job_progress, j, &res->trimmed);
                if (res->error == -ECANCELED) {
                        for (size_t k = i + 1; k < j->n_trim_mounts; k++)
                                j->trim_results[k].error = -ECANCELED;
                        break;
                }
        }
}

static void *job_thread(void *userdata) {
        Job *j = userdata;

        if (j->kind == JOB_RECLAIM && !j->path)
                j->error = -ENOMEM;     /* reported as the pass's error */
        else if (j->kind == JOB_RECLAIM)
                j->error = pass_run(j->path, &j->options, &j->report);
        else if (j->kind == JOB_TRIM)
                job_run_trim(j);
        else
                j->error = unsparse_file(j->path, j->options.beneath, &j->cancel);
        atomic_store(&j->finished, true);
        worker_wake(j->manager);
        return NULL;
}

static int job_start(Manager *m, Job *j) {
        int r;

        j->running = true;
        j->start_realtime = usec_now(CLOCK_REALTIME);
        j->start_monotonic = usec_now(CLOCK_MONOTONIC);
        j->last_wakeup = j->start_monotonic;
        if (j->kind == JOB_RECLAIM) {
                j->options.cancel = &j->cancel;
                j->options.progress = job_progress;
                j->options.userdata = j;
                m->n_running_reclaims++;
        } else if (j->kind == JOB_TRIM)
                m->trim_running = true;

        r = thread_spawn(&j->thread, job_thread, j);
        if (r < 0) {
                log_error_errno(r, "cannot start a worker thread: %m");
                if (j->kind == JOB_RECLAIM) {
                        m->n_running_reclaims--;
                        pass_report_set(&j->report, PASS_ERROR, "cannot start a worker thread: %s", strerror(-r));
                } else if (j->kind == JOB_TRIM)
                        m->trim_running = false;
                j->running = false;
                j->error = r;
                return r;
        }
        return 0;
}

/* The devices of the running reclaims, for maxParallel per host file
 * system; few, so a queue of thousands is scanned once per dispatch. */
static size_t running_devices(Manager *m, uint64_t **ret) {
        uint64_t *devs = calloc(MAX(m->n_running_reclaims, 1u), sizeof *devs);
        size_t n = 0;

        for (Job *j = m->jobs; devs && j; j = j->next)
                if (j->running && j->kind == JOB_RECLAIM && n < m->n_running_reclaims)
                        devs[n++] = j->disk ? j->disk->dev : 0;
        *ret = devs;
        return n;
}

void worker_dispatch(Manager *m) {
        _cleanup_free_ uint64_t *devs = NULL;
        size_t n_devs;

        if (m->stopping)
                return;
        n_devs = running_devices(m, &devs);
        if (!devs)
                return;         /* out of memory: the next job's end dispatches again */
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next;
                if (j->running)
                        continue;
                if (j->kind == JOB_RECLAIM &&
                    !schedule_device_has_room(devs, n_devs, j->disk ? j->disk->dev : 0,
                                              m->config->reclaim.max_parallel))
                        continue;
                if (j->kind == JOB_TRIM && m->trim_running)
                        continue;
                /* Its probe holds the image open: the pass's lease would fail. */
                if (j->disk && disk_probing(j->disk))
                        continue;
                if (j->kind == JOB_RECLAIM && j->disk)
                        manager_prepare_reclaim(m, j);
                if (job_start(m, j) < 0) {
                        manager_unlink_job(m, j);
                        manager_job_finished(m, j);
                } else if (j->kind == JOB_RECLAIM) {
                        uint64_t *p = reallocarray(devs, n_devs + 1, sizeof *devs);

                        if (!p)
                                return;
                        devs = p;
                        devs[n_devs++] = j->disk ? j->disk->dev : 0;
                }
        }
}

static int on_dispatch_defer(sd_event_source *s, void *userdata) {
        worker_dispatch(userdata);
        return 0;
}

void worker_dispatch_soon(Manager *m) {
        int r;

        if (!m->event) {
                worker_dispatch(m);
                return;
        }
        if (m->dispatch_defer)
                r = sd_event_source_set_enabled(m->dispatch_defer, SD_EVENT_ONESHOT);
        else {
                r = sd_event_add_defer(m->event, &m->dispatch_defer, on_dispatch_defer, m);
                /* After the timers and watches that may queue more. */
                if (r >= 0)
                        r = sd_event_source_set_priority(m->dispatch_defer, SD_EVENT_PRIORITY_IDLE);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->dispatch_defer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                worker_dispatch(m);
}

/* Joins one finished job's thread and hands the job to the manager. */
static void job_reap(Manager *m, Job *j) {
        pthread_join(j->thread, NULL);
        j->running = false;
        if (j->kind == JOB_RECLAIM)
                m->n_running_reclaims--;
        else if (j->kind == JOB_TRIM)
                m->trim_running = false;
        manager_unlink_job(m, j);
        manager_job_finished(m, j);
}

static void emit_progress(Manager *m, Job *j, uint64_t now) {
        uint64_t done = atomic_load(&j->done);

        if (done == j->last_signal_done || now - j->last_signal < PROGRESS_INTERVAL_USEC)
                return;
        j->last_signal = now;
        j->last_signal_done = done;
        control_emit_job_progress(m, j, job_rate(j, done, now));
}

static int on_worker_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        uint64_t v, now = usec_now(CLOCK_MONOTONIC);
        bool changed = false;

        (void) !read(fd, &v, sizeof v);
        changed = manager_reap_probes(m);
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next;
                if (!j->running)
                        continue;
                if (atomic_load(&j->finished)) {
                        job_reap(m, j);
                        changed = true;
                } else
                        emit_progress(m, j, now);
        }
        if (changed)
                worker_dispatch_soon(m);
        manager_state_changed(m);
        return 0;
}

int worker_setup(Manager *m) {
        int r;

        m->worker_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->worker_efd < 0)
                return log_error_errno(errno, "eventfd: %m");
        r = sd_event_add_io(m->event, &m->worker_source, m->worker_efd, EPOLLIN, on_worker_event, m);
        if (r < 0)
                return log_error_errno(r, "cannot watch the worker eventfd: %m");
        /* After inotify: the close of a pass's own descriptor is seen while
         * the image is still marked as reclaiming (watch.c ignores it then). */
        r = sd_event_source_set_priority(m->worker_source, SD_EVENT_PRIORITY_NORMAL + 10);
        if (r < 0)
                return log_error_errno(r, "cannot set the worker priority: %m");
        return 0;
}

void worker_stop_all(Manager *m) {
        for (Job *j = m->jobs; j; j = j->next)
                if (j->running)
                        atomic_store(&j->cancel, true);
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next;
                if (j->running)
                        job_reap(m, j);
        }
}

void worker_done(Manager *m) {
        m->worker_source = sd_event_source_disable_unref(m->worker_source);
        if (m->worker_efd >= 0)
                close(m->worker_efd);
        m->worker_efd = -1;
}
