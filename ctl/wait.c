/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "log.h"
#include "macro.h"
#include "vhdreclaim-bus.h"
#include "wait.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)
/* How often ListJobs is asked, to notice a job that ended unreported. */
#define POLL_INTERVAL (2 * USEC_PER_SEC)
#define LINE_INTERVAL USEC_PER_SEC
#define BAR_INTERVAL (100 * USEC_PER_MSEC)
#define BAR_WIDTH_MIN 10
#define BAR_WIDTH_MAX 40

typedef struct Job {
        uint64_t id;
        char *kind, *target, *result, *message;
        uint64_t done, total, reclaimed;
        uint64_t punched;       /* stale + zero + free: punched, or would be by a dry run */
        bool compacted;         /* the pass ran compaction: the file sizes say what it did */
        uint64_t file_size_before, file_size_after;
        double rate;
        bool dry_run;           /* as the daemon ran it (sparse=false makes every pass one) */
        bool ours;              /* started by this call: waited for */
        bool running;           /* progress seen, or listed as running */
        bool finished;
        bool reported;          /* its end has been printed */
        bool unlisted;          /* missing from the last ListJobs */
        uint64_t last_line;     /* CLOCK_MONOTONIC of its last progress line */
} Job;

struct Waiter {
        Ctl *ctl;
        sd_bus_slot *progress_slot, *finished_slot;
        Job *jobs;              /* every job heard of, ours or not */
        size_t n_jobs, allocated;
        WaitOutput output;
        bool dry_run;
        bool bar_shown;
        uint64_t last_draw;
};

static uint64_t now_monotonic(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int set_string(char **field, const char *value) {
        char *s;

        if (!value || (*field && strcmp(*field, value) == 0))
                return 0;
        s = strdup(value);
        if (!s)
                return -ENOMEM;
        free(*field);
        *field = s;
        return 0;
}

/* Pointers into w->jobs stay valid only until the next job is added. */
static Job *find_job(Waiter *w, uint64_t id) {
        for (size_t i = 0; i < w->n_jobs; i++)
                if (w->jobs[i].id == id)
                        return &w->jobs[i];
        return NULL;
}

static Job *get_job(Waiter *w, uint64_t id) {
        Job *j = find_job(w, id);

        if (j)
                return j;
        if (w->n_jobs == w->allocated) {
                size_t n = MAX(w->allocated * 2, (size_t) 8);
                Job *p = reallocarray(w->jobs, n, sizeof(Job));

                if (!p)
                        return NULL;
                w->jobs = p;
                w->allocated = n;
        }
        j = &w->jobs[w->n_jobs++];
        *j = (Job) { .id = id };
        return j;
}

static const char *job_name(const Job *j) {
        return j->target && *j->target ? j->target : "?";
}

/* ---- output ---- */

static unsigned terminal_columns(void) {
        struct winsize ws;

        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
                return 80;
        return ws.ws_col;
}

static void clear_bar(Waiter *w) {
        if (!w->bar_shown)
                return;
        fputs("\r\033[K", stdout);
        w->bar_shown = false;
}

/* "1.2G/3.0G 40% 150M/s ETA 12s" */
static void format_progress(char *buf, size_t size, uint64_t done, uint64_t total, double rate) {
        char d[FORMAT_HUMAN_MAX], t[FORMAT_HUMAN_MAX], r[FORMAT_RATE_MAX], eta[FORMAT_SPAN_MAX];
        unsigned percent = total > 0 ? (unsigned) ((double) MIN(done, total) * 100.0 / (double) total) : 0;

        if (rate > 0 && total > done)
                format_span(eta, (uint64_t) ((double) (total - done) / rate * (double) USEC_PER_SEC));
        else
                snprintf(eta, sizeof eta, "--");
        snprintf(buf, size, "%s/%s %3u%% %s ETA %s", format_size_human(d, done), format_size_human(t, total),
                 percent, format_rate(r, rate), eta);
}

static void draw_bar(Waiter *w, bool force) {
        uint64_t done = 0, total = 0, now = now_monotonic();
        unsigned running = 0, queued = 0, columns;
        const char *running_name = NULL;
        char progress[128], label[128], bar[BAR_WIDTH_MAX + 1], line[512];
        double rate = 0;
        size_t width;

        if (!force && now - w->last_draw < BAR_INTERVAL)
                return;
        w->last_draw = now;

        for (size_t i = 0; i < w->n_jobs; i++) {
                const Job *j = &w->jobs[i];

                if (!j->ours)
                        continue;
                if (j->finished) {
                        done += MAX(j->done, j->total);
                        total += MAX(j->done, j->total);
                } else if (j->running) {
                        done += j->done;
                        total += j->total;
                        rate += j->rate;
                        running++;
                        running_name = job_name(j);
                } else
                        queued++;
        }
        if (running + queued == 0)
                return;

        format_progress(progress, sizeof progress, done, total, rate);
        if (running == 1)
                snprintf(label, sizeof label, "%s", running_name);
        else
                snprintf(label, sizeof label, "%u running", running);
        if (queued > 0)
                snprintf(label + strlen(label), sizeof label - strlen(label), ", %u queued", queued);

        /* Never as wide as the terminal: a wrapped line cannot be redrawn
         * with a carriage return. */
        columns = terminal_columns();
        width = columns > strlen(progress) + strlen(label) + 4 ? columns - strlen(progress) - strlen(label) - 4 : 0;
        width = MAX(MIN(width, (size_t) BAR_WIDTH_MAX), (size_t) BAR_WIDTH_MIN);
        snprintf(line, sizeof line, "%s %s  %s", format_bar(bar, width, done, total), progress, label);
        if (strlen(line) >= columns)
                line[columns > 1 ? columns - 1 : 0] = '\0';

        fprintf(stdout, "\r%s\033[K", line);
        fflush(stdout);
        w->bar_shown = true;
}

static void print_progress_line(Waiter *w, Job *j) {
        uint64_t now = now_monotonic();
        char progress[128];

        if (j->last_line != 0 && now - j->last_line < LINE_INTERVAL)
                return;
        j->last_line = now;
        format_progress(progress, sizeof progress, j->done, j->total, j->rate);
        printf("job %" PRIu64 " %s: %s\n", j->id, job_name(j), progress);
        fflush(stdout);
}

static void show_progress(Waiter *w, Job *j) {
        if (!j->ours || j->finished)
                return;
        if (w->output == WAIT_OUTPUT_BAR)
                draw_bar(w, false);
        else if (w->output == WAIT_OUTPUT_LINES)
                print_progress_line(w, j);
}

static const char *amount_verb(const Job *j) {
        if (j->kind && strcmp(j->kind, "trim") == 0)
                return "trimmed";
        return j->dry_run ? "would reclaim" : "reclaimed";
}

/* A dry run measures nothing: its figure is what it would punch. */
static uint64_t job_amount(const Job *j) {
        return j->dry_run ? j->punched : j->reclaimed;
}

static void print_finished_line(Waiter *w, const Job *j) {
        char amount[FORMAT_HUMAN_MAX];

        /* A dry run nobody asked for: the disk is sparse=false or discard=none. */
        printf("job %" PRIu64 " %s: %s%s", j->id, job_name(j), result_to_words(j->result),
               !j->dry_run ? "" : w->dry_run ? " (dry run)" : " (dry run: the disk is watch-only)");
        if (job_amount(j) > 0 || (j->result && strcmp(j->result, "success") == 0))
                printf(", %s %s", amount_verb(j), format_size_human(amount, job_amount(j)));
        if (j->message && *j->message)
                printf(" (%s)", j->message);
        if (j->compacted) {
                char before[FORMAT_HUMAN_MAX], after[FORMAT_HUMAN_MAX];

                printf("; file size %s -> %s%s", format_size_human(before, j->file_size_before),
                       format_size_human(after, j->file_size_after), j->dry_run ? " if compacted" : "");
        }
        fputc('\n', stdout);
}

static void show_finished(Waiter *w, Job *j) {
        if (!j->ours || !j->finished || j->reported)
                return;
        j->reported = true;
        if (w->output == WAIT_OUTPUT_JSON)
                return;
        clear_bar(w);
        print_finished_line(w, j);
        if (w->output == WAIT_OUTPUT_BAR)
                draw_bar(w, true);
        fflush(stdout);
}

/* ---- signals ---- */

static int on_job_progress(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        uint64_t id, done, total;
        const char *target;
        double rate;
        Job *j;
        int r;

        r = sd_bus_message_read(m, "tsttd", &id, &target, &done, &total, &rate);
        if (r < 0) {
                log_debug_errno(r, "ignoring a malformed JobProgress signal: %m");
                return 0;
        }
        j = get_job(w, id);
        /* A failure here must not look like a lost connection to
         * sd_bus_process(): log it and let the ListJobs poll catch up. */
        if (!j || set_string(&j->target, target) < 0) {
                log_error_errno(ENOMEM, "out of memory");
                return 0;
        }
        if (j->finished)
                return 0;
        j->done = done;
        j->total = total;
        j->rate = rate;
        j->running = true;
        show_progress(w, j);
        return 0;
}

static int on_job_finished(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const char *kind, *target, *result, *message;
        uint64_t id, reclaimed;
        int dry_run, compacted;
        Job *j;
        int r;

        r = sd_bus_message_read(m, "tsssst", &id, &kind, &target, &result, &message, &reclaimed);
        if (r < 0) {
                log_debug_errno(r, "ignoring a malformed JobFinished signal: %m");
                return 0;
        }
        j = get_job(w, id);
        if (!j || set_string(&j->kind, kind) < 0 || set_string(&j->target, target) < 0 ||
            set_string(&j->result, result) < 0 || set_string(&j->message, message) < 0) {
                log_error_errno(ENOMEM, "out of memory");
                return 0;
        }
        j->reclaimed = reclaimed;
        /* The dry-run flag and the punched total follow; from a daemon
         * that does not send them, what was asked for is all we know. */
        if (sd_bus_message_read(m, "bt", &dry_run, &j->punched) <= 0) {
                dry_run = w->dry_run;
                j->punched = reclaimed;
        }
        j->dry_run = dry_run;
        /* Then compaction's, from a daemon that compacts. */
        if (sd_bus_message_read(m, "btt", &compacted, &j->file_size_before, &j->file_size_after) > 0)
                j->compacted = compacted;
        j->finished = true;
        show_finished(w, j);
        return 0;
}

int waiter_new(Waiter **ret, Ctl *c) {
        Waiter *w;
        int r;

        w = calloc(1, sizeof(Waiter));
        if (!w)
                return log_error_errno(ENOMEM, "out of memory");
        w->ctl = c;

        r = sd_bus_match_signal(c->bus, &w->progress_slot, NULL, VHDRECLAIM_BUS_PATH, VHDRECLAIM_BUS_INTERFACE,
                                "JobProgress", on_job_progress, w);
        if (r >= 0)
                r = sd_bus_match_signal(c->bus, &w->finished_slot, NULL, VHDRECLAIM_BUS_PATH,
                                        VHDRECLAIM_BUS_INTERFACE, "JobFinished", on_job_finished, w);
        if (r < 0) {
                waiter_free(w);
                return log_error_errno(r, "cannot subscribe to job signals: %m");
        }
        *ret = w;
        return 0;
}

Waiter *waiter_free(Waiter *w) {
        if (!w)
                return NULL;
        sd_bus_slot_unref(w->progress_slot);
        sd_bus_slot_unref(w->finished_slot);
        for (size_t i = 0; i < w->n_jobs; i++) {
                free(w->jobs[i].kind);
                free(w->jobs[i].target);
                free(w->jobs[i].result);
                free(w->jobs[i].message);
        }
        free(w->jobs);
        free(w);
        return NULL;
}

/* ---- the wait ---- */

static int update_from_listing(Waiter *w, uint64_t id, const char *kind, const char *target, const char *state,
                               uint64_t done, uint64_t total, double rate) {
        Job *j = find_job(w, id);

        if (!j || !j->ours || j->finished)
                return 0;
        j->unlisted = false;
        if (set_string(&j->kind, kind) < 0 || set_string(&j->target, target) < 0)
                return -ENOMEM;
        if (strcmp(state, "running") == 0) {
                j->running = true;
                j->done = MAX(j->done, done);
                j->total = MAX(j->total, total);
                if (rate > 0)
                        j->rate = rate;
        }
        return 0;
}

/* A job of ours that ListJobs no longer shows, twice in a row with the
 * signals in between dispatched, ended without a JobFinished we could
 * see. */
static int mark_unlisted(Waiter *w, const bool *listed) {
        for (size_t i = 0; i < w->n_jobs; i++) {
                Job *j = &w->jobs[i];

                if (!j->ours || j->finished || listed[i])
                        continue;
                if (!j->unlisted) {
                        j->unlisted = true;
                        continue;
                }
                if (set_string(&j->result, "unknown") < 0 ||
                    set_string(&j->message, "the job ended without reporting its result") < 0)
                        return -ENOMEM;
                j->finished = true;
                show_finished(w, j);
        }
        return 0;
}

static int poll_jobs(Waiter *w) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ bool *listed = calloc(MAX(w->n_jobs, (size_t) 1), sizeof(bool));
        const char *kind, *target, *state;
        uint64_t id, done, total;
        double rate;
        int r;

        if (!listed)
                return ctl_bad_reply(-ENOMEM);
        if (ctl_new_call(w->ctl, "ListJobs", &m) < 0)
                return CTL_EXIT_FAILED;
        r = ctl_call(w->ctl, m, &reply);
        if (r != 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(tsssttd)");
        if (r < 0)
                return ctl_bad_reply(r);
        while ((r = sd_bus_message_read(reply, "(tsssttd)", &id, &kind, &target, &state, &done, &total, &rate)) > 0) {
                Job *j = find_job(w, id);

                if (j)
                        listed[j - w->jobs] = true;
                if (update_from_listing(w, id, kind, target, state, done, total, rate) < 0)
                        return ctl_bad_reply(-ENOMEM);
        }
        if (r < 0)
                return ctl_bad_reply(r);
        if (mark_unlisted(w, listed) < 0)
                return ctl_bad_reply(-ENOMEM);
        if (w->output == WAIT_OUTPUT_BAR)
                draw_bar(w, false);
        return 0;
}

static bool all_finished(const Waiter *w) {
        for (size_t i = 0; i < w->n_jobs; i++)
                if (w->jobs[i].ours && !w->jobs[i].finished)
                        return false;
        return true;
}

static int connection_lost(Waiter *w, int r) {
        clear_bar(w);
        fflush(stdout);
        log_error_errno(r, "lost the connection to vhdreclaimd at %s while waiting: %m", w->ctl->socket_path);
        return CTL_EXIT_UNREACHABLE;
}

static int wait_loop(Waiter *w) {
        uint64_t next_poll = 0;
        int r;

        for (;;) {
                uint64_t now;

                r = sd_bus_process(w->ctl->bus, NULL);
                if (r < 0)
                        return connection_lost(w, r);
                if (r > 0)
                        continue;
                if (all_finished(w))
                        return 0;

                now = now_monotonic();
                if (now >= next_poll) {
                        r = poll_jobs(w);
                        if (r != 0)
                                return r;
                        next_poll = now + POLL_INTERVAL;
                        continue;
                }
                r = sd_bus_wait(w->ctl->bus, next_poll - now);
                if (r < 0 && r != -EINTR)
                        return connection_lost(w, r);
        }
}

static void print_results_json(Waiter *w, const uint64_t *ids, size_t n_ids) {
        JsonOut j = { .f = stdout };

        json_begin(&j, '[');
        for (size_t i = 0; i < n_ids; i++) {
                const Job *job = find_job(w, ids[i]);

                json_begin(&j, '{');
                json_key(&j, "job"); json_u64(&j, job->id);
                json_key(&j, "kind"); json_string(&j, job->kind);
                json_key(&j, "target"); json_string(&j, job->target);
                json_key(&j, "result"); json_string(&j, job->result);
                json_key(&j, "message"); json_string(&j, job->message);
                json_key(&j, "reclaimed"); json_u64(&j, job->reclaimed);
                json_key(&j, "dry_run"); json_bool(&j, job->dry_run);
                json_key(&j, "would_reclaim"); json_u64(&j, job->dry_run ? job->punched : 0);
                if (job->compacted) {
                        json_key(&j, "file_size_before"); json_u64(&j, job->file_size_before);
                        json_key(&j, "file_size_after"); json_u64(&j, job->file_size_after);
                        json_key(&j, "compacted"); json_u64(&j, job->file_size_before - job->file_size_after);
                }
                json_end(&j, '}');
        }
        json_end(&j, ']');
        fputc('\n', stdout);
}

int waiter_run(Waiter *w, const uint64_t *ids, size_t n_ids, WaitOutput output, bool dry_run) {
        int r, ret = CTL_EXIT_OK;

        w->output = output;
        w->dry_run = dry_run;

        for (size_t i = 0; i < n_ids; i++) {
                Job *j = get_job(w, ids[i]);

                if (!j)
                        return ctl_bad_reply(-ENOMEM);
                j->ours = true;
        }
        /* Jobs that ended before their ids came back. */
        for (size_t i = 0; i < w->n_jobs; i++)
                show_finished(w, &w->jobs[i]);

        r = wait_loop(w);
        if (r != 0)
                return r;
        clear_bar(w);

        if (output == WAIT_OUTPUT_JSON)
                print_results_json(w, ids, n_ids);
        for (size_t i = 0; i < n_ids; i++)
                if (!result_is_ok(find_job(w, ids[i])->result))
                        ret = CTL_EXIT_FAILED;

        if (fflush(stdout) != 0 || ferror(stdout)) {
                log_error_errno(errno ? errno : EIO, "cannot write the output: %m");
                return CTL_EXIT_FAILED;
        }
        return ret;
}
