/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "disk-image-util.h"
#include "image.h"
#include "macro.h"
#include "pass.h"
#include "scratch-dir.h"
#include "vhdx.h"

/* pass_run() on real files: how minReclaim, maxPassTime, cancel and a lease
 * break end a pass, and what it leaves for the next one. */

static char *path_in(void **state, const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", (const char *) *state, name) > 0);
        return p;
}

/* A raw image of size bytes of written (allocated) zeros. */
static void make_zero_raw(const char *path, uint64_t size) {
        static uint8_t zeros[1 << 20];
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        for (uint64_t off = 0; off < size; off += sizeof zeros)
                assert_int_equal(pwrite(fd, zeros, sizeof zeros, (off_t) off), (ssize_t) sizeof zeros);
        assert_int_equal(fsync(fd), 0);
        close(fd);
}

static uint64_t allocated_of(const char *path) {
        struct stat st;

        assert_int_equal(stat(path, &st), 0);
        return (uint64_t) st.st_blocks * 512;
}

/* ---- progress: what the zero tier examined ---- */

typedef struct Progress {
        uint64_t last_done, last_total;
        unsigned calls, backwards;
        uint64_t sleep_on_first_unread_usec;    /* sleep in the first call before the zero tier */
        bool slept;
        void (*hook)(struct Progress *p, uint64_t done);
        const char *path;
        bool forked;
        pid_t child;
} Progress;

static void on_progress(uint64_t done, uint64_t total, void *userdata) {
        Progress *p = userdata;

        if (total == 0 && p->sleep_on_first_unread_usec && !p->slept) {
                /* Still in a tier before the zero tier (its total is not set). */
                p->slept = true;
                usleep((useconds_t) p->sleep_on_first_unread_usec);
        }
        if (total == 0)
                return;
        if (p->calls > 0 && done < p->last_done)
                p->backwards++;
        p->last_done = done;
        p->last_total = total;
        p->calls++;
        if (p->hook)
                p->hook(p, done);
}

/* minReclaim reached part-way: one scan finds, then punches, every run; the
 * zero tier's progress goes over the image once, never back. */
static void test_threshold_reached_reads_once(void **state) {
        _cleanup_free_ char *path = path_in(state, "once.raw");
        Progress p = {};
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .min_reclaim = 8 * MiB,
                          .progress = on_progress, .userdata = &p };
        PassReport rep;

        make_zero_raw(path, 24 * MiB);
        assert_int_equal(pass_run(path, &o, &rep), 0);
        assert_string_equal(pass_result_to_string(rep.result), "success");
        assert_int_equal(rep.zero_bytes, 24 * MiB);
        assert_int_equal(rep.resume_offset, 0);
        assert_int_equal(allocated_of(path), 0);
        assert_int_equal(p.backwards, 0);
        assert_int_equal(p.last_done, 24 * MiB);
        assert_int_equal(p.last_total, 24 * MiB);
        pass_report_done(&rep);
        unlink(path);
}

/* A whole round below minReclaim: nothing punched, and the next round starts
 * from the beginning. */
static void test_threshold_not_reached(void **state) {
        _cleanup_free_ char *path = path_in(state, "below.raw");
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .min_reclaim = GiB,
                          .resume_offset = 4 * MiB };
        PassReport rep;
        uint64_t before;

        make_zero_raw(path, 24 * MiB);
        before = allocated_of(path);
        assert_int_equal(pass_run(path, &o, &rep), 0);
        assert_string_equal(pass_result_to_string(rep.result), "skipped-threshold");
        assert_int_equal(rep.zero_bytes, 20 * MiB);     /* found from the resume point on */
        assert_int_equal(rep.resume_offset, 0);
        assert_int_equal(allocated_of(path), before);
        pass_report_done(&rep);
        unlink(path);
}

/* maxPassTime during the estimate (issue 9 bug 1): never success with
 * nothing punched; the stop offset moves on and the round comes back to 0. */
static void test_deadline_below_threshold_moves_on(void **state) {
        _cleanup_free_ char *path = path_in(state, "deadline.raw");
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .min_reclaim = 1024 * GiB,
                          .io_limit = 32 * MiB, .max_pass_usec = 1000 * 1000 };
        uint64_t before, resume = 0;
        unsigned passes = 0;

        make_zero_raw(path, 64 * MiB);
        before = allocated_of(path);
        do {
                PassReport rep;

                o.resume_offset = resume;
                assert_int_equal(pass_run(path, &o, &rep), 0);
                printf("pass %u from 0x%" PRIx64 ": %s, zero %" PRIu64 ", resume 0x%" PRIx64 ": %s\n", passes,
                       resume, pass_result_to_string(rep.result), rep.zero_bytes, rep.resume_offset, rep.message);
                assert_string_equal(pass_result_to_string(rep.result), "skipped-threshold");
                assert_int_equal(allocated_of(path), before);
                if (rep.resume_offset != 0)
                        assert_true(rep.resume_offset > resume && rep.resume_offset < 64 * MiB);
                resume = rep.resume_offset;
                pass_report_done(&rep);
                passes++;
        } while (resume != 0 && passes < 10);
        assert_true(passes >= 2);       /* the deadline did stop one */
        assert_int_equal(resume, 0);    /* and a round ended */
        unlink(path);
}

/* A VHDX whose blocks 0 and 4 are stale (BAT state ZERO, file space still
 * theirs) and block 2 present between them: two stale ranges apart. */
static int make_stale_vhdx(const char *path) {
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        int fd, r;

        r = run("qemu-img create -q -f vhdx -o block_size=1M,subformat=dynamic '%s' 16M && "
                "qemu-io -f vhdx -c 'write -q -P 0x11 0 1M' -c 'write -q -P 0x22 2M 1M' "
                "-c 'write -q -P 0x33 4M 1M' '%s' >/dev/null", path, path);
        if (r != 0)
                return -EIO;
        fd = open(path, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(image_open(fd, path, DISK_FORMAT_AUTO, &img, &error), 0);
        for (uint64_t b = 0; b <= 4; b += 4) {
                uint64_t i = vhdx_bat_index(img->vhdx, b);
                uint64_t e = (vhdx_bat_entry(img->vhdx, i) & ~UINT64_C(7)) | 2;   /* PAYLOAD_BLOCK_ZERO */

                assert_int_equal(pwrite(fd, &e, sizeof e, (off_t) (img->vhdx->bat_offset + i * 8)), 8);
        }
        image_free(img);
        close(fd);
        return 0;
}

/* A maxPassTime stop in the stale tier (issue 9 bug 3): the zero tier has
 * not run, so the next pass's zero tier starts where this one would have. */
static void test_stale_timeout_keeps_resume_point(void **state) {
        _cleanup_free_ char *path = path_in(state, "stale.vhdx");
        Progress p = { .sleep_on_first_unread_usec = 700 * 1000 };
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .max_pass_usec = 500 * 1000,
                          .resume_offset = 5 * MiB, .progress = on_progress, .userdata = &p };
        PassReport rep;

        if (!have_tools((const char *const[]) { "qemu-img", "qemu-io", NULL }) || make_stale_vhdx(path) < 0) {
                print_message("qemu-img/qemu-io could not make the test image\n");
                exit(missing_prerequisite_status());
        }
        assert_int_equal(pass_run(path, &o, &rep), 0);
        printf("%s: stale %" PRIu64 ", resume 0x%" PRIx64 ": %s\n", pass_result_to_string(rep.result),
               rep.stale_bytes, rep.resume_offset, rep.message);
        assert_true(p.slept);
        assert_int_equal(rep.resume_offset, 5 * MiB);
        assert_true(rep.stale_bytes < 2 * MiB);         /* the deadline came after the first range */
        assert_string_equal(pass_result_to_string(rep.result), "success");
        assert_non_null(strstr(rep.message, "stale tier"));
        assert_int_equal(run("qemu-img check -q -f vhdx '%s' && "
                             "qemu-io -f vhdx -c 'read -q -P 0x22 2M 1M' -c 'read -q -P 0 0 1M' '%s' >/dev/null",
                             path, path), 0);
        pass_report_done(&rep);
        unlink(path);
}

/* ---- cancel ---- */

static atomic_bool cancel_flag;

static void cancel_at_8m(Progress *p, uint64_t done) {
        if (done >= 8 * MiB)
                atomic_store(&cancel_flag, true);
}

/* A cancel is its own result and keeps how far the zero tier got. */
static void test_cancel_keeps_progress(void **state) {
        _cleanup_free_ char *path = path_in(state, "cancel.raw");
        Progress p = { .hook = cancel_at_8m };
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .io_limit = 64 * MiB,
                          .cancel = &cancel_flag, .progress = on_progress, .userdata = &p };
        PassReport rep;

        atomic_store(&cancel_flag, false);
        make_zero_raw(path, 32 * MiB);
        assert_int_equal(pass_run(path, &o, &rep), 0);
        printf("%s, zero %" PRIu64 ", resume 0x%" PRIx64 ": %s\n", pass_result_to_string(rep.result),
               rep.zero_bytes, rep.resume_offset, rep.message);
        assert_string_equal(pass_result_to_string(rep.result), "cancelled");
        assert_false(pass_result_is_failure(rep.result));
        assert_true(rep.resume_offset > 0 && rep.resume_offset < 32 * MiB);
        assert_true(rep.zero_bytes > 0 && rep.zero_bytes <= rep.resume_offset);
        assert_int_equal(pass_result_from_string("cancelled"), PASS_CANCELLED);
        pass_report_done(&rep);
        unlink(path);
}

/* ---- a lease break: release, then sync (issue 9 bug 5) ---- */

/* The daemon's fsync() calls come here, in this test program: count them,
 * and those made while this process still holds a lease on the file. */
static unsigned n_fsync, n_fsync_leased;

static bool lease_held_by_us(ino_t ino) {
        _cleanup_fclose_ FILE *f = fopen("/proc/locks", "re");
        char line[512], needle[64];

        if (!f)
                return false;
        snprintf(needle, sizeof needle, ":%llu ", (unsigned long long) ino);
        while (fgets(line, sizeof line, f)) {
                char pid[32];

                snprintf(pid, sizeof pid, " %d ", (int) getpid());
                if (strstr(line, "LEASE") && !strstr(line, "->") && strstr(line, pid) && strstr(line, needle))
                        return true;
        }
        return false;
}

int fsync(int fd) {
        struct stat st;

        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
                n_fsync++;
                if (lease_held_by_us(st.st_ino))
                        n_fsync_leased++;
        }
        return (int) syscall(SYS_fsync, fd);
}

static bool lease_breaking(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/locks", "re");
        char line[512], pid[32];

        snprintf(pid, sizeof pid, " %d ", (int) getpid());
        while (f && fgets(line, sizeof line, f))
                if (strstr(line, "LEASE") && strstr(line, "BREAK") && strstr(line, pid))
                        return true;
        return false;
}

/* Part-way through the zero tier, another process opens the image; wait
 * until the kernel shows our lease breaking. */
static void open_from_child(Progress *p, uint64_t done) {
        if (p->forked || done < 8 * MiB)
                return;
        p->forked = true;
        usleep(100 * 1000);     /* let the punch thread punch what was found so far */
        p->child = fork();
        assert_true(p->child >= 0);
        if (p->child == 0) {
                int fd = open(p->path, O_RDONLY | O_CLOEXEC);
                _exit(fd >= 0 ? 0 : 1);
        }
        for (int i = 0; i < 500 && !lease_breaking(); i++)
                usleep(10 * 1000);
}

static void test_lease_break_releases_before_fsync(void **state) {
        _cleanup_free_ char *path = path_in(state, "break.raw");
        Progress p = { .hook = open_from_child };
        PassOptions o = { .discard = DISCARD_SAFE, .min_hole = 64 * KiB, .io_limit = 64 * MiB,
                          .progress = on_progress, .userdata = &p };
        PassReport rep;
        int status;

        make_zero_raw(path, 32 * MiB);
        p.path = path;
        n_fsync = n_fsync_leased = 0;
        assert_int_equal(pass_run(path, &o, &rep), 0);
        printf("%s, zero %" PRIu64 ": %s; fsync %u times, %u under the lease\n", pass_result_to_string(rep.result),
               rep.zero_bytes, rep.message, n_fsync, n_fsync_leased);
        assert_true(p.forked);
        assert_int_equal(waitpid(p.child, &status, 0), p.child);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_string_equal(pass_result_to_string(rep.result), "skipped-in-use");
        assert_true(rep.zero_bytes > 0);
        assert_true(n_fsync >= 1);
        assert_int_equal(n_fsync_leased, 0);
        pass_report_done(&rep);
        unlink(path);
}

static int scratch_setup(void **state) {
        return scratch_dir_setup(state, "vhdreclaim-test-pass");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_threshold_reached_reads_once),
                cmocka_unit_test(test_threshold_not_reached),
                cmocka_unit_test(test_deadline_below_threshold_moves_on),
                cmocka_unit_test(test_stale_timeout_keeps_resume_point),
                cmocka_unit_test(test_cancel_keeps_progress),
                cmocka_unit_test(test_lease_break_releases_before_fsync),
        };

        return cmocka_run_group_tests(tests, scratch_setup, scratch_dir_teardown);
}
