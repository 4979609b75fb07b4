/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "manager.h"
#include "schedule.h"
#include "watch.h"

/* The job queue: reclaim, trim and set-sparse jobs wait here, oldest first,
 * until worker.c starts them. */

unsigned manager_active_jobs(Manager *m) {
        unsigned n = 0;

        for (Job *j = m->jobs; j; j = j->next)
                if (j->running)
                        n++;
        return n;
}

Job *manager_find_job(Manager *m, uint64_t id) {
        for (Job *j = m->jobs; j; j = j->next)
                if (j->id == id)
                        return j;
        return NULL;
}

static void job_append(Manager *m, Job *j) {
        j->next = NULL;
        if (m->jobs_last)
                m->jobs_last->next = j;
        else
                m->jobs = j;
        m->jobs_last = j;
}

void manager_unlink_job(Manager *m, Job *j) {
        Job *prev = NULL;

        for (Job **p = &m->jobs; *p; prev = *p, p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        if (m->jobs_last == j)
                                m->jobs_last = prev;
                        j->next = NULL;
                        return;
                }
}

static int queue_pass(Manager *m, Disk *d, JobTrigger trigger, bool dry_run, DiscardMode discard, bool compact,
                      Job **ret) {
        Job *j;

        if (d->job && d->job->kind != JOB_RECLAIM)
                return -EBUSY;
        if (d->job) {
                if (compact && !d->job->running) {
                        /* Not started yet: it becomes the pass that was asked for. */
                        d->job->compact_request = true;
                        d->job->trigger = TRIGGER_MANUAL;
                        d->job->dry_run_request = false;
                }
                /* A queued dry run becomes the real pass asked for (a real pass
                 * measures too); it answered a real request as a dry run. */
                if (!dry_run && d->job->dry_run_request && !d->job->running) {
                        d->job->dry_run_request = false;
                        if (trigger == TRIGGER_MANUAL)
                                d->job->trigger = TRIGGER_MANUAL;
                }
                *ret = d->job;
                return 0;
        }
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        *j = (Job) { .manager = m, .id = ++m->next_job_id, .kind = JOB_RECLAIM, .trigger = trigger, .disk = d,
                     .discard_request = discard, .dry_run_request = dry_run, .compact_request = compact };
        j->target = strdup(d->name);
        if (!j->target)
                return job_free(j), -ENOMEM;
        /* maxParallel counts per host file system: which one it is on now. */
        struct stat st;
        if (stat(d->path, &st) >= 0)
                d->dev = (uint64_t) st.st_dev;
        d->job = j;
        schedule_disk_cancel(d);
        watch_disarm_idle(d);
        job_append(m, j);
        worker_dispatch_soon(m);
        manager_state_changed(m);
        *ret = j;
        return 0;
}

int manager_queue_reclaim(Manager *m, Disk *d, JobTrigger trigger, bool dry_run, DiscardMode discard, Job **ret) {
        return queue_pass(m, d, trigger, dry_run, discard, false, ret);
}

int manager_queue_compact(Manager *m, Disk *d, Job **ret) {
        if (disk_watch_only(d))
                return -EPERM;
        /* A running pass has its options already: only a queued one can still change. */
        if (d->job && d->job->kind == JOB_RECLAIM && d->job->running && !d->job->options.compact)
                return -EBUSY;
        return queue_pass(m, d, TRIGGER_MANUAL, false, _DISCARD_MODE_INVALID, true, ret);
}

/* Every other managed or watched image: a differencing child of this one
 * may be among them (the pass also looks in the image's own folder). */
static char **related_images(Manager *m, const Disk *d) {
        PassOptions o = { .related_images = calloc(m->n_disks + 1, sizeof(char *)) };
        size_t n = 0;

        for (size_t i = 0; o.related_images && i < m->n_disks; i++)
                if (m->disks[i] != d && m->disks[i]->path && !(o.related_images[n++] = strdup(m->disks[i]->path))) {
                        log_warning("out of memory listing the images a differencing child may be among");
                        pass_options_done(&o);
                }
        return o.related_images;
}

void manager_prepare_reclaim(Manager *m, Job *j) {
        Disk *d = j->disk;
        DiscardMode discard = j->discard_request >= 0 ? j->discard_request : d->settings.discard;
        bool dry_run = j->dry_run_request;

        /* sparse=false and discard=none: watched and reported, never modified. */
        if (!disk_effective_sparse(d) || discard == DISCARD_NONE)
                dry_run = true;
        j->estimate = disk_watch_only(d);
        if (j->estimate) {
                struct stat st = {};

                /* Taken before it reads: a change during the estimate makes the next one due. */
                j->have_stamp = stat(d->path, &st) >= 0;
                j->stamp_size = (uint64_t) st.st_size;
                j->stamp_mtime_nsec = (int64_t) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        }
        if (discard == DISCARD_NONE)
                discard = DISCARD_SAFE;
        free(j->path);
        j->path = strdup(d->path);
        pass_options_done(&j->options);
        /* The fingerprint is of a complete round (resume 0: the shortcut for
         * an unchanged image, never for a person's request) or of the pass
         * that stopped at the resume point (which holds only while the
         * image is unchanged since). A resume point without one (a skipped
         * or failed pass since, an older state file) is not trusted. */
        bool resume = !dry_run && d->record.resume_offset > 0 && d->record.have_fingerprint;
        bool shortcut = j->trigger != TRIGGER_MANUAL && !dry_run && d->record.resume_offset == 0 &&
                        d->record.have_fingerprint;
        if (shortcut)
                j->unchanged_since = d->record.fingerprint;
        if (resume)
                j->resume_since = d->record.fingerprint;
        j->options = (PassOptions) {
                .discard = discard,
                .format = d->settings.format,
                .dry_run = dry_run,
                .min_hole = d->settings.min_hole,
                /* Asked for by a person: any win is worth it. */
                .min_reclaim = j->trigger == TRIGGER_MANUAL ? 0 : d->settings.min_reclaim,
                .io_limit = d->settings.io_limit,
                .max_pass_usec = d->settings.max_pass_time_usec,
                .resume_offset = resume ? d->record.resume_offset : 0,
                .resume_since = resume ? &j->resume_since : NULL,
                .compact = j->compact_request || d->settings.compact,
                .beneath = d->beneath,
                /* Only the free tier looks for differencing children; the
                 * list copies every other image's path (O(images) a pass). */
                .related_images = discard == DISCARD_FREE ? related_images(m, d) : NULL,
                .unchanged_since = shortcut ? &j->unchanged_since : NULL,
        };
        /* A copy: a reload may free the configuration while the pass runs.
         * Without it (out of memory) no mount counts as declared local. */
        strv_free_n(j->local_mounts, j->n_local_mounts);
        j->n_local_mounts = 0;
        j->local_mounts = strv_copy_n(m->config->local_mounts, m->config->n_local_mounts);
        if (j->local_mounts)
                j->n_local_mounts = m->config->n_local_mounts;
        j->options.local_mounts = j->local_mounts;
        j->options.n_local_mounts = j->n_local_mounts;
        j->started = true;
        d->written = false;
        watch_disarm_idle(d);
}

/* "/ /home": a trim job's target as ListJobs shows it. */
static char *join_mount_paths(const TrimMount *tm, size_t n) {
        size_t len = 1;
        char *s;

        for (size_t i = 0; i < n; i++)
                len += strlen(tm[i].path) + 1;
        s = calloc(1, len);
        for (size_t i = 0; s && i < n; i++) {
                if (i > 0)
                        strcat(s, " ");
                strcat(s, tm[i].path);
        }
        return s;
}

int manager_queue_unsparse(Manager *m, Disk *d, sd_bus_message *request, Job **ret) {
        Job *j;

        if (d->job)
                return -EBUSY;
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        *j = (Job) { .manager = m, .id = ++m->next_job_id, .kind = JOB_UNSPARSE, .trigger = TRIGGER_MANUAL,
                     .disk = d, .started = true };
        j->target = strdup(d->name);
        j->path = strdup(d->path);
        if (!j->target || !j->path)
                return job_free(j), -ENOMEM;
        j->options.beneath = d->beneath;
        j->request = sd_bus_message_ref(request);
        d->job = j;
        schedule_disk_cancel(d);
        watch_disarm_idle(d);
        job_append(m, j);
        worker_dispatch(m);
        manager_state_changed(m);
        *ret = j;
        return 0;
}

/* Appends text to a "; "-joined list. */
static int append_reason(char **list, const char *text) {
        char *s;

        if (asprintf(&s, "%s%s%s", *list ? *list : "", *list ? "; " : "", text) < 0)
                return -ENOMEM;
        free(*list);
        *list = s;
        return 0;
}

/* The configured [trim] mounts that are mount points now. Mounts come and
 * go, so one that is not is no reason to trim none of the others: it is
 * left out of this run, with a warning naming it (every run, so a host that
 * is never looked at still says so), and *ret_skipped says why. */
static int configured_trim_mounts(char *const *paths, size_t n_paths, TrimMount **ret, size_t *ret_n,
                                  char **ret_skipped) {
        _cleanup_free_ char **valid = calloc(n_paths + 1, sizeof *valid);
        size_t k = 0;
        int r;

        if (!valid)
                return -ENOMEM;
        for (size_t i = 0; i < n_paths; i++) {
                _cleanup_free_ char *why = NULL;
                TrimMount *tm = NULL;
                size_t n = 0;

                r = trim_list_mounts(&paths[i], 1, &tm, &n, &why);
                trim_mounts_free(tm, n);
                if (r == -ENOENT || r == -EINVAL) {
                        const char *reason = why ? why : paths[i];

                        log_warning("trim: %s; left out of this trim ([trim] mounts=)", reason);
                        if (append_reason(ret_skipped, reason) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (r < 0)
                        return r;
                valid[k++] = paths[i];
        }
        if (k == 0)
                return -ENXIO;
        return trim_list_mounts(valid, k, ret, ret_n, NULL);
}

int manager_queue_trim(Manager *m, char **mounts, size_t n_mounts, bool all, char **ret_error, Job **ret) {
        const TrimConfig *t = &m->config->trim;
        TrimMount *tm = NULL;
        size_t n = 0;
        _cleanup_free_ char *skipped = NULL;
        Job *j;
        int r;

        *ret_error = NULL;
        if (n_mounts > 0)
                r = trim_list_mounts(mounts, n_mounts, &tm, &n, ret_error);
        else if (all || t->all)
                r = trim_list_all(&tm, &n);
        else if (t->n_mounts > 0) {
                r = configured_trim_mounts(t->mounts, t->n_mounts, &tm, &n, &skipped);
                if (r == -ENXIO) {
                        *ret_error = TAKE_PTR(skipped);
                        return r;
                }
        } else
                return -ENOENT;
        if (r < 0)
                return r;

        j = calloc(1, sizeof *j);
        if (!j) {
                trim_mounts_free(tm, n);
                return -ENOMEM;
        }
        *j = (Job) { .manager = m, .id = ++m->next_job_id, .kind = JOB_TRIM, .trigger = TRIGGER_MANUAL,
                     .trim_mounts = tm, .n_trim_mounts = n, .trim_chunk = t->chunk,
                     .trim_pause_usec = t->pause_usec, .started = true };
        j->trim_skipped = TAKE_PTR(skipped);
        j->trim_results = calloc(MAX(n, 1u), sizeof *j->trim_results);
        j->target = join_mount_paths(tm, n);
        if (!j->trim_results || !j->target)
                return job_free(j), -ENOMEM;
        job_append(m, j);
        worker_dispatch(m);
        manager_state_changed(m);
        *ret = j;
        return 0;
}

int manager_cancel_job(Manager *m, uint64_t id) {
        Job *j = manager_find_job(m, id);

        if (!j)
                return -ESRCH;
        if (j->running) {
                atomic_store(&j->cancel, true);
                return 0;
        }
        /* Never started: nothing to record but its end. */
        manager_unlink_job(m, j);
        j->started = false;
        manager_job_finished(m, j);
        manager_state_changed(m);
        return 0;
}
