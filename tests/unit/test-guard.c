/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "extent.h"
#include "guard.h"
#include "macro.h"
#include "prerequisite.h"
#include "scan.h"
#include "scratch-dir.h"

/* 64 MiB of pattern data with a 1 MiB zero run at every 4 MiB. */
#define FILE_SIZE (64 * MiB)
#define RUN_EVERY (4 * MiB)
#define RUN_LENGTH (1 * MiB)

typedef struct TestFile {
        char path[300];
        int fd;
} TestFile;

static uint8_t expected_byte(uint64_t off) {
        uint64_t x = off * UINT64_C(0x9E3779B97F4A7C15);

        if (off % RUN_EVERY < RUN_LENGTH)
                return 0;
        return (uint8_t) ((x >> 56) | 1);
}

/* dir: the group's scratch directory, removed with all in it at the end. */
static void test_file_make(const char *dir, TestFile *f) {
        uint8_t *buf = malloc(MiB);

        assert_non_null(buf);
        snprintf(f->path, sizeof f->path, "%s/image-XXXXXX", dir);
        f->fd = mkostemp(f->path, O_CLOEXEC);
        assert_true(f->fd >= 0);
        for (uint64_t off = 0; off < FILE_SIZE; off += MiB) {
                for (uint64_t i = 0; i < MiB; i++)
                        buf[i] = expected_byte(off + i);
                assert_int_equal(pwrite(f->fd, buf, MiB, (off_t) off), (ssize_t) MiB);
        }
        assert_int_equal(fsync(f->fd), 0);
        free(buf);
}

static void test_file_done(TestFile *f) {
        if (f->fd >= 0)
                close(f->fd);
        unlink(f->path);
}

static void assert_content_intact(int fd) {
        uint8_t *buf = malloc(MiB);

        assert_non_null(buf);
        for (uint64_t off = 0; off < FILE_SIZE; off += MiB) {
                assert_int_equal(pread(fd, buf, MiB, (off_t) off), (ssize_t) MiB);
                for (uint64_t i = 0; i < MiB; i++)
                        if (buf[i] != expected_byte(off + i))
                                fail_msg("byte %" PRIu64 " changed", off + i);
        }
        free(buf);
}

/* Holes must be exactly the parts of the zero runs that lie below limit (a
 * long run is punched piece by piece as the scan goes). */
static void assert_holes_below(int fd, uint64_t limit) {
        uint64_t pos = 0;
        ExtentList want = {}, got = {};

        for (uint64_t s = 0; s < limit; s += RUN_EVERY)
                extent_list_add(&want, s, MIN(RUN_LENGTH, limit - s));
        while (pos < FILE_SIZE) {
                off_t h = lseek(fd, (off_t) pos, SEEK_HOLE), d;
                assert_true(h >= 0);
                if ((uint64_t) h >= FILE_SIZE)
                        break;
                d = lseek(fd, h, SEEK_DATA);
                if (d < 0)
                        d = FILE_SIZE;
                extent_list_add(&got, (uint64_t) h, (uint64_t) (d - h));
                pos = (uint64_t) d;
        }
        assert_int_equal(got.n, want.n);
        for (size_t i = 0; i < got.n; i++) {
                assert_int_equal(got.items[i].offset, want.items[i].offset);
                assert_int_equal(got.items[i].length, want.items[i].length);
        }
        extent_list_done(&want);
        extent_list_done(&got);
}

/* Another process that opens the file when told to and reports how long its
 * open() took, in nanoseconds (or -errno). */
typedef struct Opener {
        pid_t pid;
        int go;         /* write end: one byte starts the open */
        int result;     /* read end */
} Opener;

static int64_t now_nsec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static _noreturn_ void opener_child(const char *path, int flags, int go, int result) {
        struct timespec delay = { .tv_nsec = 200 * 1000 * 1000 };
        int64_t t0, elapsed;
        char c;
        int fd;

        if (read(go, &c, 1) != 1)
                _exit(2);
        /* Let the scan get going first. */
        nanosleep(&delay, NULL);
        t0 = now_nsec();
        fd = open(path, flags | O_CLOEXEC);
        elapsed = fd < 0 ? -errno : now_nsec() - t0;
        if (write(result, &elapsed, sizeof elapsed) != sizeof elapsed)
                _exit(3);
        if (fd >= 0)
                close(fd);
        _exit(0);
}

static void opener_start(Opener *o, const char *path, int flags) {
        int go[2], result[2];

        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        assert_int_equal(pipe2(result, O_CLOEXEC), 0);
        o->pid = fork();
        assert_true(o->pid >= 0);
        if (o->pid == 0) {
                close(go[1]);
                close(result[0]);
                opener_child(path, flags, go[0], result[1]);
        }
        close(go[0]);
        close(result[1]);
        o->go = go[1];
        o->result = result[0];
}

static void opener_go(Opener *o) {
        assert_int_equal(write(o->go, "x", 1), 1);
}

static int64_t opener_finish(Opener *o) {
        int64_t elapsed = INT64_MIN;
        int status;

        assert_int_equal(read(o->result, &elapsed, sizeof elapsed), (ssize_t) sizeof elapsed);
        assert_int_equal(waitpid(o->pid, &status, 0), o->pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(o->go);
        close(o->result);
        return elapsed;
}

/* A process that keeps the file open until told to stop. */
typedef struct Holder {
        pid_t pid;
        int stop;       /* write end: closing it lets the holder exit */
} Holder;

static void holder_start(Holder *h, const char *path, int flags) {
        int ready[2], stop[2];
        char c;

        assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
        assert_int_equal(pipe2(stop, O_CLOEXEC), 0);
        h->pid = fork();
        assert_true(h->pid >= 0);
        if (h->pid == 0) {
                int fd;

                close(ready[0]);
                close(stop[1]);
                fd = open(path, flags | O_CLOEXEC);
                if (fd < 0 || write(ready[1], "r", 1) != 1)
                        _exit(2);
                (void) read(stop[0], &c, 1);
                _exit(0);
        }
        close(ready[1]);
        close(stop[0]);
        assert_int_equal(read(ready[0], &c, 1), 1);
        close(ready[0]);
        h->stop = stop[1];
}

static void holder_finish(Holder *h) {
        int status;

        close(h->stop);
        assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_acquire_and_release(void **state) {
        struct sigaction sa;
        TestFile f;

        test_file_make(*state, &f);
        assert_int_equal(guard_acquire(f.fd), 0);
        assert_false(guard_lease_broken(f.fd));
        assert_int_equal(fcntl(f.fd, F_GETLEASE), F_WRLCK);
        /* A lease break can no longer kill us. */
        assert_int_equal(sigaction(SIGIO, NULL, &sa), 0);
        assert_true(sa.sa_handler == SIG_IGN);
        guard_release(f.fd);
        assert_true(guard_lease_broken(f.fd));
        assert_int_equal(fcntl(f.fd, F_GETLEASE), F_UNLCK);
        guard_release(f.fd);
        /* Taken again for the next pass. */
        assert_int_equal(guard_acquire(f.fd), 0);
        guard_release(f.fd);
        test_file_done(&f);
}

static void test_file_open_elsewhere_is_busy(void **state) {
        Holder h;
        TestFile f;
        int other;

        test_file_make(*state, &f);
        holder_start(&h, f.path, O_RDONLY);
        assert_int_equal(guard_acquire(f.fd), -EBUSY);
        holder_finish(&h);

        holder_start(&h, f.path, O_RDWR);
        assert_int_equal(guard_acquire(f.fd), -EBUSY);
        holder_finish(&h);

        /* A second descriptor in our own process counts too: a pass must do
         * all its I/O through the one leased descriptor. */
        other = open(f.path, O_RDONLY | O_CLOEXEC);
        assert_true(other >= 0);
        assert_int_equal(guard_acquire(f.fd), -EBUSY);
        close(other);

        assert_int_equal(guard_acquire(f.fd), 0);
        guard_release(f.fd);
        test_file_done(&f);
}

static void test_not_owner_without_cap_lease(void **state) {
        TestFile f;
        pid_t pid;
        int status;

        if (geteuid() != 0)
                skip_missing("test_not_owner_without_cap_lease: changing to another user needs root");
        test_file_make(*state, &f);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                /* An unprivileged user who does not own the file. */
                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(2);
                _exit(guard_acquire(f.fd) == -EACCES ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        test_file_done(&f);
}

static void on_sigio(int sig) {
}

static void test_own_sigio_handler_is_left_alone(void **state) {
        struct sigaction mine = { .sa_handler = on_sigio }, old, now;
        TestFile f;

        test_file_make(*state, &f);
        assert_int_equal(sigaction(SIGIO, &mine, &old), 0);
        assert_int_equal(guard_acquire(f.fd), 0);
        assert_int_equal(sigaction(SIGIO, NULL, &now), 0);
        assert_true(now.sa_handler == on_sigio);
        guard_release(f.fd);
        assert_int_equal(sigaction(SIGIO, &old, NULL), 0);
        test_file_done(&f);
}

static int lease_check(void *userdata) {
        int fd = *(int *) userdata;

        return guard_lease_broken(fd) ? -EINTR : 0;
}

/* The scan runs paced (4 s for the whole file); someone opens the file after
 * 200 ms. The scan must stop with -EINTR, we release, and their open() must
 * return within a second. */
static void break_during_scan(const char *dir, int open_flags, const char *what) {
        ScanControl c = {
                .min_hole = 64 * KiB,
                .align = 4096,
                .io_limit = 16 * MiB,
                .check = lease_check,
        };
        ExtentList l = {};
        int64_t waited;
        ScanResult r;
        TestFile f;
        Opener o;
        int k;

        test_file_make(dir, &f);
        opener_start(&o, f.path, open_flags);
        c.userdata = &f.fd;
        extent_list_add(&l, 0, FILE_SIZE);

        assert_int_equal(guard_acquire(f.fd), 0);
        opener_go(&o);
        k = scan_punch_zero_runs(f.fd, &l, &c, &r);
        guard_release(f.fd);
        waited = opener_finish(&o);

        fprintf(stderr, "opener (%s) waited %.1f ms; scan stopped with %d at %" PRIu64
                " after reading %" PRIu64 " bytes, punched %" PRIu64 "\n",
                what, (double) waited / 1e6, k, r.stop_offset, r.read, r.punched);
        assert_true(waited >= 0);
        assert_true(waited < 1000 * 1000 * 1000);
        assert_int_equal(k, -EINTR);
        assert_true(r.stop_offset > 0);
        assert_true(r.stop_offset < FILE_SIZE);
        assert_int_equal(r.stop_offset % 4096, 0);
        assert_true(r.read <= FILE_SIZE);
        assert_holes_below(f.fd, r.stop_offset);
        assert_content_intact(f.fd);
        extent_list_done(&l);
        test_file_done(&f);
}

static void test_writer_breaks_lease_during_scan(void **state) {
        break_during_scan(*state, O_RDWR, "O_RDWR");
}

static void test_reader_breaks_lease_during_scan(void **state) {
        break_during_scan(*state, O_RDONLY, "O_RDONLY");
}

static void listed(const char *text, dev_t dev, ino_t ino, bool match_dev, int expect) {
        _cleanup_fclose_ FILE *f = fmemopen((void *) text, strlen(text), "r");

        assert_non_null(f);
        assert_int_equal(guard_lease_listed(f, dev, ino, match_dev), expect);
}

/* /proc/locks as the kernel writes it: leases, NFS delegations, blocked
 * waiters ("->"), and locks that are not leases. */
static void test_lease_listed(void **state) {
        static const char text[] =
                "1: POSIX  ADVISORY  WRITE 812 08:01:100 0 EOF\n"
                "2: FLOCK  ADVISORY  WRITE 813 08:01:200 0 EOF\n"
                "3: LEASE  ACTIVE    WRITE 17190 fe:00:10952723 0 EOF\n"
                "4: DELEG  ACTIVE    READ 900 08:02:300 0 EOF\n"
                "5: LEASE  BREAKING  READ 17191 08:01:400 0 EOF\n"
                "5: -> LEASE  BREAKER   READ 17192 08:01:400 0 EOF\n";
        (void) state;

        listed(text, makedev(0xfe, 0), 10952723, true, 1);
        listed(text, makedev(8, 2), 300, true, 1);              /* DELEG */
        listed(text, makedev(8, 1), 400, true, 1);              /* being broken */
        listed(text, makedev(8, 1), 100, true, 0);              /* a POSIX lock is no lease */
        listed(text, makedev(8, 1), 200, true, 0);              /* nor is flock */
        listed(text, makedev(8, 3), 10952723, true, 0);         /* same inode, other device */
        listed(text, makedev(8, 3), 10952723, false, 1);        /* btrfs: inode only */
        listed("", makedev(8, 1), 1, true, 0);
}

/* A helper process that holds a lease of the given type on path, and on
 * request reports the lease it still has (F_GETLEASE). */
typedef struct LeaseHolder {
        pid_t pid;
        int ask;        /* write end: one byte asks */
        int answer;     /* read end: an int, F_WRLCK/F_RDLCK/F_UNLCK or -errno */
} LeaseHolder;

static _noreturn_ void lease_holder_child(const char *path, int type, int ask, int answer) {
        int fd, got;
        char c;

        /* Leases are broken by signal; the holder only reports. */
        signal(SIGIO, SIG_IGN);
        fd = open(path, (type == F_WRLCK ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        got = fd < 0 || fcntl(fd, F_SETLEASE, type) < 0 ? -errno : fcntl(fd, F_GETLEASE);
        if (write(answer, &got, sizeof got) != sizeof got)
                _exit(3);
        while (read(ask, &c, 1) == 1) {
                got = fcntl(fd, F_GETLEASE);
                if (write(answer, &got, sizeof got) != sizeof got)
                        _exit(3);
        }
        _exit(0);
}

static int lease_holder_ask(LeaseHolder *h) {
        int got = -EIO;

        assert_int_equal(write(h->ask, "?", 1), 1);
        assert_int_equal(read(h->answer, &got, sizeof got), (ssize_t) sizeof got);
        return got;
}

static void lease_holder_start(LeaseHolder *h, const char *path, int type) {
        int ask[2], answer[2], got = -EIO;

        assert_int_equal(pipe2(ask, O_CLOEXEC), 0);
        assert_int_equal(pipe2(answer, O_CLOEXEC), 0);
        h->pid = fork();
        assert_true(h->pid >= 0);
        if (h->pid == 0) {
                close(ask[1]);
                close(answer[0]);
                lease_holder_child(path, type, ask[0], answer[1]);
        }
        close(ask[0]);
        close(answer[1]);
        h->ask = ask[1];
        h->answer = answer[0];
        assert_int_equal(read(h->answer, &got, sizeof got), (ssize_t) sizeof got);
        assert_int_equal(got, type);
}

static void lease_holder_stop(LeaseHolder *h) {
        int status;

        close(h->ask);
        close(h->answer);
        assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* As smbd does for a client's oplock with `kernel oplocks = yes`: someone
 * holds a lease on the image. The pass must be skipped without opening the
 * file at all, since even a failing non-blocking open starts the break and
 * the holder (the SMB client) would lose its oplock. */
static void leased_elsewhere_is_skipped_undisturbed(const char *dir, int type, bool writable) {
        TestFile f;
        LeaseHolder h;
        int fd = -1;

        test_file_make(dir, &f);
        close(f.fd);
        f.fd = -1;
        lease_holder_start(&h, f.path, type);
        assert_int_equal(guard_file_leased(f.path), 1);
        assert_int_equal(guard_open_leased(f.path, writable, false, &fd), -EBUSY);
        assert_int_equal(fd, -1);
        /* The break, had it started, would show here at once. */
        assert_int_equal(lease_holder_ask(&h), type);
        lease_holder_stop(&h);

        /* The holder is gone: the image is free again. */
        assert_int_equal(guard_file_leased(f.path), 0);
        assert_int_equal(guard_open_leased(f.path, writable, false, &fd), 0);
        assert_false(guard_lease_broken(fd));
        guard_release(fd);
        close(fd);
        test_file_done(&f);
}

static void test_write_leased_elsewhere_is_undisturbed(void **state) {
        leased_elsewhere_is_skipped_undisturbed(*state, F_WRLCK, false);
        leased_elsewhere_is_skipped_undisturbed(*state, F_WRLCK, true);
}

static void test_read_leased_elsewhere_is_undisturbed(void **state) {
        leased_elsewhere_is_skipped_undisturbed(*state, F_RDLCK, true);
}

/* An image found in a [watch] folder is opened beneath its folder: a
 * symlink a user of the share put there leads nowhere, the file it names is
 * never opened for writing; a configured image may still be reached through
 * one. */
static void test_beneath_refuses_symlink(void **state) {
        const char *dir = *state;
        char link[320];
        TestFile f;
        int fd = -1;

        test_file_make(dir, &f);
        close(f.fd);
        f.fd = -1;
        snprintf(link, sizeof link, "%s.link", f.path);
        assert_int_equal(symlink(f.path, link), 0);
        assert_int_equal(guard_open_leased(link, true, strlen(dir), &fd), -ELOOP);
        assert_int_equal(fd, -1);
        assert_int_equal(guard_open_leased(link, false, strlen(dir), &fd), -ELOOP);
        assert_int_equal(fd, -1);
        assert_int_equal(guard_open_leased(f.path, true, strlen(dir), &fd), 0);
        guard_release(fd);
        close(fd);
        assert_int_equal(guard_open_leased(link, true, 0, &fd), 0);
        guard_release(fd);
        close(fd);
        unlink(link);
        test_file_done(&f);
}

/* recursive=true: the users also own the subfolders. One of them replaced
 * by a symlink to a folder elsewhere that holds a file of the same name:
 * not opened, at any depth; the folder itself (dir=) may be a symlink. */
static void test_beneath_refuses_symlinked_subfolder(void **state) {
        const char *dir = *state;
        char top[320], sub[340], elsewhere[320], path[400], via_link[340], via_link_path[420];
        int fd = -1;

        snprintf(top, sizeof top, "%s/tree", dir);
        snprintf(sub, sizeof sub, "%s/user", top);
        snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", dir);
        assert_int_equal(mkdir(top, 0755), 0);
        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(mkdir(elsewhere, 0755), 0);
        snprintf(path, sizeof path, "%s/image.vhdx", sub);
        fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
        snprintf(path, sizeof path, "%s/image.vhdx", elsewhere);
        fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);

        /* The real subfolder: opened, through a symlinked dir= too. */
        snprintf(path, sizeof path, "%s/user/image.vhdx", top);
        assert_int_equal(guard_open_leased(path, true, strlen(top), &fd), 0);
        guard_release(fd);
        close(fd);
        snprintf(via_link, sizeof via_link, "%s/tree-link", dir);
        assert_int_equal(symlink(top, via_link), 0);
        snprintf(via_link_path, sizeof via_link_path, "%s/user/image.vhdx", via_link);
        assert_int_equal(guard_open_leased(via_link_path, true, strlen(via_link), &fd), 0);
        guard_release(fd);
        close(fd);

        /* Swapped for a symlink: refused, though the path names a file. */
        snprintf(path, sizeof path, "%s/user.old", top);
        assert_int_equal(rename(sub, path), 0);
        assert_int_equal(symlink(elsewhere, sub), 0);
        snprintf(path, sizeof path, "%s/user/image.vhdx", top);
        assert_int_equal(access(path, F_OK), 0);
        fd = -1;
        assert_int_equal(guard_open_leased(path, true, strlen(top), &fd), -ELOOP);
        assert_int_equal(guard_open_leased(path, false, strlen(top), &fd), -ELOOP);
        assert_int_equal(fd, -1);
        /* A path that climbs out is no path below the folder. */
        snprintf(path, sizeof path, "%s/user.old/../user.old/image.vhdx", top);
        assert_int_equal(guard_open_leased(path, false, strlen(top), &fd), -EINVAL);
        assert_int_equal(fd, -1);
}

static int scratch_setup(void **state) {
        return scratch_dir_setup(state, "test-guard");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_acquire_and_release),
                cmocka_unit_test(test_file_open_elsewhere_is_busy),
                cmocka_unit_test(test_not_owner_without_cap_lease),
                cmocka_unit_test(test_own_sigio_handler_is_left_alone),
                cmocka_unit_test(test_writer_breaks_lease_during_scan),
                cmocka_unit_test(test_reader_breaks_lease_during_scan),
                cmocka_unit_test(test_lease_listed),
                cmocka_unit_test(test_write_leased_elsewhere_is_undisturbed),
                cmocka_unit_test(test_read_leased_elsewhere_is_undisturbed),
                cmocka_unit_test(test_beneath_refuses_symlink),
                cmocka_unit_test(test_beneath_refuses_symlinked_subfolder),
        };
        return prerequisite_exit(cmocka_run_group_tests(tests, scratch_setup, scratch_dir_teardown));
}
