/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "json.h"
#include "log.h"
#include "manager.h"
#include "report.h"
#include "schedule.h"
#include "state.h"
#include "vhdreclaim-bus.h"

/* The end of a job, on the loop: what it changes in the disk's record and the
 * trim status, the history line, the journal entry, the JobFinished signal,
 * and the next scheduled run. */

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

static void log_pass_end(const Disk *d, const PassReport *rep) {
        char disk[512], result[64], reclaimed[64], path[4200], msg[4600];
        const char *fields[] = { "MESSAGE_ID=" PASS_END_MESSAGE_ID, disk, result, reclaimed, path, NULL };

        snprintf(disk, sizeof disk, "VHDRECLAIM_DISK=%s", d->name);
        snprintf(result, sizeof result, "VHDRECLAIM_RESULT=%s", pass_result_to_string(rep->result));
        snprintf(reclaimed, sizeof reclaimed, "VHDRECLAIM_RECLAIMED_BYTES=%" PRIu64, rep->reclaimed);
        snprintf(path, sizeof path, "VHDRECLAIM_PATH=%s", d->path);
        /* A dry run measures nothing: say what it would punch. */
        snprintf(msg, sizeof msg, "%s: %s%s, %s %" PRIu64 " bytes%s%s", d->name,
                 pass_result_to_string(rep->result), rep->dry_run ? " (dry run)" : "",
                 rep->dry_run ? "would reclaim" : "reclaimed",
                 rep->dry_run ? rep->stale_bytes + rep->zero_bytes + rep->free_bytes : rep->reclaimed,
                 rep->message && *rep->message ? ": " : "", rep->message ? rep->message : "");
        log_fields(pass_result_is_failure(rep->result) ? LOG_WARNING : LOG_INFO, msg, fields);
}

/* A watch-only disk's estimate is its pass: it sets the time of the next one
 * (or the scheduler would find the disk overdue at once, again and again),
 * and a file that has not changed since is not read again. It never touches
 * resume_offset, which belongs to passes that punch. */
static void record_estimate(Disk *d, const Job *j) {
        const PassReport *rep = &j->report;
        DiskRecord *r = &d->record;

        r->last_pass = j->start_realtime;
        r->last_result = (int) rep->result;
        r->last_dry_run = true;
        free(r->last_message);
        r->last_message = strdup(rep->message ? rep->message : "");
        r->reclaimed_last = 0;
        r->passes++;
        d->estimated = j->have_stamp && !pass_result_is_failure(rep->result) && rep->result != PASS_SKIPPED_IN_USE;
        d->estimated_size = j->stamp_size;
        d->estimated_mtime_nsec = j->stamp_mtime_nsec;
}

static void record_pass(Disk *d, const Job *j) {
        const PassReport *rep = &j->report;
        DiskRecord *r = &d->record;
        uint64_t found = rep->stale_bytes + rep->zero_bytes + rep->free_bytes;

        /* A pass that did not read the image (skipped in use) knows a
         * VHDX's format by its name only: the virtual size read before stands. */
        if (rep->format_known) {
                if (rep->virtual_size > 0 || r->format != (int) rep->format)
                        r->virtual_size = rep->virtual_size;
                r->format = (int) rep->format;
        }
        if (rep->dry_run) {
                /* A dry run only measures. */
                if (!pass_result_is_failure(rep->result) && rep->result != PASS_SKIPPED_IN_USE)
                        r->reclaimable = found;
                if (j->estimate)
                        record_estimate(d, j);
                return;
        }
        r->last_pass = j->start_realtime;
        r->last_result = (int) rep->result;
        r->last_dry_run = false;
        free(r->last_message);
        r->last_message = strdup(rep->message ? rep->message : "");
        r->reclaimed_last = rep->reclaimed;
        r->reclaimed_total += rep->reclaimed;
        r->passes++;
        /* Every pass that did not fail says where the next one resumes:
         * further on (stopped by maxPassTime, cancel or shutdown), 0 after a
         * whole round (skipped-threshold included), or where it started. */
        if (!pass_result_is_failure(rep->result))
                r->resume_offset = rep->resume_offset;
        /* What the next periodic pass compares with; any other end means "changed". */
        r->have_fingerprint = rep->have_fingerprint;
        if (rep->have_fingerprint) {
                r->fingerprint = rep->fingerprint;
                if (!rep->unchanged)
                        r->fingerprint.pass_time = j->start_realtime;
        }
        /* Unchanged: the last full pass's estimate still holds. */
        if (rep->unchanged)
                return;
        if ((rep->result == PASS_SUCCESS || rep->result == PASS_NOTHING_TO_DO) && rep->resume_offset == 0)
                r->reclaimable = 0;
        else if (rep->result == PASS_SKIPPED_THRESHOLD)
                r->reclaimable = found;
}

/* What compaction did goes into the message, and so into the status, the
 * history and the journal, whose fields stay as they were. */
static void note_compaction(PassReport *rep) {
        char *s = NULL;

        if (!rep->compact || (rep->result != PASS_SUCCESS && rep->result != PASS_NOTHING_TO_DO))
                return;
        if (rep->format_known && rep->format == IMAGE_FORMAT_RAW) {
                if (asprintf(&s, "%s%s%s", rep->message ? rep->message : "",
                             rep->message && *rep->message ? "; " : "", REPORT_RAW_NOT_COMPACTED) < 0)
                        return;
        } else if (asprintf(&s, "%s%sfile %s from %" PRIu64 " to %" PRIu64 " bytes, %" PRIu64 " blocks moved",
                     rep->message ? rep->message : "", rep->message && *rep->message ? "; " : "",
                     rep->dry_run ? "would be compacted" : "compacted", rep->file_size_after + rep->compacted,
                     rep->file_size_after, rep->blocks_moved) < 0)
                return;
        free(rep->message);
        rep->message = s;
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
        note_compaction(&j->report);

        if (d) {
                record_pass(d, j);
                /* An unchanged image's pass changes nothing a restart needs
                 * (the fingerprint is that of the last full pass): no state
                 * file write. After a restart its record is the last full
                 * pass's. */
                if (!d->removed && !j->report.unchanged) {
                        r = state_save_disk_unsynced(m->state_dir_fd, d->name, d->path, &d->record);
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
                r = state_append_history_unsynced(m->state_dir_fd, line);
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

        /* A configured mount left out fails the run, as a mount that failed
         * would: the trims done are reported beside it. */
        if (j->trim_skipped) {
                failed = true;
                if (f)
                        fprintf(f, "%s", j->trim_skipped);
        }
        for (size_t i = 0; j->started && i < j->n_trim_mounts; i++) {
                const TrimResult *res = &j->trim_results[i];
                TrimStatus *t = NULL;
                const char *result = res->error == 0 ? "success" : res->error == -ECANCELED ? "cancelled" : "error";

                total += res->trimmed;
                failed = failed || res->error != 0;
                if (f)
                        fprintf(f, "%s%s: %s, %" PRIu64 " bytes trimmed%s%s", i || j->trim_skipped ? "; " : "",
                                j->trim_mounts[i].path,
                                result, res->trimmed, res->error && res->error != -ECANCELED ? ": " : "",
                                res->error && res->error != -ECANCELED ? strerror(-res->error) : "");
                /* The mount is gone (or no longer a mount point): no series
                 * for it, in the status or the metrics, from now on. */
                if (res->error == -ENOENT)
                        trim_status_remove(m->trim_status, &m->n_trim_status, j->trim_mounts[i].path);
                else
                        t = trim_status_for(m, j->trim_mounts[i].path);
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
        /* The caller may have gone; its connection then refuses the reply.
         * The name goes on the bus: UTF-8 (control.c). */
        _cleanup_free_ char *name = utf8_sanitize(d->name);

        if (!name)
                (void) sd_bus_reply_method_errno(j->request, ENOMEM, NULL);
        else if (r == -ENOSPC)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_NO_SPACE,
                                                  "The host file system ran out of space re-allocating \"%s\"; "
                                                  "the holes filled so far were punched again",
                                                  name);
        else if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_BUSY,
                                                  "\"%s\" is in use by another process; nothing was changed", name);
        else if (r < 0)
                (void) sd_bus_reply_method_errorf(j->request, VHDRECLAIM_ERROR_FAILED,
                                                  "Re-allocating \"%s\" failed: %s", name, strerror(-r));
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
