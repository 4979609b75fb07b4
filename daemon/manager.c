/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "control.h"
#include "image.h"
#include "log.h"
#include "manager.h"
#include "notify.h"
#include "schedule.h"
#include "state.h"
#include "vhdreclaim-bus.h"
#include "watch.h"

/* MESSAGE_ID of the journal entry that ends every pass, so that
 * `journalctl MESSAGE_ID=ea14c430f41343d68ce827e9f617f432` lists them all.
 * The pass ID is a random UUID generated once for this purpose, the trim
 * ID a fixed 128-bit value chosen once; never change either (tests and
 * journal queries use them). Fields of the pass entry: VHDRECLAIM_DISK,
 * VHDRECLAIM_RESULT, VHDRECLAIM_RECLAIMED_BYTES, VHDRECLAIM_PATH; of the
 * trim entry: VHDRECLAIM_RESULT, VHDRECLAIM_TRIMMED_BYTES. */
#define PASS_END_MESSAGE_ID "ea14c430f41343d68ce827e9f617f432"
/* ... and of the entry that ends a trim job. */
#define TRIM_END_MESSAGE_ID "5f0bd2c33a4b4f7e9a61c0e8d2b7a914"

uint64_t usec_now(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* ---- disks ---- */

static const char *const disk_state_names[_DISK_STATE_MAX] = {
        [DISK_IDLE] = "idle",
        [DISK_QUEUED] = "queued",
        [DISK_RECLAIMING] = "reclaiming",
        [DISK_MISSING] = "missing",
        [DISK_ERROR] = "error",
};

const char *disk_state_to_string(DiskState s) {
        return s >= 0 && s < _DISK_STATE_MAX ? disk_state_names[s] : "unknown";
}

DiskState disk_state(const Disk *d) {
        if (d->job)
                return d->job->running ? DISK_RECLAIMING : DISK_QUEUED;
        if (d->missing)
                return DISK_MISSING;
        if (d->record.last_result >= 0 && pass_result_is_failure((PassResult) d->record.last_result))
                return DISK_ERROR;
        return DISK_IDLE;
}

bool disk_effective_sparse(const Disk *d) {
        return d->record.sparse_override >= 0 ? d->record.sparse_override : d->config_sparse;
}

static Disk *disk_free(Disk *d) {
        if (!d)
                return NULL;
        d->pass_timer = sd_event_source_disable_unref(d->pass_timer);
        d->idle_timer = sd_event_source_disable_unref(d->idle_timer);
        disk_record_done(&d->record);
        free(d->name);
        free(d->path);
        free(d->real_path);
        free(d->origin);
        free(d);
        return NULL;
}

void disk_probe(Disk *d) {
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        int fd, r;

        /* Never while a pass holds its lease: our open would break it. */
        if (d->job && d->job->running)
                return;
        fd = open(d->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                d->missing = errno == ENOENT;
                if (errno != ENOENT)
                        log_debug_errno(errno, "%s: cannot open to read its format: %m", d->path);
                return;
        }
        d->missing = false;
        free(d->real_path);
        d->real_path = realpath(d->path, NULL);
        r = image_open(fd, &img, &error);
        if (r >= 0) {
                d->record.format = (int) img->format;
                d->record.virtual_size = img->virtual_size;
                image_free(img);
        } else
                log_debug("%s: cannot read the image: %s", d->path, error ? error : strerror(-r));
        close(fd);
        watch_flush_self(d->manager, d);
}

Disk *manager_find_disk(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_disks; i++)
                if (strcmp(m->disks[i]->name, name) == 0)
                        return m->disks[i];
        /* Section names are case-insensitive. */
        for (size_t i = 0; i < m->n_disks; i++)
                if (strcasecmp(m->disks[i]->name, name) == 0)
                        return m->disks[i];
        return NULL;
}

int manager_add_disk(Manager *m, const char *name, const char *path, const char *origin, bool sparse,
                     const ReclaimSettings *settings, Disk **ret) {
        Disk *d, **nd;
        int r;

        if (manager_find_disk(m, name))
                return -EEXIST;
        nd = reallocarray(m->disks, m->n_disks + 1, sizeof *nd);
        if (!nd)
                return -ENOMEM;
        m->disks = nd;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        *d = (Disk) { .manager = m, .config_sparse = sparse, .settings = *settings };
        disk_record_init(&d->record);
        d->name = strdup(name);
        d->path = strdup(path);
        d->origin = strdup(origin);
        if (!d->name || !d->path || !d->origin) {
                disk_free(d);
                return -ENOMEM;
        }
        d->real_path = realpath(path, NULL);
        r = state_load_disk(m->state_dir_fd, name, &d->record);
        if (r == -EBADMSG)
                log_warning("%s: its state file is malformed, starting afresh", name);
        else if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "%s: cannot read its state: %m", name);
        if (r < 0)
                disk_record_init(&d->record);
        m->disks[m->n_disks++] = d;
        if (ret)
                *ret = d;
        return 0;
}

void manager_drop_disk(Manager *m, Disk *d) {
        for (size_t i = 0; i < m->n_disks; i++)
                if (m->disks[i] == d) {
                        memmove(m->disks + i, m->disks + i + 1, (m->n_disks - i - 1) * sizeof *m->disks);
                        m->n_disks--;
                        break;
                }
        d->removed = true;
        schedule_disk_cancel(d);
        watch_disarm_idle(d);
        if (d->job && d->job->running) {
                /* The job frees the disk when it ends. */
                atomic_store(&d->job->cancel, true);
                return;
        }
        if (d->job) {
                Job *j = d->job;

                manager_unlink_job(m, j);
                d->job = NULL;
                j->disk = NULL;
                job_free(j);
        }
        disk_free(d);
}

/* Bytes the holes of the file take once allocated. */
static int hole_bytes(int fd, uint64_t *ret) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        *ret = (uint64_t) st.st_size > (uint64_t) st.st_blocks * 512 ? (uint64_t) st.st_size - (uint64_t) st.st_blocks * 512
                                                                      : 0;
        return 0;
}

int disk_unsparse_check(Disk *d) {
        _cleanup_close_ int fd = -1;
        struct statvfs sv;
        uint64_t need = 0;
        int r;

        if (d->job)
                return -EBUSY;
        fd = open(d->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        r = hole_bytes(fd, &need);
        if (r < 0)
                return r;
        if (fstatvfs(fd, &sv) < 0)
                return -errno;
        /* Refused up front, so nothing is left half-allocated for lack of
         * space. Filling holes also costs the host file system metadata (a
         * fragmented image's new extents do not merge with their written
         * neighbours), hence the margin; unsparse_file() rolls back if even
         * that was not enough. */
        need += MAX(UINT64_C(1) << 20, need / 64);
        if ((uint64_t) sv.f_bavail * sv.f_frsize < need)
                return -ENOSPC;
        return 0;
}

uint64_t manager_reclaimed_total(Manager *m) {
        uint64_t total = 0;

        for (size_t i = 0; i < m->n_disks; i++)
                total += m->disks[i]->record.reclaimed_total;
        return total;
}

unsigned manager_active_jobs(Manager *m) {
        unsigned n = 0;

        for (Job *j = m->jobs; j; j = j->next)
                if (j->running)
                        n++;
        return n;
}

void manager_state_changed(Manager *m) {
        notify_update_status(m);
}

/* ---- jobs ---- */

Job *manager_find_job(Manager *m, uint64_t id) {
        for (Job *j = m->jobs; j; j = j->next)
                if (j->id == id)
                        return j;
        return NULL;
}

static void job_append(Manager *m, Job *j) {
        Job **p = &m->jobs;

        while (*p)
                p = &(*p)->next;
        *p = j;
}

void manager_unlink_job(Manager *m, Job *j) {
        for (Job **p = &m->jobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        j->next = NULL;
                        return;
                }
}

int manager_queue_reclaim(Manager *m, Disk *d, JobTrigger trigger, bool dry_run, DiscardMode discard, Job **ret) {
        Job *j;

        if (d->job && d->job->kind != JOB_RECLAIM)
                return -EBUSY;
        if (d->job) {
                *ret = d->job;
                return 0;
        }
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        *j = (Job) { .manager = m, .id = ++m->next_job_id, .kind = JOB_RECLAIM, .trigger = trigger, .disk = d,
                     .discard_request = discard, .dry_run_request = dry_run };
        j->target = strdup(d->name);
        if (!j->target)
                return job_free(j), -ENOMEM;
        d->job = j;
        schedule_disk_cancel(d);
        watch_disarm_idle(d);
        job_append(m, j);
        worker_dispatch(m);
        manager_state_changed(m);
        *ret = j;
        return 0;
}

void manager_prepare_reclaim(Manager *m, Job *j) {
        Disk *d = j->disk;
        DiscardMode discard = j->discard_request >= 0 ? j->discard_request : d->settings.discard;
        bool dry_run = j->dry_run_request;

        /* sparse=false and discard=none: watched and reported, never modified. */
        if (!disk_effective_sparse(d) || discard == DISCARD_NONE)
                dry_run = true;
        if (discard == DISCARD_NONE)
                discard = DISCARD_SAFE;
        free(j->path);
        j->path = strdup(d->path);
        j->options = (PassOptions) {
                .discard = discard,
                .dry_run = dry_run,
                .min_hole = d->settings.min_hole,
                /* Asked for by a person: any win is worth it. */
                .min_reclaim = j->trigger == TRIGGER_MANUAL ? 0 : d->settings.min_reclaim,
                .io_limit = d->settings.io_limit,
                .max_pass_usec = d->settings.max_pass_time_usec,
                .resume_offset = dry_run ? 0 : d->record.resume_offset,
        };
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

int manager_queue_trim(Manager *m, char **mounts, size_t n_mounts, bool all, Job **ret) {
        const TrimConfig *t = &m->config->trim;
        TrimMount *tm = NULL;
        size_t n = 0;
        const char *bad = NULL;
        Job *j;
        int r;

        if (n_mounts > 0)
                r = trim_list_mounts(mounts, n_mounts, &tm, &n, &bad);
        else if (all || t->all)
                r = trim_list_all(&tm, &n);
        else if (t->n_mounts > 0)
                r = trim_list_mounts(t->mounts, t->n_mounts, &tm, &n, &bad);
        else
                return -ENOENT;
        if (r == -ENOENT)
                return log_warning_errno(ENXIO, "trim: %s is on no mounted file system", bad ? bad : "?"), -ENXIO;
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

/* ---- the end of a job ---- */

static void log_pass_end(const Disk *d, const PassReport *rep) {
        char disk[512], result[64], reclaimed[64], path[4200], msg[4600];
        const char *fields[] = { "MESSAGE_ID=" PASS_END_MESSAGE_ID, disk, result, reclaimed, path, NULL };

        snprintf(disk, sizeof disk, "VHDRECLAIM_DISK=%s", d->name);
        snprintf(result, sizeof result, "VHDRECLAIM_RESULT=%s", pass_result_to_string(rep->result));
        snprintf(reclaimed, sizeof reclaimed, "VHDRECLAIM_RECLAIMED_BYTES=%" PRIu64, rep->reclaimed);
        snprintf(path, sizeof path, "VHDRECLAIM_PATH=%s", d->path);
        snprintf(msg, sizeof msg, "%s: %s%s, reclaimed %" PRIu64 " bytes%s%s", d->name,
                 pass_result_to_string(rep->result), rep->dry_run ? " (dry run)" : "", rep->reclaimed,
                 rep->message && *rep->message ? ": " : "", rep->message ? rep->message : "");
        log_fields(pass_result_is_failure(rep->result) ? LOG_WARNING : LOG_INFO, msg, fields);
}

static void record_pass(Disk *d, const Job *j) {
        const PassReport *rep = &j->report;
        DiskRecord *r = &d->record;
        uint64_t found = rep->stale_bytes + rep->zero_bytes + rep->free_bytes;

        if (rep->format_known) {
                r->format = (int) rep->format;
                r->virtual_size = rep->virtual_size;
        }
        if (rep->dry_run) {
                /* A dry run only measures. */
                if (!pass_result_is_failure(rep->result) && rep->result != PASS_SKIPPED_IN_USE)
                        r->reclaimable = found;
                return;
        }
        r->last_pass = j->start_realtime;
        r->last_result = (int) rep->result;
        free(r->last_message);
        r->last_message = strdup(rep->message ? rep->message : "");
        r->reclaimed_last = rep->reclaimed;
        r->reclaimed_total += rep->reclaimed;
        r->passes++;
        if (rep->result == PASS_SUCCESS || rep->result == PASS_NOTHING_TO_DO) {
                r->resume_offset = rep->resume_offset;
                if (rep->resume_offset == 0)
                        r->reclaimable = 0;
        } else if (rep->result == PASS_SKIPPED_THRESHOLD)
                r->reclaimable = found;
}

static void reclaim_finished(Manager *m, Job *j) {
        Disk *d = j->disk;
        _cleanup_free_ char *line = NULL;
        DiscardMode discard = j->options.discard;
        int r;

        if (d)
                d->job = NULL;
        if (!j->started) {
                control_emit_job_finished(m, j, "cancelled", "cancelled before it started", 0);
                goto done;
        }
        if (!j->report.message)
                pass_report_set(&j->report, PASS_ERROR, "%s", j->error < 0 ? strerror(-j->error) : "no report");
        if (!j->report.path)
                j->report.path = strdup(d ? d->path : "");

        if (d) {
                record_pass(d, j);
                if (!d->removed) {
                        r = state_save_disk(m->state_dir_fd, d->name, d->path, &d->record);
                        if (r < 0)
                                log_warning_errno(r, "%s: cannot save its state: %m", d->name);
                }
                log_pass_end(d, &j->report);
                /* Someone opened it during the pass: their close starts the idle timer again. */
                if (j->report.result == PASS_SKIPPED_IN_USE && !j->report.dry_run)
                        d->written = true;
        }
        r = history_format_line(&j->report, j->target, j->start_realtime, discard, &line);
        if (r >= 0)
                r = state_append_history(m->state_dir_fd, line);
        if (r < 0)
                log_warning_errno(r, "cannot append to the history: %m");
        control_emit_job_finished(m, j, pass_result_to_string(j->report.result), j->report.message,
                                  j->report.reclaimed);
done:
        if (d && d->removed)
                d = (Disk *) disk_free(d);
        else if (d && !m->stopping)
                (void) schedule_disk(d);
}

static TrimStatus *trim_status_for(Manager *m, const char *mount) {
        TrimStatus *n;

        for (size_t i = 0; i < m->n_trim_status; i++)
                if (strcmp(m->trim_status[i].mount, mount) == 0)
                        return &m->trim_status[i];
        n = reallocarray(m->trim_status, m->n_trim_status + 1, sizeof *n);
        if (!n)
                return NULL;
        m->trim_status = n;
        n = &m->trim_status[m->n_trim_status];
        *n = (TrimStatus) { .mount = strdup(mount), .last_result = strdup("") };
        if (!n->mount || !n->last_result) {
                free(n->mount);
                free(n->last_result);
                return NULL;
        }
        m->n_trim_status++;
        return n;
}

static void trim_finished(Manager *m, Job *j) {
        _cleanup_free_ char *msg = NULL;
        uint64_t total = 0;
        bool failed = false;
        size_t size = 0;
        FILE *f = open_memstream(&msg, &size);
        int r;

        for (size_t i = 0; j->started && i < j->n_trim_mounts; i++) {
                const TrimResult *res = &j->trim_results[i];
                TrimStatus *t = trim_status_for(m, j->trim_mounts[i].path);
                const char *result = res->error == 0 ? "success" : res->error == -ECANCELED ? "cancelled" : "error";

                total += res->trimmed;
                failed = failed || res->error != 0;
                if (f)
                        fprintf(f, "%s%s: %s, %" PRIu64 " bytes trimmed%s%s", i ? "; " : "", j->trim_mounts[i].path,
                                result, res->trimmed, res->error && res->error != -ECANCELED ? ": " : "",
                                res->error && res->error != -ECANCELED ? strerror(-res->error) : "");
                if (!t)
                        continue;
                t->last = j->start_realtime;
                t->trimmed_last = res->trimmed;
                t->trimmed_total += res->trimmed;
                free(t->last_result);
                t->last_result = strdup(result);
        }
        if (f)
                fclose(f);
        if (j->started) {
                char bytes[64], res_field[64];
                const char *fields[] = { "MESSAGE_ID=" TRIM_END_MESSAGE_ID, res_field, bytes, NULL };

                snprintf(bytes, sizeof bytes, "VHDRECLAIM_TRIMMED_BYTES=%" PRIu64, total);
                snprintf(res_field, sizeof res_field, "VHDRECLAIM_RESULT=%s", failed ? "error" : "success");
                log_fields(failed ? LOG_WARNING : LOG_INFO, msg ? msg : "trim finished", fields);
                r = state_save_trim(m->state_dir_fd, m->trim_status, m->n_trim_status);
                if (r < 0)
                        log_warning_errno(r, "cannot save the trim state: %m");
        }
        control_emit_job_finished(m, j, !j->started ? "cancelled" : failed ? "error" : "success",
                                  msg ? msg : "", total);
        if (!m->stopping)
                (void) schedule_trim(m);
}

static void unsparse_finished(Manager *m, Job *j) {
        Disk *d = j->disk;
        int r = j->started ? j->error : -ECANCELED;

        d->job = NULL;
        if (r >= 0 && !d->removed) {
                d->record.sparse_override = 0;
                r = state_save_disk(m->state_dir_fd, d->name, d->path, &d->record);
                if (r < 0)
                        log_warning_errno(r, "%s: cannot save its state: %m", d->name);
                r = 0;
        }
        if (r >= 0)
                log_info("%s: holes re-allocated, the image is no longer sparse", d->name);
        else
                log_warning_errno(r, "%s: re-allocating the holes failed: %m", d->name);
        /* The caller may have gone; its connection then refuses the reply. */
        if (r == -ENOSPC)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_NO_SPACE,
                                                  "The host file system ran out of space re-allocating \"%s\"; "
                                                  "the holes filled so far were punched again",
                                                  d->name);
        else if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_BUSY,
                                                  "\"%s\" is in use by another process; nothing was changed", d->name);
        else if (r < 0)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_FAILED,
                                                  "Re-allocating \"%s\" failed: %s", d->name, strerror(-r));
        else
                (void) sd_bus_reply_method_return(j->request, NULL);
        control_emit_job_finished(m, j, r >= 0 ? "success" : "error", r >= 0 ? "" : strerror(-r), 0);
        if (d->removed)
                disk_free(d);
        else if (!m->stopping)
                (void) schedule_disk(d);
}

void manager_job_finished(Manager *m, Job *j) {
        if (j->kind == JOB_RECLAIM)
                reclaim_finished(m, j);
        else if (j->kind == JOB_TRIM)
                trim_finished(m, j);
        else
                unsparse_finished(m, j);
        job_free(j);
}

/* ---- configuration ---- */

static void resolve_admin_group(Manager *m) {
        struct group *g;

        m->have_admin_gid = false;
        if (!m->config->admin_group[0])
                return;
        g = getgrnam(m->config->admin_group);
        if (!g) {
                log_notice("adminGroup \"%s\" does not exist: only root and uid %u may change state",
                           m->config->admin_group, (unsigned) geteuid());
                return;
        }
        m->admin_gid = g->gr_gid;
        m->have_admin_gid = true;
}

static bool disk_is_configured(const Disk *d) {
        return strcmp(d->origin, "disk") == 0;
}

/* Brings the [disk] images in line with m->config. */
static void apply_disks(Manager *m) {
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];
                const DiskConfig *dc;

                if (!disk_is_configured(d))
                        continue;
                dc = config_find_disk(m->config, d->name);
                if (!dc || strcmp(dc->path, d->path) != 0) {
                        log_info("%s: no longer configured%s", d->name, dc ? " at this path" : "");
                        manager_drop_disk(m, d);
                        continue;
                }
                d->settings = dc->reclaim;
                d->config_sparse = dc->sparse;
        }
        for (size_t i = 0; i < m->config->n_disks; i++) {
                const DiskConfig *dc = &m->config->disks[i];
                Disk *d;

                if (manager_find_disk(m, dc->name))
                        continue;
                if (manager_add_disk(m, dc->name, dc->path, "disk", dc->sparse, &dc->reclaim, &d) < 0) {
                        log_error("%s: cannot add %s", dc->name, dc->path);
                        continue;
                }
                disk_probe(d);
        }
}

static void schedule_all(Manager *m) {
        for (size_t i = 0; i < m->n_disks; i++)
                (void) schedule_disk(m->disks[i]);
        (void) schedule_trim(m);
}

static int messages_to_string(const ConfigMessages *msgs, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < msgs->n_items; i++)
                if (msgs->items[i].level == CONFIG_MESSAGE_ERROR)
                        fprintf(f, "%s%s", i ? "\n" : "", msgs->items[i].text);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

static void log_messages(const ConfigMessages *msgs) {
        for (size_t i = 0; i < msgs->n_items; i++)
                log_full_errno(msgs->items[i].level == CONFIG_MESSAGE_ERROR ? LOG_ERR : LOG_WARNING, 0, "%s",
                               msgs->items[i].text);
}

int manager_reload(Manager *m, char **errors) {
        ConfigMessages msgs = {};
        Config *c = NULL;
        int r;

        notify_reloading();
        log_info("reloading %s", m->config_path);
        r = config_load(m->config_path, &c, &msgs);
        log_messages(&msgs);
        if (r < 0) {
                if (errors) {
                        if (msgs.n_items == 0)
                                (void) asprintf(errors, "%s: %s", m->config_path, strerror(-r));
                        else
                                (void) messages_to_string(&msgs, errors);
                }
                config_messages_done(&msgs);
                log_error("the configuration stays as it was");
                notify_ready();
                return r;
        }
        config_messages_done(&msgs);

        if (strcmp(c->socket_path, m->config->socket_path) != 0 || strcmp(c->state_dir, m->config->state_dir) != 0)
                log_notice("[daemon] socket and stateDir take effect at the next start");
        config_free(m->config);
        m->config = c;
        resolve_admin_group(m);
        apply_disks(m);
        (void) watch_sync(m);
        schedule_all(m);
        worker_dispatch(m);
        log_info("configuration reloaded: %zu images", m->n_disks);
        notify_ready();
        manager_state_changed(m);
        return 0;
}

/* ---- signals ---- */

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("received %s, stopping", strsignal((int) si->ssi_signo));
        return sd_event_exit(m->event, 0);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata, NULL);
        return 0;
}

static int setup_signals(Manager *m) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        /* sd-bus writes with MSG_NOSIGNAL, but a peer gone mid-write must never kill us. */
        signal(SIGPIPE, SIG_IGN);
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        return r;
}

/* ---- life cycle ---- */

static int open_state_dir(Manager *m) {
        _cleanup_free_ char *p = strdup(m->state_dir);
        TrimStatus *t = NULL;
        size_t n = 0;
        int r;

        if (!p)
                return -ENOMEM;
        for (char *s = strchr(p + 1, '/');; s = strchr(s + 1, '/')) {
                if (s)
                        *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return log_error_errno(errno, "cannot create %s: %m", p);
                if (!s)
                        break;
                *s = '/';
        }
        m->state_dir_fd = open(m->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->state_dir_fd < 0)
                return log_error_errno(errno, "cannot open the state directory %s: %m", m->state_dir);
        r = state_load_trim(m->state_dir_fd, &t, &n);
        if (r == -EBADMSG)
                log_warning("%s/trim.state is malformed, starting afresh", m->state_dir);
        else if (r >= 0) {
                m->trim_status = t;
                m->n_trim_status = n;
        }
        return 0;
}

static int load_config(Manager *m) {
        ConfigMessages msgs = {};
        int r;

        r = config_load(m->config_path, &m->config, &msgs);
        log_messages(&msgs);
        config_messages_done(&msgs);
        if (r < 0)
                return log_error_errno(r, "cannot load the configuration %s", m->config_path);
        m->socket_path = strdup(m->socket_override ? m->socket_override : m->config->socket_path);
        m->state_dir = strdup(m->state_dir_override ? m->state_dir_override : m->config->state_dir);
        if (!m->socket_path || !m->state_dir)
                return -ENOMEM;
        resolve_admin_group(m);
        return 0;
}

int manager_new(const char *config_path, const char *socket_override, const char *state_dir_override,
                Manager **ret) {
        Manager *m;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->state_dir_fd = m->worker_efd = m->inotify_fd = m->listen_fd = -1;
        m->start_time = usec_now(CLOCK_REALTIME);
        /* Absolute, so ConfigFile says which file a reload reads. */
        m->config_path = realpath(config_path, NULL);
        if (!m->config_path)
                m->config_path = strdup(config_path);
        m->socket_override = socket_override ? strdup(socket_override) : NULL;
        m->state_dir_override = state_dir_override ? strdup(state_dir_override) : NULL;
        if (!m->config_path || (socket_override && !m->socket_override) ||
            (state_dir_override && !m->state_dir_override)) {
                r = -ENOMEM;
                goto fail;
        }

        r = sd_event_new(&m->event);
        if (r >= 0)
                r = sd_event_set_watchdog(m->event, true);
        if (r >= 0)
                r = setup_signals(m);
        if (r >= 0)
                r = sd_id128_randomize(&m->server_id);
        if (r < 0) {
                log_error_errno(r, "cannot set up the event loop: %m");
                goto fail;
        }
        r = load_config(m);
        if (r >= 0)
                r = open_state_dir(m);
        if (r >= 0)
                r = worker_setup(m);
        if (r < 0)
                goto fail;
        apply_disks(m);
        r = watch_setup(m);
        if (r < 0)
                goto fail;
        (void) watch_sync(m);
        r = control_setup(m);
        if (r < 0)
                goto fail;
        schedule_all(m);
        *ret = m;
        return 0;
fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* In reverse order of manager_new(). */
        m->stopping = true;
        worker_stop_all(m);
        while (m->jobs) {
                Job *j = m->jobs;

                manager_unlink_job(m, j);
                if (j->disk)
                        j->disk->job = NULL;
                job_free(j);
        }
        m->trim_timer = sd_event_source_disable_unref(m->trim_timer);
        control_done(m);
        watch_done(m);
        while (m->n_disks > 0)
                disk_free(m->disks[--m->n_disks]);
        free(m->disks);
        worker_done(m);
        trim_status_free(m->trim_status, m->n_trim_status);
        if (m->state_dir_fd >= 0)
                close(m->state_dir_fd);
        config_free(m->config);
        sd_event_unref(m->event);
        free(m->socket_path);
        free(m->state_dir);
        free(m->config_path);
        free(m->socket_override);
        free(m->state_dir_override);
        free(m->last_status);
        free(m);
        return NULL;
}

/* Hundreds of clients and a thousand images need more than the soft 1024. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int manager_main(const char *config_path, const char *socket_override, const char *state_dir_override) {
        Manager *m = NULL;
        int r;

        raise_fd_limit();
        r = manager_new(config_path, socket_override, state_dir_override, &m);
        if (r < 0)
                return 1;
        log_info("vhdreclaimd %s: %zu images, control socket %s, state in %s", VHDRECLAIM_VERSION, m->n_disks,
                 m->socket_path, m->state_dir);
        notify_ready();
        manager_state_changed(m);

        r = sd_event_loop(m->event);
        notify_stopping();
        if (r < 0)
                log_error_errno(r, "event loop failed: %m");
        /* Running passes stop at their next check (within ~50 ms); their state is saved as they end. */
        m->stopping = true;
        worker_stop_all(m);
        manager_free(m);
        return r < 0 ? 1 : 0;
}
