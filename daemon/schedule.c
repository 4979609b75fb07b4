/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "schedule.h"

/* Timers of many images coalesce within this (sd-event's accuracy). */
#define PASS_TIMER_ACCURACY_USEC USEC_PER_SEC

uint64_t schedule_next(uint64_t last, uint64_t interval, uint64_t delay, uint64_t now) {
        uint64_t due;

        if (interval == 0)
                return 0;
        if (last == 0 || last > UINT64_MAX - interval)
                due = now;
        else
                due = last + interval;
        /* Missed while we were not running (or the clock went back past it): catch up. */
        if (due < now)
                due = now;
        return due > UINT64_MAX - delay ? UINT64_MAX : due + delay;
}

uint64_t schedule_random_delay(uint64_t max) {
        uint64_t v;

        if (max == 0)
                return 0;
        v = ((uint64_t) arc4random() << 32) | arc4random();
        return max == UINT64_MAX ? v : v % (max + 1);
}

static int on_pass_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Disk *d = userdata;
        Job *j;
        int r;

        d->next_pass = 0;
        if (disk_watch_only(d) && disk_unchanged_since_estimate(d)) {
                /* Nothing to measure that the last estimate did not. */
                log_debug("%s: unchanged since its last estimate", d->name);
                d->last_unchanged = usec_now(CLOCK_REALTIME);
                (void) schedule_disk(d);
                manager_state_changed(d->manager);
                return 0;
        }
        r = manager_queue_reclaim(d->manager, d, TRIGGER_SCHEDULE, false, _DISCARD_MODE_INVALID, &j);
        if (r < 0)
                log_warning_errno(r, "cannot queue the periodic pass of %s: %m", d->name);
        manager_state_changed(d->manager);
        return 0;
}

void schedule_disk_cancel(Disk *d) {
        d->pass_timer = sd_event_source_disable_unref(d->pass_timer);
        d->next_pass = 0;
}

int schedule_disk(Disk *d) {
        Manager *m = d->manager;
        uint64_t next;
        int r;

        /* While a job is queued or running, its end schedules the next one. */
        if (d->missing || d->job) {
                schedule_disk_cancel(d);
                return 0;
        }
        next = schedule_next(MAX(d->record.last_pass, d->last_unchanged), d->settings.interval_usec,
                             schedule_random_delay(d->settings.randomized_delay_usec), usec_now(CLOCK_REALTIME));
        if (next == 0) {
                schedule_disk_cancel(d);
                return 0;
        }
        d->next_pass = next;
        if (d->pass_timer) {
                r = sd_event_source_set_time(d->pass_timer, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(d->pass_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(m->event, &d->pass_timer, CLOCK_REALTIME, next, PASS_TIMER_ACCURACY_USEC,
                                      on_pass_timer, d);
        if (r < 0)
                return log_error_errno(r, "cannot arm the pass timer of %s: %m", d->name);
        return 0;
}

static uint64_t trim_last(Manager *m) {
        uint64_t last = 0;

        for (size_t i = 0; i < m->n_trim_status; i++)
                last = MAX(last, m->trim_status[i].last);
        return last;
}

static int on_trim_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *why = NULL;
        Job *j;
        int r;

        m->trim_next = 0;
        m->trim_attempt = usec_now(CLOCK_REALTIME);
        r = manager_queue_trim(m, NULL, 0, false, &why, &j);
        /* No job, no trim_finished() to arm the next one: arm it here, or
         * one bad run would end the periodic trims for good. */
        if (r == -ENXIO)
                log_warning("periodic trim: none of the [trim] mounts can be trimmed now (%s); trying again in an "
                            "interval", why);
        else if (r < 0)
                log_warning_errno(r, "cannot queue the periodic trim: %m");
        if (r < 0)
                (void) schedule_trim(m);
        manager_state_changed(m);
        return 0;
}

int schedule_trim(Manager *m) {
        const TrimConfig *t = &m->config->trim;
        uint64_t next;
        int r;

        next = (t->all || t->n_mounts > 0) && !m->trim_running
                       ? schedule_next(MAX(trim_last(m), m->trim_attempt), t->interval_usec, 0, usec_now(CLOCK_REALTIME))
                       : 0;
        m->trim_next = next;
        if (next == 0) {
                m->trim_timer = sd_event_source_disable_unref(m->trim_timer);
                return 0;
        }
        if (m->trim_timer) {
                r = sd_event_source_set_time(m->trim_timer, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->trim_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(m->event, &m->trim_timer, CLOCK_REALTIME, next, PASS_TIMER_ACCURACY_USEC,
                                      on_trim_timer, m);
        if (r < 0)
                return log_error_errno(r, "cannot arm the trim timer: %m");
        return 0;
}
