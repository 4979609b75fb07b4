/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "commands.h"
#include "format.h"
#include "log.h"
#include "macro.h"
#include "table.h"
#include "vhdreclaim-bus.h"
#include "wait.h"

#define USEC_PER_SEC UINT64_C(1000000)

/* One struct of ListDisks(); the strings point into the reply. */
typedef struct DiskInfo {
        const char *name, *path, *origin, *format;
        int sparse;
        const char *state;
        uint64_t virtual_size, file_size, allocated, reclaimable, reclaimed_last, reclaimed_total;
        const char *last_result, *last_message;
        uint64_t last_pass, next_pass, job_done, job_total;
        uint64_t passes;
        int last_dry_run;       /* last_result is a dry run's */
} DiskInfo;

/* The fields every daemon sends; newer ones append last_dry_run (b). */
#define DISK_SIGNATURE_BASE "ssssbsttttttssttttu"

/* One struct of History(). */
typedef struct HistoryEntry {
        const char *name, *path;
        uint64_t start;
        const char *result, *message;
        uint64_t duration, reclaimed, stale_bytes, zero_bytes, free_bytes;
        const char *discard;
        int dry_run;
} HistoryEntry;

/* The twelve fields History() documents in vhdreclaim-bus.h. */
#define HISTORY_SIGNATURE "(sstsstttttsb)"

static uint64_t now_realtime(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int flush_stdout(void) {
        if (fflush(stdout) != 0 || ferror(stdout)) {
                log_error_errno(errno ? errno : EIO, "cannot write the output: %m");
                return CTL_EXIT_FAILED;
        }
        return CTL_EXIT_OK;
}

/* ListDisks' fields are only ever appended (vhdreclaim-bus.h): a struct is
 * read up to the fields this client knows, and what follows is skipped. An
 * older daemon's struct ends after passes. */
static int read_disk(sd_bus_message *m, DiskInfo *d) {
        const char *contents = NULL;
        uint32_t passes = 0;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r;
        if (type != SD_BUS_TYPE_STRUCT || strncmp(contents, DISK_SIGNATURE_BASE, strlen(DISK_SIGNATURE_BASE)) != 0)
                return -EBADMSG;
        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_STRUCT, contents);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        r = sd_bus_message_read(m, DISK_SIGNATURE_BASE, &d->name, &d->path, &d->origin, &d->format, &d->sparse,
                                &d->state, &d->virtual_size, &d->file_size, &d->allocated, &d->reclaimable,
                                &d->reclaimed_last, &d->reclaimed_total, &d->last_result, &d->last_message,
                                &d->last_pass, &d->next_pass, &d->job_done, &d->job_total, &passes);
        if (r < 0)
                return r;
        d->passes = passes;
        if (contents[strlen(DISK_SIGNATURE_BASE)] == 'b') {
                r = sd_bus_message_read(m, "b", &d->last_dry_run);
                if (r < 0)
                        return r;
        }
        while ((r = sd_bus_message_peek_type(m, NULL, NULL)) > 0) {
                r = sd_bus_message_skip(m, NULL);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        return r < 0 ? r : 1;
}

/* Calls ListDisks(names). On success *ret_disks (to free) points into
 * *ret_reply (to unref). Returns 0 or an exit code. */
static int list_disks(Ctl *c, char **names, sd_bus_message **ret_reply, DiskInfo **ret_disks, size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ DiskInfo *disks = NULL;
        size_t n = 0, allocated = 0;
        int r;

        if (ctl_new_call(c, "ListDisks", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append_strv(m, names);
        if (r < 0)
                return ctl_bad_reply(r);
        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', NULL);
        if (r < 0)
                return ctl_bad_reply(r);
        for (;;) {
                DiskInfo d = {};

                r = read_disk(reply, &d);
                if (r < 0)
                        return ctl_bad_reply(r);
                if (r == 0)
                        break;
                if (n == allocated) {
                        size_t k = MAX(allocated * 2, (size_t) 16);
                        DiskInfo *p = reallocarray(disks, k, sizeof(DiskInfo));

                        if (!p)
                                return ctl_bad_reply(-ENOMEM);
                        disks = p;
                        allocated = k;
                }
                disks[n++] = d;
        }
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bad_reply(r);

        *ret_reply = TAKE_PTR(reply);
        *ret_disks = TAKE_PTR(disks);
        *ret_n = n;
        return 0;
}

/* ---- status ---- */

/* The reclaim queue as ListJobs gives it, oldest first: the names of the
 * disks waiting for a pass (sorted copy for lookups) and of those running. */
typedef struct Queue {
        const char **queued;            /* in queue order */
        size_t n_queued;
        const char **sorted;            /* the same, by name */
        size_t *sorted_pos;             /* 1-based positions of sorted[] */
        const char **running;
        size_t n_running;
} Queue;

static void queue_done(Queue *q) {
        free(q->queued);
        free(q->sorted);
        free(q->sorted_pos);
        free(q->running);
}

static const Queue *sort_queue;

static int cmp_queued(const void *a, const void *b) {
        return strcmp(sort_queue->queued[*(const size_t *) a], sort_queue->queued[*(const size_t *) b]);
}

/* Calls ListJobs; the strings point into *ret_reply. */
static int list_queue(Ctl *c, sd_bus_message **ret_reply, Queue *q) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *kind, *target, *state;
        uint64_t id, done, total;
        double rate;
        size_t cap = 0;
        int r;

        if (ctl_new_call(c, "ListJobs", &m) < 0)
                return CTL_EXIT_FAILED;
        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(tsssttd)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(tsssttd)", &id, &kind, &target, &state, &done, &total,
                                                  &rate)) > 0) {
                if (strcmp(kind, "reclaim") != 0)
                        continue;
                if (q->n_queued + q->n_running >= cap) {
                        cap = MAX(cap * 2, (size_t) 16);
                        const char **a = reallocarray(q->queued, cap, sizeof(char *)),
                                   **b = a ? reallocarray(q->running, cap, sizeof(char *)) : NULL;
                        if (a)
                                q->queued = a;
                        if (!a || !b)
                                return ctl_bad_reply(-ENOMEM);
                        q->running = b;
                }
                if (strcmp(state, "running") == 0)
                        q->running[q->n_running++] = target;
                else
                        q->queued[q->n_queued++] = target;
        }
        if (r < 0)
                return ctl_bad_reply(r);
        q->sorted = calloc(MAX(q->n_queued, (size_t) 1), sizeof(char *));
        q->sorted_pos = calloc(MAX(q->n_queued, (size_t) 1), sizeof(size_t));
        if (!q->sorted || !q->sorted_pos)
                return ctl_bad_reply(-ENOMEM);
        for (size_t i = 0; i < q->n_queued; i++)
                q->sorted_pos[i] = i;
        sort_queue = q;
        qsort(q->sorted_pos, q->n_queued, sizeof(size_t), cmp_queued);
        for (size_t i = 0; i < q->n_queued; i++) {
                q->sorted[i] = q->queued[q->sorted_pos[i]];
                q->sorted_pos[i]++;
        }
        *ret_reply = TAKE_PTR(reply);
        return 0;
}

static int cmp_name(const void *key, const void *elem) {
        return strcmp(key, *(const char *const *) elem);
}

/* 1 = the next to start; 0 = not waiting in the queue. */
static uint64_t queue_position(const Queue *q, const char *name) {
        const char **p = q->n_queued ? bsearch(name, q->sorted, q->n_queued, sizeof(char *), cmp_name) : NULL;

        return p ? q->sorted_pos[p - q->sorted] : 0;
}

static void print_queue_line(const Queue *q) {
        if (q->n_running + q->n_queued == 0)
                return;
        printf("Queue: %zu running", q->n_running);
        for (size_t i = 0; i < q->n_running && i < 3; i++)
                printf("%s%s", i ? ", " : " (", q->running[i]);
        printf("%s, %zu waiting", q->n_running > 3 ? ", ...)" : q->n_running ? ")" : "", q->n_queued);
        for (size_t i = 0; i < q->n_queued && i < 3; i++)
                printf("%s%s", i ? ", " : ": next ", q->queued[i]);
        printf("%s.\n", q->n_queued > 3 ? ", ..." : "");
}

/* q: the queue, for `status`; NULL leaves queue_position out. */
static void print_disks_json(const DiskInfo *disks, size_t n, const Queue *q) {
        JsonOut j = { .f = stdout };

        json_begin(&j, '[');
        for (size_t i = 0; i < n; i++) {
                const DiskInfo *d = &disks[i];

                json_begin(&j, '{');
                json_key(&j, "name"); json_string(&j, d->name);
                json_key(&j, "path"); json_string(&j, d->path);
                json_key(&j, "origin"); json_string(&j, d->origin);
                json_key(&j, "format"); json_string(&j, d->format);
                json_key(&j, "sparse"); json_bool(&j, d->sparse);
                json_key(&j, "state"); json_string(&j, d->state);
                json_key(&j, "virtual_size"); json_u64(&j, d->virtual_size);
                json_key(&j, "file_size"); json_u64(&j, d->file_size);
                json_key(&j, "allocated"); json_u64(&j, d->allocated);
                json_key(&j, "reclaimable"); json_u64(&j, d->reclaimable);
                json_key(&j, "reclaimed_last"); json_u64(&j, d->reclaimed_last);
                json_key(&j, "reclaimed_total"); json_u64(&j, d->reclaimed_total);
                json_key(&j, "last_result"); json_string(&j, d->last_result);
                json_key(&j, "last_dry_run"); json_bool(&j, d->last_dry_run);
                json_key(&j, "last_message"); json_string(&j, d->last_message);
                json_key(&j, "last_pass"); json_u64(&j, d->last_pass);
                json_key(&j, "next_pass"); json_u64(&j, d->next_pass);
                json_key(&j, "job_done"); json_u64(&j, d->job_done);
                json_key(&j, "job_total"); json_u64(&j, d->job_total);
                json_key(&j, "passes"); json_u64(&j, d->passes);
                if (q) {
                        json_key(&j, "queue_position"); json_u64(&j, queue_position(q, d->name));
                }
                json_end(&j, '}');
        }
        json_end(&j, ']');
        fputc('\n', stdout);
}

/* A size cell: "-" where the daemon cannot know it (the image is gone). */
static const char *size_cell(char buf[static FORMAT_HUMAN_MAX], const DiskInfo *d, uint64_t v) {
        if (strcmp(d->state, "missing") == 0 && v == 0)
                return "-";
        return format_size_human(buf, v);
}

/* A dry run is marked as one everywhere: a bare "success" next to the
 * reclaimable bytes would read as if they had been given back. */
static const char *last_result_cell(char *buf, size_t size, const DiskInfo *d) {
        snprintf(buf, size, "%s%s", result_to_words(d->last_result),
                 d->last_dry_run && *d->last_result ? " (dry run)" : "");
        return buf;
}

static int print_disks_table(const DiskInfo *disks, size_t n, const Queue *q) {
        static const TableColumn columns[] = {
                { "NAME", TABLE_ALIGN_LEFT },
                { "STATE", TABLE_ALIGN_LEFT },
                { "VIRTUAL", TABLE_ALIGN_RIGHT },
                { "FILE", TABLE_ALIGN_RIGHT },
                { "ALLOCATED", TABLE_ALIGN_RIGHT },
                { "RECLAIMABLE", TABLE_ALIGN_RIGHT },
                { "LAST-RESULT", TABLE_ALIGN_LEFT },
                { "RECLAIMED", TABLE_ALIGN_RIGHT },
                { "NEXT", TABLE_ALIGN_LEFT },
        };
        _cleanup_table_ Table *t = NULL;
        uint64_t now = now_realtime(), total = 0, reclaimable = 0;
        int r;

        if (n == 0) {
                printf("No disks are managed.\n");
                return flush_stdout();
        }

        r = table_new(&t, columns, ELEMENTSOF(columns));
        if (r < 0)
                return ctl_bad_reply(r);

        for (size_t i = 0; i < n; i++) {
                const DiskInfo *d = &disks[i];
                char state[FORMAT_STATE_MAX], virt[FORMAT_HUMAN_MAX], file[FORMAT_HUMAN_MAX],
                        alloc[FORMAT_HUMAN_MAX], able[FORMAT_HUMAN_MAX], done[FORMAT_HUMAN_MAX],
                        next[FORMAT_RELATIVE_MAX], result[64];
                const char *cells[] = {
                        d->name,
                        format_state(state, d->state, d->sparse, d->job_done, d->job_total),
                        size_cell(virt, d, d->virtual_size),
                        size_cell(file, d, d->file_size),
                        size_cell(alloc, d, d->allocated),
                        /* 0 before any pass or dry run means "not known yet" */
                        d->reclaimable == 0 && d->last_pass == 0 ? "-" : format_size_human(able, d->reclaimable),
                        last_result_cell(result, sizeof result, d),
                        format_size_human(done, d->reclaimed_total),
                        format_relative(next, d->next_pass, now),
                };

                r = table_add_row(t, cells);
                if (r < 0)
                        return ctl_bad_reply(r);
                total += d->reclaimed_total;
                reclaimable += d->reclaimable;
        }

        r = table_print(t, stdout);
        if (r < 0)
                return flush_stdout();

        char total_buf[FORMAT_HUMAN_MAX], reclaimable_buf[FORMAT_HUMAN_MAX];
        printf("\n%zu disk%s, %s reclaimed in total, %s reclaimable.\n", n, n == 1 ? "" : "s",
               format_size_human(total_buf, total), format_size_human(reclaimable_buf, reclaimable));
        print_queue_line(q);
        return flush_stdout();
}

static int command_status(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DiskInfo *disks = NULL;
        size_t n = 0;
        int r;

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *jobs_reply = NULL;
        _cleanup_(queue_done) Queue q = {};

        r = list_disks(c, a->names, &reply, &disks, &n);
        if (r != 0)
                return r;
        r = list_queue(c, &jobs_reply, &q);
        if (r != 0)
                return r;
        if (a->json) {
                print_disks_json(disks, n, &q);
                return flush_stdout();
        }
        return print_disks_table(disks, n, &q);
}

/* ---- metrics ---- */

typedef struct Metric {
        const char *name;
        const char *type;
        const char *help;
        size_t offset;          /* of a uint64_t in DiskInfo */
        uint64_t scale;         /* the value is divided by it: usec -> seconds */
        bool skip_zero;         /* 0 means "never": leave the sample out */
} Metric;

static const Metric disk_metrics[] = {
        { "vhdreclaim_virtual_size_bytes", "gauge", "Virtual size of the disk image, as the guest sees it.",
          offsetof(DiskInfo, virtual_size), 1, false },
        { "vhdreclaim_file_size_bytes", "gauge", "Size of the image file on the host.",
          offsetof(DiskInfo, file_size), 1, false },
        { "vhdreclaim_allocated_bytes", "gauge", "Host file system space the image file occupies.",
          offsetof(DiskInfo, allocated), 1, false },
        { "vhdreclaim_reclaimable_bytes", "gauge", "Space a pass could reclaim, as estimated by the last pass or dry run.",
          offsetof(DiskInfo, reclaimable), 1, false },
        { "vhdreclaim_reclaimed_bytes_total", "counter", "Space given back to the host by passes on the image.",
          offsetof(DiskInfo, reclaimed_total), 1, false },
        { "vhdreclaim_passes_total", "counter", "Passes run on the image.",
          offsetof(DiskInfo, passes), 1, false },
        { "vhdreclaim_last_pass_timestamp_seconds", "gauge", "When the last pass on the image started, in seconds since the epoch.",
          offsetof(DiskInfo, last_pass), USEC_PER_SEC, true },
};

static void print_disk_metrics(const DiskInfo *disks, size_t n) {
        for (size_t k = 0; k < ELEMENTSOF(disk_metrics); k++) {
                const Metric *mt = &disk_metrics[k];

                printf("# HELP %s ", mt->name);
                prometheus_write_help(stdout, mt->help);
                printf("\n# TYPE %s %s\n", mt->name, mt->type);
                for (size_t i = 0; i < n; i++) {
                        uint64_t v = *(const uint64_t *) ((const char *) &disks[i] + mt->offset);

                        if (mt->skip_zero && v == 0)
                                continue;
                        printf("%s{disk=", mt->name);
                        prometheus_write_label_value(stdout, disks[i].name);
                        fputs(",path=", stdout);
                        prometheus_write_label_value(stdout, disks[i].path);
                        printf("} %" PRIu64 "\n", v / mt->scale);
                }
        }
}

static int print_trim_metrics(Ctl *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *mount, *result;
        uint64_t last, trimmed_last, trimmed_total;
        int r;

        if (ctl_new_call(c, "GetTrimStatus", &m) < 0)
                return CTL_EXIT_FAILED;
        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(sttts)");
        if (r < 0)
                return ctl_bad_reply(r);
        printf("# HELP vhdreclaim_trimmed_bytes_total Bytes discarded by trim passes on the file system.\n"
               "# TYPE vhdreclaim_trimmed_bytes_total counter\n");
        while ((r = sd_bus_message_read(reply, "(sttts)", &mount, &last, &trimmed_last, &trimmed_total,
                                        &result)) > 0) {
                fputs("vhdreclaim_trimmed_bytes_total{mount=", stdout);
                prometheus_write_label_value(stdout, mount);
                printf("} %" PRIu64 "\n", trimmed_total);
        }
        if (r < 0)
                return ctl_bad_reply(r);
        return 0;
}

static int command_metrics(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DiskInfo *disks = NULL;
        size_t n = 0;
        int r;

        r = list_disks(c, NULL, &reply, &disks, &n);
        if (r != 0)
                return r;
        if (a->json) {
                print_disks_json(disks, n, NULL);
                return flush_stdout();
        }
        print_disk_metrics(disks, n);
        r = print_trim_metrics(c);
        if (r != 0)
                return r;
        return flush_stdout();
}

/* ---- history ---- */

static int read_history_entry(sd_bus_message *m, HistoryEntry *h) {
        *h = (HistoryEntry) {};
        return sd_bus_message_read(m, HISTORY_SIGNATURE, &h->name, &h->path, &h->start, &h->result,
                                   &h->message, &h->duration, &h->reclaimed, &h->stale_bytes,
                                   &h->zero_bytes, &h->free_bytes, &h->discard, &h->dry_run);
}

/* A dry run changes nothing: what it found is what it would have punched. */
static uint64_t history_would_reclaim(const HistoryEntry *h) {
        return h->dry_run ? h->stale_bytes + h->zero_bytes + h->free_bytes : 0;
}

static void print_history_json_entry(JsonOut *j, const HistoryEntry *h) {
        json_begin(j, '{');
        json_key(j, "name"); json_string(j, h->name);
        json_key(j, "path"); json_string(j, h->path);
        json_key(j, "start"); json_u64(j, h->start);
        json_key(j, "result"); json_string(j, h->result);
        json_key(j, "message"); json_string(j, h->message);
        json_key(j, "duration_usec"); json_u64(j, h->duration);
        json_key(j, "reclaimed"); json_u64(j, h->reclaimed);
        json_key(j, "stale_bytes"); json_u64(j, h->stale_bytes);
        json_key(j, "zero_bytes"); json_u64(j, h->zero_bytes);
        json_key(j, "free_bytes"); json_u64(j, h->free_bytes);
        json_key(j, "discard"); json_string(j, h->discard);
        json_key(j, "dry_run"); json_bool(j, h->dry_run);
        json_key(j, "would_reclaim"); json_u64(j, history_would_reclaim(h));
        json_end(j, '}');
}

static int add_history_row(Table *t, const HistoryEntry *h) {
        char when[FORMAT_TIMESTAMP_MAX], reclaimed[FORMAT_HUMAN_MAX], duration[FORMAT_SPAN_MAX];
        char result[128], amount[FORMAT_HUMAN_MAX + 8];
        const char *cells[] = {
                format_timestamp(when, h->start),
                h->name,
                result,
                *h->discard ? h->discard : "-",
                amount,
                format_span(duration, h->duration),
                h->message,
        };

        snprintf(result, sizeof result, "%s%s", result_to_words(h->result), h->dry_run ? " (dry run)" : "");
        if (h->dry_run)
                snprintf(amount, sizeof amount, "would %s", format_size_human(reclaimed, history_would_reclaim(h)));
        else
                snprintf(amount, sizeof amount, "%s", format_size_human(reclaimed, h->reclaimed));
        return table_add_row(t, cells);
}

/* The number of entries in a History() reply; leaves it read. */
static int count_history(sd_bus_message *reply) {
        HistoryEntry h;
        int n = 0, r;

        r = sd_bus_message_enter_container(reply, 'a', HISTORY_SIGNATURE);
        if (r < 0)
                return r;
        while ((r = read_history_entry(reply, &h)) > 0)
                n++;
        return r < 0 ? r : n;
}

/* 0 when the daemon knows the disk, else an exit code (the daemon's
 * NoSuchDisk error printed). */
static int check_disk_exists(Ctl *c, const char *name) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DiskInfo *disks = NULL;
        char *names[] = { (char *) name, NULL };
        size_t n = 0;

        return list_disks(c, names, &reply, &disks, &n);
}

static int command_history(Ctl *c, const CtlArgs *a) {
        static const TableColumn columns[] = {
                { "TIME", TABLE_ALIGN_LEFT },
                { "DISK", TABLE_ALIGN_LEFT },
                { "RESULT", TABLE_ALIGN_LEFT },
                { "DISCARD", TABLE_ALIGN_LEFT },
                { "RECLAIMED", TABLE_ALIGN_RIGHT },
                { "DURATION", TABLE_ALIGN_RIGHT },
                { "MESSAGE", TABLE_ALIGN_LEFT },
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_table_ Table *t = NULL;
        JsonOut j = { .f = stdout };
        HistoryEntry h;
        int r;

        if (ctl_new_call(c, "History", &m) < 0)
                return CTL_EXIT_FAILED;
        /* limit 0: every pass the daemon remembers */
        r = sd_bus_message_append(m, "su", a->n_names > 0 ? a->names[0] : "", UINT32_C(0));
        if (r < 0)
                return ctl_bad_reply(r);
        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;

        /* The history outlives a disk's configuration, so an empty answer
         * is how a misspelt name shows: ask whether the disk exists. */
        if (a->n_names > 0) {
                r = count_history(reply);
                if (r < 0)
                        return ctl_bad_reply(r);
                if (r == 0) {
                        r = check_disk_exists(c, a->names[0]);
                        if (r != 0)
                                return r;
                }
        }

        r = table_new(&t, columns, ELEMENTSOF(columns));
        if (r >= 0)
                r = sd_bus_message_rewind(reply, true);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', HISTORY_SIGNATURE);
        if (r < 0)
                return ctl_bad_reply(r);
        if (a->json)
                json_begin(&j, '[');
        while ((r = read_history_entry(reply, &h)) > 0) {
                if (a->json)
                        print_history_json_entry(&j, &h);
                else if (add_history_row(t, &h) < 0)
                        return ctl_bad_reply(-ENOMEM);
        }
        if (r < 0)
                return ctl_bad_reply(r);

        if (a->json) {
                json_end(&j, ']');
                fputc('\n', stdout);
        } else if (table_rows(t) == 0)
                printf("No passes yet.\n");
        else
                table_print(t, stdout);
        return flush_stdout();
}

/* ---- reclaim, compact, trim ---- */

static WaitOutput wait_output(const CtlArgs *a) {
        if (a->json)
                return WAIT_OUTPUT_JSON;
        return isatty(STDOUT_FILENO) ? WAIT_OUTPUT_BAR : WAIT_OUTPUT_LINES;
}

/* Without --wait: what was started. The targets come from ListJobs; a job
 * that already ended is no longer listed and shows without one. */
static int print_started_jobs(Ctl *c, const CtlArgs *a, const uint64_t *ids, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        JsonOut j = { .f = stdout };
        int r;

        if (ctl_new_call(c, "ListJobs", &m) < 0)
                return CTL_EXIT_FAILED;
        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;

        if (a->json)
                json_begin(&j, '[');
        for (size_t i = 0; i < n; i++) {
                /* Reclaim() answers one id per name, in order. */
                const char *kind = ctl_command_to_string(a->command), *state = "finished",
                        *target = (a->command == CTL_COMMAND_RECLAIM || a->command == CTL_COMMAND_COMPACT) &&
                                  a->n_names == n ? a->names[i] : "";
                const char *k, *tg, *st;
                uint64_t id, done, total;
                double rate;

                r = sd_bus_message_rewind(reply, true);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "(tsssttd)");
                if (r < 0)
                        return ctl_bad_reply(r);
                while ((r = sd_bus_message_read(reply, "(tsssttd)", &id, &k, &tg, &st, &done, &total, &rate)) > 0)
                        if (id == ids[i]) {
                                kind = k;
                                target = tg;
                                state = st;
                        }
                if (r < 0)
                        return ctl_bad_reply(r);

                if (a->json) {
                        json_begin(&j, '{');
                        json_key(&j, "job"); json_u64(&j, ids[i]);
                        json_key(&j, "kind"); json_string(&j, kind);
                        json_key(&j, "target"); json_string(&j, target);
                        json_key(&j, "state"); json_string(&j, state);
                        json_end(&j, '}');
                } else
                        printf("Job %" PRIu64 ": %s%s%s, %s.\n", ids[i], kind, *target ? " " : "", target, state);
        }
        if (a->json) {
                json_end(&j, ']');
                fputc('\n', stdout);
        } else if (n == 0)
                printf("No jobs started.\n");
        return flush_stdout();
}

static int read_job_ids(sd_bus_message *reply, uint64_t **ret, size_t *ret_n) {
        const void *p;
        size_t size;
        int r;

        r = sd_bus_message_read_array(reply, 't', &p, &size);
        if (r < 0)
                return r;
        *ret = malloc(MAX(size, sizeof(uint64_t)));
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, p, size);
        *ret_n = size / sizeof(uint64_t);
        return 0;
}

/* Starts jobs with m; with --wait follows them to the end. */
static int start_jobs(Ctl *c, const CtlArgs *a, sd_bus_message *m, bool single_id) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_waiter_ Waiter *w = NULL;
        _cleanup_free_ uint64_t *ids = NULL;
        size_t n = 0;
        int r;

        /* Subscribed before the call: a fast job may end before its id is
         * back. */
        if (a->wait && waiter_new(&w, c) < 0)
                return CTL_EXIT_FAILED;

        r = ctl_call(c, m, &reply);
        if (r != 0)
                return r;

        if (single_id) {
                ids = malloc(sizeof(uint64_t));
                if (!ids)
                        return ctl_bad_reply(-ENOMEM);
                r = sd_bus_message_read(reply, "t", &ids[0]);
                n = 1;
        } else
                r = read_job_ids(reply, &ids, &n);
        if (r < 0)
                return ctl_bad_reply(r);
        if (single_id && ids[0] == 0 && a->command == CTL_COMMAND_TRIM) {
                /* Trim's answer when no mount is given or configured. */
                if (a->json)
                        printf("[]\n");
                else
                        printf("Nothing to trim: no mounts given and none configured in [trim].\n");
                return flush_stdout();
        }

        if (!a->wait)
                return print_started_jobs(c, a, ids, n);
        return waiter_run(w, ids, n, wait_output(a), a->dry_run);
}

static int command_reclaim(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (ctl_new_call(c, "Reclaim", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append_strv(m, a->names);
        if (r >= 0)
                r = sd_bus_message_append(m, "bbs", (int) a->all, (int) a->dry_run,
                                          ctl_discard_to_string(a->discard));
        if (r < 0)
                return ctl_bad_reply(r);
        return start_jobs(c, a, m, false);
}

static int command_compact(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (ctl_new_call(c, "Compact", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append(m, "s", a->names[0]);
        if (r < 0)
                return ctl_bad_reply(r);
        return start_jobs(c, a, m, true);
}

static int command_trim(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (ctl_new_call(c, "Trim", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append_strv(m, a->names);
        if (r >= 0)
                r = sd_bus_message_append(m, "b", (int) a->all);
        if (r < 0)
                return ctl_bad_reply(r);
        return start_jobs(c, a, m, true);
}

/* ---- cancel, set-sparse, reload, version ---- */

static int command_cancel(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        if (ctl_new_call(c, "Cancel", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append(m, "t", a->job_id);
        if (r < 0)
                return ctl_bad_reply(r);
        return ctl_call(c, m, &reply);
}

static int command_set_sparse(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        if (ctl_new_call(c, "SetSparse", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_message_append(m, "sb", a->names[0], (int) a->sparse);
        if (r < 0)
                return ctl_bad_reply(r);
        return ctl_call(c, m, &reply);
}

static int command_reload(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        if (ctl_new_call(c, "Reload", &m) < 0)
                return CTL_EXIT_FAILED;
        r = sd_bus_call(c->bus, m, 0, &error, &reply);
        if (r >= 0)
                return CTL_EXIT_OK;
        if (!sd_bus_error_has_name(&error, VHDRECLAIM_ERROR_CONFIG))
                return ctl_report_error(c, &error, r);

        /* The message holds the "FILE:LINE: ..." lines, one per line. */
        log_error("the configuration is invalid, vhdreclaimd keeps the one it had:");
        fprintf(stderr, "%s\n", error.message ? error.message : "(no details)");
        return CTL_EXIT_FAILED;
}

static int command_version(Ctl *c, const CtlArgs *a) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *daemon_version = NULL;
        int r;

        r = sd_bus_get_property_string(c->bus, NULL, VHDRECLAIM_BUS_PATH, VHDRECLAIM_BUS_INTERFACE,
                                       "Version", &error, &daemon_version);
        if (r < 0)
                return ctl_report_error(c, &error, r);

        if (a->json) {
                JsonOut j = { .f = stdout };

                json_begin(&j, '{');
                json_key(&j, "client"); json_string(&j, VHDRECLAIM_VERSION);
                json_key(&j, "daemon"); json_string(&j, daemon_version);
                json_end(&j, '}');
                fputc('\n', stdout);
        } else
                printf("vhdreclaimd %s\n", daemon_version);
        return flush_stdout();
}

int ctl_run(Ctl *c, const CtlArgs *a) {
        switch (a->command) {
        case CTL_COMMAND_STATUS:
                return command_status(c, a);
        case CTL_COMMAND_RECLAIM:
                return command_reclaim(c, a);
        case CTL_COMMAND_COMPACT:
                return command_compact(c, a);
        case CTL_COMMAND_TRIM:
                return command_trim(c, a);
        case CTL_COMMAND_CANCEL:
                return command_cancel(c, a);
        case CTL_COMMAND_SET_SPARSE:
                return command_set_sparse(c, a);
        case CTL_COMMAND_RELOAD:
                return command_reload(c, a);
        case CTL_COMMAND_HISTORY:
                return command_history(c, a);
        case CTL_COMMAND_METRICS:
                return command_metrics(c, a);
        case CTL_COMMAND_VERSION:
                return command_version(c, a);
        default:
                log_error("internal error: command %d has no handler", (int) a->command);
                return CTL_EXIT_FAILED;
        }
}
