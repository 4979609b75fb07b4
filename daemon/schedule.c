/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>

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

uint64_t schedule_phase(const char *name, uint64_t interval) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        if (interval == 0)
                return 0;
        for (const unsigned char *p = (const unsigned char *) name; *p; p++) {
                h ^= *p;
                h *= UINT64_C(0x100000001b3);
        }
        /* FNV's low bits mix poorly for short names: fold the high half in. */
        h ^= h >> 29;
        return h % interval;
}

uint64_t schedule_next_spread(uint64_t last, uint64_t interval, uint64_t phase, uint64_t delay, uint64_t now) {
        uint64_t base, slot;

        if (interval == 0)
                return 0;
        if (last == 0 || last > UINT64_MAX / 2 || interval > UINT64_MAX / 8 || now > UINT64_MAX / 2 ||
            last + interval <= now)
                return schedule_next(0, interval, delay, now);
        base = last + interval / 2;
        slot = base + (phase % interval + interval - base % interval) % interval;
        if (slot < now)
                slot = now;
        return slot > UINT64_MAX - delay ? UINT64_MAX : slot + delay;
}

uint64_t schedule_quiet_until(int64_t ctime_nsec, uint64_t last_close_ago, uint64_t idle_delay, uint64_t now) {
        uint64_t until = 0;

        if (ctime_nsec > 0) {
                uint64_t changed = (uint64_t) ctime_nsec / 1000;

                /* A ctime in the future (the clock went back) counts as now. */
                until = MIN(changed, now) + idle_delay;
        }
        if (last_close_ago != UINT64_MAX && last_close_ago < idle_delay)
                until = MAX(until, now + (idle_delay - last_close_ago));
        return MAX(until, now);
}

bool schedule_device_has_room(const uint64_t *running_devs, size_t n, uint64_t dev, unsigned max_parallel) {
        unsigned same = 0;

        for (size_t i = 0; i < n; i++)
                same += running_devs[i] == dev;
        return same < MAX(max_parallel, 1u);
}

uint64_t schedule_random_delay(uint64_t max) {
        uint64_t v;

        if (max == 0)
                return 0;
        v = ((uint64_t) arc4random() << 32) | arc4random();
        return max == UINT64_MAX ? v : v % (max + 1);
}

static int arm_pass_timer(Disk *d, uint64_t next);

/* A periodic pass, or estimate, waits for idleDelay of quiet (see
 * schedule_quiet_until()): true when it re-armed the timer for then. */
static bool schedule_disk_wait_quiet(Disk *d) {
        uint64_t now = usec_now(CLOCK_REALTIME), until, ago = UINT64_MAX;
        int64_t ctime_nsec;
        struct stat st;

        if (stat(d->path, &st) < 0)
                return false;   /* the pass says what is wrong */
        if (d->last_close > 0)
                ago = usec_now(CLOCK_BOOTTIME) - d->last_close;
        ctime_nsec = (int64_t) st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
        /* The last change was our own pass's: no client's handle saw the file before it. */
        if (d->record.have_fingerprint && d->record.fingerprint.ctime_nsec == ctime_nsec &&
            d->record.fingerprint.ino == (uint64_t) st.st_ino)
                ctime_nsec = 0;
        until = schedule_quiet_until(ctime_nsec, ago, d->settings.idle_delay_usec, now);
        if (until <= now)
                return false;
        log_debug("%s: changed or closed less than idleDelay ago: its periodic pass waits %" PRIu64 " s",
                  d->name, (until - now + USEC_PER_SEC - 1) / USEC_PER_SEC);
        if (arm_pass_timer(d, until) < 0)
                return false;
        manager_state_changed(d->manager);
        return true;
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
        /* An estimate waits too: it opens the image, and a client coming
         * back for its durable handle must find nothing touched it. */
        if (schedule_disk_wait_quiet(d))
                return 0;
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
        uint64_t next;

        /* While a job is queued or running, its end schedules the next one. */
        if (d->missing || d->job) {
                schedule_disk_cancel(d);
                return 0;
        }
        next = schedule_next_spread(MAX(d->record.last_pass, d->last_unchanged), d->settings.interval_usec,
                                    schedule_phase(d->name, d->settings.interval_usec),
                                    schedule_random_delay(d->settings.randomized_delay_usec), usec_now(CLOCK_REALTIME));
        if (next == 0) {
                schedule_disk_cancel(d);
                return 0;
        }
        return arm_pass_timer(d, next);
}

static int arm_pass_timer(Disk *d, uint64_t next) {
        Manager *m = d->manager;
        int r;

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
