/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "notify.h"
#include "timespan.h"

void notify_ready(void) {
        (void) sd_notify(false, "READY=1");
}

void notify_reloading(void) {
        /* One datagram, so the service manager sees both at once. */
        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec_now(CLOCK_MONOTONIC));
}

void notify_stopping(void) {
        (void) sd_notify(false, "STOPPING=1");
}

static void append_running(FILE *f, Manager *m) {
        bool first = true;

        for (Job *j = m->jobs; j; j = j->next) {
                uint64_t done, total;

                if (!j->running)
                        continue;
                done = atomic_load(&j->done);
                total = atomic_load(&j->total);
                fprintf(f, "%s%s %s: %u%%", first ? "" : ", ", j->kind == JOB_TRIM ? "trimming" : j->kind == JOB_UNSPARSE ? "re-allocating" : "reclaiming",
                        j->target, total > 0 ? (unsigned) (MIN(done, total) * 100 / total) : 0u);
                first = false;
        }
}

static uint64_t next_pass(Manager *m) {
        uint64_t next = 0;

        for (size_t i = 0; i < m->n_disks; i++)
                if (m->disks[i]->next_pass && (!next || m->disks[i]->next_pass < next))
                        next = m->disks[i]->next_pass;
        return next;
}

int notify_format_status(Manager *m, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, queued = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        for (Job *j = m->jobs; j; j = j->next)
                if (!j->running)
                        queued++;

        if (manager_active_jobs(m) > 0) {
                append_running(f, m);
                if (queued > 0)
                        fprintf(f, "; %zu queued", queued);
        } else {
                uint64_t next = next_pass(m), now = usec_now(CLOCK_REALTIME);

                fprintf(f, "idle; %zu image%s", m->n_disks, m->n_disks == 1 ? "" : "s");
                if (next) {
                        char rel[TIMESPAN_UNIT_MAX];

                        fprintf(f, ", next pass in %s",
                                format_timespan_unit(rel, next > now ? next - now : 0));
                }
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

void notify_update_status(Manager *m) {
        _cleanup_free_ char *status = NULL;

        if (notify_format_status(m, &status) < 0)
                return;
        if (m->last_status && strcmp(m->last_status, status) == 0)
                return;
        (void) sd_notifyf(false, "STATUS=%s", status);
        free(m->last_status);
        m->last_status = TAKE_PTR(status);
}
