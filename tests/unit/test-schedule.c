/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "manager.h"
#include "schedule.h"

#define H USEC_PER_HOUR
#define NOW (UINT64_C(1795240167) * USEC_PER_SEC)

static void test_next_pass(void **state) {
        /* No interval: no periodic passes at all. */
        assert_int_equal(schedule_next(NOW - H, 0, 0, NOW), 0);
        assert_int_equal(schedule_next(0, 0, 5, NOW), 0);
        /* Last pass an hour ago, daily: 23 h from now, plus the random part. */
        assert_int_equal(schedule_next(NOW - H, 24 * H, 0, NOW), NOW + 23 * H);
        assert_int_equal(schedule_next(NOW - H, 24 * H, 17, NOW), NOW + 23 * H + 17);
        /* Due exactly now. */
        assert_int_equal(schedule_next(NOW - 24 * H, 24 * H, 0, NOW), NOW);
}

static void test_persistent_catch_up(void **state) {
        /* Never passed: due at start. */
        assert_int_equal(schedule_next(0, 24 * H, 0, NOW), NOW);
        assert_int_equal(schedule_next(0, 24 * H, 3 * H, NOW), NOW + 3 * H);
        /* Missed while the daemon was down (a week ago, daily): once, now, not seven times. */
        assert_int_equal(schedule_next(NOW - 7 * 24 * H, 24 * H, 0, NOW), NOW);
        assert_int_equal(schedule_next(NOW - 7 * 24 * H, 24 * H, 42, NOW), NOW + 42);
        /* A last pass in the future (the clock went back): at most one interval away. */
        assert_int_equal(schedule_next(NOW + H, 24 * H, 0, NOW), NOW + 25 * H);
        /* No overflow. */
        assert_int_equal(schedule_next(UINT64_MAX - 5, 24 * H, 0, NOW), NOW);
        assert_int_equal(schedule_next(NOW - H, 24 * H, UINT64_MAX, NOW), UINT64_MAX);
}

static void test_random_delay(void **state) {
        uint64_t seen_low = 0, seen_high = 0;

        assert_int_equal(schedule_random_delay(0), 0);
        for (int i = 0; i < 2000; i++) {
                uint64_t v = schedule_random_delay(H);

                assert_true(v <= H);
                seen_low += v < H / 2;
                seen_high += v >= H / 2;
        }
        /* Spread over the range, not stuck at one end. */
        assert_true(seen_low > 500 && seen_high > 500);
        for (int i = 0; i < 100; i++)
                assert_true(schedule_random_delay(1) <= 1);
}

typedef struct Fixture {
        Manager m;
        Disk d;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        if (!f || sd_event_new(&f->m.event) < 0)
                return -1;
        /* The queued job must not start a real pass. */
        f->m.stopping = true;
        f->d = (Disk) { .manager = &f->m, .name = (char *) "a", .path = (char *) "/nonexistent/a.vhdx" };
        reclaim_settings_default(&f->d.settings);
        f->d.settings.randomized_delay_usec = 0;
        disk_record_init(&f->d.record);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        while (f->m.jobs) {
                Job *j = f->m.jobs;

                manager_unlink_job(&f->m, j);
                job_free(j);
        }
        schedule_disk_cancel(&f->d);
        f->m.dispatch_defer = sd_event_source_disable_unref(f->m.dispatch_defer);
        f->m.status_defer = sd_event_source_disable_unref(f->m.status_defer);
        sd_event_unref(f->m.event);
        free(f->m.last_status);
        free(f);
        return 0;
}

static void test_disk_timer(void **state) {
        Fixture *f = *state;
        uint64_t now = usec_now(CLOCK_REALTIME), t;

        uint64_t phase = schedule_phase("a", 24 * H), first;

        /* Passed an hour ago, daily: the timer is armed for the disk's own
         * slot (its phase within the day), 12 to 36 h after the last pass. */
        f->d.record.last_pass = now - H;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_non_null(f->d.pass_timer);
        first = f->d.next_pass;
        assert_int_equal(first % (24 * H), phase);
        assert_true(first >= now - H + 12 * H && first < now - H + 36 * H);
        assert_int_equal(sd_event_source_get_time(f->d.pass_timer, &t), 0);
        assert_int_equal(t, f->d.next_pass);

        /* Rescheduled from a new record: the same source moves. */
        f->d.record.last_pass = now - 2 * H;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_int_equal(f->d.next_pass % (24 * H), phase);
        assert_true(f->d.next_pass >= now - 2 * H + 12 * H && f->d.next_pass < now - 2 * H + 36 * H);

        /* Missing, or no interval: nothing armed. */
        f->d.missing = true;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_null(f->d.pass_timer);
        assert_int_equal(f->d.next_pass, 0);
        f->d.missing = false;
        f->d.settings.interval_usec = 0;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_null(f->d.pass_timer);
}

static void test_missed_pass_fires_at_start(void **state) {
        Fixture *f = *state;
        uint64_t now = usec_now(CLOCK_REALTIME);

        /* The last pass was three days ago: at start, the timer is due at once and queues a pass. */
        f->d.record.last_pass = now - 72 * H;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_true(f->d.next_pass >= now && f->d.next_pass < now + 5 * USEC_PER_SEC);
        for (int i = 0; i < 50 && !f->m.jobs; i++)
                assert_true(sd_event_run(f->m.event, 100 * USEC_PER_MSEC) >= 0);
        assert_non_null(f->m.jobs);
        assert_ptr_equal(f->d.job, f->m.jobs);
        assert_int_equal(f->m.jobs->trigger, TRIGGER_SCHEDULE);
        assert_int_equal(f->m.jobs->kind, JOB_RECLAIM);
        /* While the job is queued, no timer. */
        assert_int_equal(f->d.next_pass, 0);
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_null(f->d.pass_timer);
}

/* Periodic passes of many images spread over the interval, each on its
 * own stable slot, steadily one interval apart. */
static void test_spread(void **state) {
        const uint64_t day = 24 * H;
        unsigned buckets[24] = {};

        for (unsigned i = 0; i < 10000; i++) {
                char name[64];
                uint64_t phase, slot0, last, next;

                snprintf(name, sizeof name, "profiles/user%05u.vhdx", i);
                phase = schedule_phase(name, day);
                assert_true(phase < day);
                assert_int_equal(phase, schedule_phase(name, day));
                buckets[phase / H]++;

                /* The first pass of a new image: now, as before. */
                assert_int_equal(schedule_next_spread(0, day, phase, 0, NOW), NOW);
                /* Steady state: passed at its slot (a few minutes late), next at the following slot. */
                slot0 = NOW - NOW % day + phase;
                last = slot0 + 7 * USEC_PER_MINUTE;
                next = schedule_next_spread(last, day, phase, 0, last + USEC_PER_MINUTE);
                assert_int_equal(next, slot0 + day);
                /* After a pass at any other time, the next lies 12 to 36 h on, on the slot. */
                last = NOW + i * 37 * USEC_PER_SEC;
                next = schedule_next_spread(last, day, phase, 5, last);
                assert_int_equal((next - 5) % day, phase);
                assert_true(next - 5 >= last + day / 2 && next - 5 < last + day / 2 + day);
        }
        /* All at the same minute before; now about 417 an hour, every hour. */
        for (unsigned h = 0; h < 24; h++)
                assert_true(buckets[h] > 300 && buckets[h] < 540);
        /* Overdue by a whole interval (the daemon was down): at once, once. */
        assert_int_equal(schedule_next_spread(NOW - 3 * day, day, H, 0, NOW), NOW);
        /* A slot already past without being overdue: at once. */
        assert_int_equal(schedule_next_spread(NOW - 20 * H, day, (NOW - 2 * H) % day, 0, NOW), NOW);
        assert_int_equal(schedule_next_spread(NOW - H, 0, 0, 0, NOW), 0);
}

static void test_quiet_until(void **state) {
        const uint64_t idle = 10 * USEC_PER_MINUTE;
        const int64_t ns = 1000;

        /* Changed a minute ago: 9 more minutes. */
        assert_int_equal(schedule_quiet_until((int64_t) (NOW - USEC_PER_MINUTE) * ns, UINT64_MAX, idle, NOW),
                         NOW + 9 * USEC_PER_MINUTE);
        /* Changed an hour ago, never closed since we run: now. */
        assert_int_equal(schedule_quiet_until((int64_t) (NOW - H) * ns, UINT64_MAX, idle, NOW), NOW);
        /* ... but closed 30 s ago (a durable handle may come back): 9.5 more minutes. */
        assert_int_equal(schedule_quiet_until((int64_t) (NOW - H) * ns, 30 * USEC_PER_SEC, idle, NOW),
                         NOW + idle - 30 * USEC_PER_SEC);
        assert_int_equal(schedule_quiet_until((int64_t) (NOW - H) * ns, idle, idle, NOW), NOW);
        /* A ctime in the future (the clock went back): counted as now. */
        assert_int_equal(schedule_quiet_until((int64_t) (NOW + 5 * H) * ns, UINT64_MAX, idle, NOW), NOW + idle);
        /* idleDelay=0: never waits. */
        assert_int_equal(schedule_quiet_until((int64_t) NOW * ns, 0, 0, NOW), NOW);
}

static void test_device_has_room(void **state) {
        const uint64_t running[] = { 1, 1, 2 };

        assert_true(schedule_device_has_room(NULL, 0, 1, 1));
        assert_false(schedule_device_has_room(running, 3, 1, 2));
        assert_true(schedule_device_has_room(running, 3, 2, 2));
        assert_false(schedule_device_has_room(running, 3, 2, 1));
        assert_true(schedule_device_has_room(running, 3, 3, 1));
        assert_true(schedule_device_has_room(running, 3, 1, 3));
        /* maxParallel 0 cannot happen (the config says 1..64), and would mean 1. */
        assert_true(schedule_device_has_room(running, 3, 3, 0));
}

/* The real dispatcher: with maxParallel=1, of four queued passes two on
 * each of two devices, one per device starts. */
static void test_dispatch_per_device(void **state) {
        Manager m = { .worker_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
        Disk disks[4];
        Disk *list[4];
        Job *jobs[4];
        char names[4][8];

        assert_true(m.worker_efd >= 0);
        assert_int_equal(sd_event_new(&m.event), 0);
        assert_int_equal(config_new_default(&m.config), 0);
        m.config->reclaim.max_parallel = 1;
        for (int i = 0; i < 4; i++) {
                snprintf(names[i], sizeof names[i], "d%d", i);
                disks[i] = (Disk) { .manager = &m, .name = names[i], .path = (char *) "/nonexistent/x.img",
                                    .origin = (char *) "disk", .config_sparse = true,
                                    .dev = i < 2 ? 101 : 202 };
                reclaim_settings_default(&disks[i].settings);
                disks[i].settings.max_parallel = 1;
                disk_record_init(&disks[i].record);
                list[i] = &disks[i];
        }
        m.disks = list;
        m.n_disks = 4;
        for (int i = 0; i < 4; i++)
                assert_int_equal(manager_queue_reclaim(&m, &disks[i], TRIGGER_MANUAL, false, _DISCARD_MODE_INVALID,
                                                       &jobs[i]), 0);
        /* Started once the events pending are handled: one walk of the queue. */
        assert_false(jobs[0]->running);
        for (int i = 0; i < 10 && !jobs[0]->running; i++)
                assert_true(sd_event_run(m.event, 100 * USEC_PER_MSEC) >= 0);
        assert_true(jobs[0]->running);
        assert_false(jobs[1]->running);   /* same device as d0 */
        assert_true(jobs[2]->running);    /* another device: in parallel */
        assert_false(jobs[3]->running);
        assert_int_equal(m.n_running_reclaims, 2);

        for (int i = 0; i < 4; i++) {
                if (jobs[i]->running)
                        pthread_join(jobs[i]->thread, NULL);
                manager_unlink_job(&m, jobs[i]);
                job_free(jobs[i]);
                schedule_disk_cancel(&disks[i]);
                disk_record_done(&disks[i].record);
        }
        close(m.worker_efd);
        config_free(m.config);
        m.dispatch_defer = sd_event_source_disable_unref(m.dispatch_defer);
        m.status_defer = sd_event_source_disable_unref(m.status_defer);
        sd_event_unref(m.event);
        free(m.last_status);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_next_pass),
                cmocka_unit_test(test_persistent_catch_up),
                cmocka_unit_test(test_random_delay),
                cmocka_unit_test(test_spread),
                cmocka_unit_test(test_quiet_until),
                cmocka_unit_test(test_device_has_room),
                cmocka_unit_test(test_dispatch_per_device),
                cmocka_unit_test_setup_teardown(test_disk_timer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missed_pass_fires_at_start, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
