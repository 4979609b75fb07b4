/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

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
        sd_event_unref(f->m.event);
        free(f->m.last_status);
        free(f);
        return 0;
}

static void test_disk_timer(void **state) {
        Fixture *f = *state;
        uint64_t now = usec_now(CLOCK_REALTIME), t;

        /* Passed an hour ago, daily: the timer is armed for 23 h from now. */
        f->d.record.last_pass = now - H;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_non_null(f->d.pass_timer);
        assert_int_equal(f->d.next_pass, now - H + 24 * H);
        assert_int_equal(sd_event_source_get_time(f->d.pass_timer, &t), 0);
        assert_int_equal(t, f->d.next_pass);

        /* Rescheduled from a new record: the same source moves. */
        f->d.record.last_pass = now - 2 * H;
        assert_int_equal(schedule_disk(&f->d), 0);
        assert_int_equal(f->d.next_pass, now + 22 * H);

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_next_pass),
                cmocka_unit_test(test_persistent_catch_up),
                cmocka_unit_test(test_random_delay),
                cmocka_unit_test_setup_teardown(test_disk_timer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missed_pass_fires_at_start, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
