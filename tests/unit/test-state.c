/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "image.h"
#include "macro.h"
#include "state.h"

typedef struct Fixture {
        char dir[64];
        int fd;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        strcpy(f->dir, "/tmp/test-state-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        f->fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        *state = f;
        return f->fd < 0 ? -1 : 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        char cmd[128];

        close(f->fd);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

static void write_file(Fixture *f, const char *name, const char *data, size_t len) {
        int fd = openat(f->fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t) len);
        close(fd);
}

static size_t count_entries(Fixture *f, const char *sub) {
        char path[128];
        DIR *d;
        struct dirent *de;
        size_t n = 0;

        snprintf(path, sizeof path, "%s/%s", f->dir, sub);
        d = opendir(path);
        assert_non_null(d);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static void test_escape_name(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "ubuntu", "ubuntu" },
                { "Ubuntu-24.04_x", "Ubuntu-24.04_x" },
                { "profiles/alice.vhdx", "profiles%2Falice.vhdx" },
                { "..", "%2E%2E" },
                { ".hidden", "%2Ehidden" },
                { "end.", "end%2E" },
                { "a b%c", "a%20b%25c" },
                { "\xc3\xa9", "%C3%A9" },
        };
        char *s;
        char long_name[300];

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                assert_int_equal(state_escape_name(cases[i].in, &s), 0);
                assert_string_equal(s, cases[i].out);
                free(s);
        }
        assert_int_equal(state_escape_name("", &s), -EINVAL);
        memset(long_name, 'a', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = 0;
        assert_int_equal(state_escape_name(long_name, &s), -EINVAL);
}

static void test_record_round_trip(void **state) {
        Fixture *f = *state;
        DiskRecord r, back;

        disk_record_init(&r);
        r.last_pass = 1795240167223859;
        r.last_result = PASS_SKIPPED_THRESHOLD;
        r.last_message = strdup("line one\nline \\two\x01 \"quoted\" \xc3\xa9");
        r.reclaimed_last = 17883136;
        r.reclaimed_total = UINT64_MAX;
        r.resume_offset = 0x12345678;
        r.reclaimable = 1;
        r.virtual_size = 64 << 20;
        r.format = IMAGE_FORMAT_VHDX;
        r.passes = 4000000000u;
        r.sparse_override = 0;
        r.last_dry_run = true;

        assert_int_equal(state_save_disk(f->fd, "profiles/alice.vhdx", "/srv/x y/alice.vhdx", &r), 0);
        assert_int_equal(state_load_disk(f->fd, "profiles/alice.vhdx", &back), 0);
        assert_int_equal(back.last_pass, r.last_pass);
        assert_int_equal(back.last_result, r.last_result);
        assert_string_equal(back.last_message, r.last_message);
        assert_int_equal(back.reclaimed_last, r.reclaimed_last);
        assert_int_equal(back.reclaimed_total, r.reclaimed_total);
        assert_int_equal(back.resume_offset, r.resume_offset);
        assert_int_equal(back.reclaimable, 1);
        assert_int_equal(back.virtual_size, r.virtual_size);
        assert_int_equal(back.format, IMAGE_FORMAT_VHDX);
        assert_int_equal(back.passes, r.passes);
        assert_int_equal(back.sparse_override, 0);
        assert_true(back.last_dry_run);
        disk_record_done(&back);

        /* Saved again over the old one: no temporary file stays behind. */
        r.passes = 1;
        r.last_result = -1;
        r.format = -1;
        r.sparse_override = -1;
        assert_int_equal(state_save_disk(f->fd, "profiles/alice.vhdx", "/p", &r), 0);
        assert_int_equal(state_load_disk(f->fd, "profiles/alice.vhdx", &back), 0);
        assert_int_equal(back.passes, 1);
        assert_int_equal(back.last_result, -1);
        assert_int_equal(back.format, -1);
        assert_int_equal(back.sparse_override, -1);
        assert_true(back.last_dry_run);
        assert_int_equal(count_entries(f, "disks"), 1);
        disk_record_done(&back);
        disk_record_done(&r);

        assert_int_equal(state_load_disk(f->fd, "never-saved", &back), -ENOENT);
}

/* A file from before last_dry_run: false; a bad value: the file is rejected. */
static void test_record_last_dry_run(void **state) {
        DiskRecord r;

        assert_int_equal(disk_record_parse("version=1\nlast_result=success\n", &r), 0);
        assert_false(r.last_dry_run);
        disk_record_done(&r);
        assert_int_equal(disk_record_parse("version=1\nlast_dry_run=true\n", &r), 0);
        assert_true(r.last_dry_run);
        disk_record_done(&r);
        assert_int_equal(disk_record_parse("version=1\nlast_dry_run=yes\n", &r), -EBADMSG);
}

/* One daemon per state directory: the second is refused with the first's PID. */
static void test_state_lock(void **state) {
        Fixture *f = *state;
        int fd = -1, fd2 = -1;
        pid_t holder = -1;
        char buf[32] = {};

        assert_int_equal(state_lock_dir(f->fd, &fd, &holder), 0);
        assert_true(fd >= 0);
        assert_int_equal(holder, 0);
        /* Another open file description: the flock conflicts as it would
         * between two processes. */
        assert_int_equal(state_lock_dir(f->fd, &fd2, &holder), -EBUSY);
        assert_int_equal(fd2, -1);
        assert_int_equal(holder, getpid());
        assert_true(pread(fd, buf, sizeof buf - 1, 0) > 0);
        assert_int_equal(atoi(buf), getpid());
        close(fd);
        /* Released with the descriptor: a stale file with a PID in it is no lock. */
        assert_int_equal(state_lock_dir(f->fd, &fd2, &holder), 0);
        close(fd2);
}

static void test_record_rejects_corruption(void **state) {
        static const char *const bad[] = {
                "",                                             /* no version */
                "last_pass=1\n",                                /* no version */
                "version=2\n",                                  /* a version we do not know */
                "version=1\nlast_pass=-1\n",
                "version=1\nlast_pass=1x\n",
                "version=1\nlast_pass=\n",
                "version=1\nlast_pass=18446744073709551616\n",  /* 2^64 */
                "version=1\npasses=4294967296\n",
                "version=1\nlast_result=exploded\n",
                "version=1\nformat=qcow2\n",
                "version=1\nsparse=maybe\n",
                "version=1\nlast_message=bad \\q escape\n",
                "version=1\nlast_message=trailing \\\n",
                "version=1\nlast_message=nul \\x00 escape\n",
                "version=1\nlast_message=raw \x01 control\n",
                "version=1\nno equals sign\n",
                "version=1\n=value\n",
                "version=1\nreclaimed_last=10\nreclaimed_total=5\n",
        };
        DiskRecord r;

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                int res = disk_record_parse(bad[i], &r);

                if (res != -EBADMSG)
                        fail_msg("accepted: \"%s\"", bad[i]);
        }
        /* Unknown keys, comments and blank lines are fine. */
        assert_int_equal(disk_record_parse("# c\n\nversion=1\nfuture_key=1\nlast_message=a\\x41\\n\n", &r), 0);
        assert_string_equal(r.last_message, "aA\n");
        disk_record_done(&r);
}

static void test_corrupt_files(void **state) {
        Fixture *f = *state;
        DiskRecord r;
        char *big, *text;

        assert_int_equal(mkdirat(f->fd, "disks", 0755), 0);
        write_file(f, "disks/nul.state", "version=1\n\0last_pass=5\n", 23);
        assert_int_equal(state_load_disk(f->fd, "nul", &r), -EBADMSG);

        big = malloc(STATE_FILE_MAX + 2);
        memset(big, '#', STATE_FILE_MAX + 1);
        big[STATE_FILE_MAX + 1] = 0;
        memcpy(big, "version=1\n", 10);
        write_file(f, "disks/big.state", big, STATE_FILE_MAX + 1);
        free(big);
        assert_int_equal(state_load_disk(f->fd, "big", &r), -EBADMSG);

        /* A directory or a symlink where the file should be. */
        assert_int_equal(mkdirat(f->fd, "disks/dir.state", 0755), 0);
        assert_true(state_load_disk(f->fd, "dir", &r) < 0);
        assert_int_equal(symlinkat("/etc/passwd", f->fd, "disks/link.state"), 0);
        assert_true(state_load_disk(f->fd, "link", &r) < 0);

        assert_int_equal(state_read_file(f->fd, "disks/nul.state", 10, &text), -EFBIG);
}

static void test_atomic_write(void **state) {
        Fixture *f = *state;
        char *text;

        assert_int_equal(state_write_atomic(f->fd, "x", "one", 3), 0);
        assert_int_equal(state_write_atomic(f->fd, "x", "second", 6), 0);
        assert_int_equal(state_read_file(f->fd, "x", 100, &text), 0);
        assert_string_equal(text, "second");
        free(text);
        assert_int_equal(count_entries(f, "."), 1);
        assert_int_equal(state_write_atomic(f->fd, "missing/x", "a", 1), -ENOENT);
        assert_int_equal(count_entries(f, "."), 1);
}

static PassReport sample_report(const char *message) {
        PassReport rep = {
                .path = strdup("/srv/a \"b\".vhdx"),
                .format = IMAGE_FORMAT_VHDX,
                .format_known = true,
                .virtual_size = 1 << 30,
                .file_size = 33554432,
                .allocated_before = 22261760,
                .allocated_after = 4378624,
                .reclaimed = 17883136,
                .stale_bytes = 1,
                .zero_bytes = 17883136,
                .free_bytes = 3,
                .result = PASS_SUCCESS,
                .message = strdup(message),
                .duration_ms = 90,
        };
        return rep;
}

static void test_history_round_trip(void **state) {
        Fixture *f = *state;
        PassReport rep = sample_report("tab\there, quote \" backslash \\ newline\n \xe2\x82\xac \x01");
        HistoryEntry *e = NULL;
        size_t n = 0;
        char *line;

        for (int i = 0; i < 5; i++) {
                assert_int_equal(history_format_line(&rep, i % 2 ? "b" : "a", 1000 + (uint64_t) i, DISCARD_FREE, &line), 0);
                assert_non_null(strstr(line, "\"allocated_before\":22261760"));
                assert_int_equal(line[strlen(line) - 1], '\n');
                /* One line: the only newline ends it. */
                assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
                assert_int_equal(state_append_history(f->fd, line), 0);
                free(line);
        }
        assert_int_equal(state_read_history(f->fd, NULL, 0, &e, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(e[0].name, "a");
        assert_string_equal(e[0].path, rep.path);
        assert_string_equal(e[0].message, rep.message);
        assert_string_equal(e[0].result, "success");
        assert_string_equal(e[0].discard, "free");
        assert_int_equal(e[0].start, 1000);
        assert_int_equal(e[0].duration_usec, 90000);
        assert_int_equal(e[0].reclaimed, 17883136);
        assert_int_equal(e[0].stale_bytes, 1);
        assert_int_equal(e[0].zero_bytes, 17883136);
        assert_int_equal(e[0].free_bytes, 3);
        history_entries_free(e, n);

        /* The newest two of "a", oldest first. */
        assert_int_equal(state_read_history(f->fd, "a", 2, &e, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].start, 1002);
        assert_int_equal(e[1].start, 1004);
        history_entries_free(e, n);

        /* A name that is not UTF-8 is written with U+FFFD for each bad byte,
         * and found by that name, which is how the bus shows it. */
        assert_int_equal(history_format_line(&rep, "w/bad\xff\xfe.vhdx", 2000, DISCARD_FREE, &line), 0);
        assert_int_equal(state_append_history(f->fd, line), 0);
        free(line);
        assert_int_equal(state_read_history(f->fd, "w/bad\xef\xbf\xbd\xef\xbf\xbd.vhdx", 0, &e, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(e[0].start, 2000);
        history_entries_free(e, n);

        /* An unchanged image's line goes in unsynced, in order with the rest. */
        assert_int_equal(history_format_line(&rep, "u", 3000, DISCARD_FREE, &line), 0);
        assert_int_equal(state_append_history_unsynced(f->fd, line), 0);
        free(line);
        assert_int_equal(history_format_line(&rep, "u", 3001, DISCARD_FREE, &line), 0);
        assert_int_equal(state_append_history(f->fd, line), 0);
        free(line);
        assert_int_equal(state_read_history(f->fd, "u", 0, &e, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].start, 3000);
        assert_int_equal(e[1].start, 3001);
        history_entries_free(e, n);
        pass_report_done(&rep);
}

static void test_history_skips_malformed(void **state) {
        Fixture *f = *state;
        static const char text[] =
                "{\"name\":\"a\",\"result\":\"success\",\"start\":7}\n"
                "not json\n"
                "{\"name\":\"a\",\"result\":\"exploded\"}\n"
                "{\"name\":\"a\"}\n"
                "{\"name\":\"a\",\"result\":\"success\",\"start\":-1}\n"
                "{\"name\":\"a\",\"result\":\"success\",\"start\":1e5}\n"
                "{\"name\":\"a\",\"result\":\"success\"} trailing\n"
                "{\"name\":\"a\\ud800\",\"result\":\"success\"}\n"
                "{\"name\":\"a\\u0000\",\"result\":\"success\"}\n"
                "{\"name\":\"a\",\"result\":\"success\",\"message\":\"unterminated}\n"
                "{\"name\":\"a\",\"result\":\"error\",\"start\":8,\"message\":\"\\ud83d\\ude00\"}\n"
                "{\"name\":\"a\",";         /* cut short by a crash */
        HistoryEntry *e = NULL;
        size_t n = 0;

        write_file(f, "history.jsonl", text, sizeof text - 1);
        assert_int_equal(state_read_history(f->fd, "", 0, &e, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].start, 7);
        assert_string_equal(e[0].message, "");
        assert_string_equal(e[1].message, "\xf0\x9f\x98\x80");
        history_entries_free(e, n);

        /* No history yet is no error. */
        assert_int_equal(unlinkat(f->fd, "history.jsonl", 0), 0);
        assert_int_equal(state_read_history(f->fd, "", 0, &e, &n), 0);
        assert_int_equal(n, 0);
}

static off_t file_size(Fixture *f, const char *name) {
        struct stat st;

        if (fstatat(f->fd, name, &st, 0) < 0)
                return -1;
        return st.st_size;
}

static double now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* A history line of `name` with a message of about msg_len bytes. */
static char *make_line(const char *name, uint64_t start, size_t msg_len) {
        char *msg = malloc(msg_len + 1), *line = NULL;
        PassReport rep;

        assert_non_null(msg);
        memset(msg, 'm', msg_len);
        msg[msg_len] = 0;
        rep = sample_report(msg);
        assert_int_equal(history_format_line(&rep, name, start, DISCARD_SAFE, &line), 0);
        pass_report_done(&rep);
        free(msg);
        return line;
}

/* Issue 9, bug 6: history.jsonl grew for ever and a query read up to 64 MiB
 * of it on the event loop. A history from before (10 MiB here) is rotated at
 * the next pass, and a query reads from the end, a bounded amount: the last
 * pass of one image answers at once, and what lies beyond the bound is not
 * read at all. */
static void test_history_big_file_rotated_and_bounded(void **state) {
        Fixture *f = *state;
        int fd = openat(f->fd, "history.jsonl", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        _cleanup_free_ char *first = make_line("first", 1, 100), *other = make_line("other", 2, 900);
        _cleanup_free_ char *last = make_line("last", 3, 100);
        HistoryEntry *e = NULL;
        size_t n = 0;
        off_t written = 0;
        double t0, took;

        assert_true(fd >= 0);
        assert_int_equal(write(fd, first, strlen(first)), (ssize_t) strlen(first));
        while (written < 10 * 1024 * 1024) {
                assert_int_equal(write(fd, other, strlen(other)), (ssize_t) strlen(other));
                written += (off_t) strlen(other);
        }
        close(fd);

        /* The image whose one pass is at the start lies beyond the bound. */
        assert_int_equal(state_read_history(f->fd, "first", 0, &e, &n), 0);
        assert_int_equal(n, 0);
        free(e);
        assert_int_equal(state_read_history(f->fd, "", 0, &e, &n), 0);
        assert_true(n > 0 && n * strlen(other) <= 8u * 1024 * 1024);
        history_entries_free(e, n);

        /* The next pass rotates it: the files stay bounded. */
        assert_int_equal(state_append_history(f->fd, last), 0);
        assert_true(file_size(f, "history.jsonl") == (off_t) strlen(last));
        assert_true(file_size(f, "history.jsonl.1") > 10 * 1024 * 1024);

        t0 = now_sec();
        assert_int_equal(state_read_history(f->fd, "last", 1, &e, &n), 0);
        took = now_sec() - t0;
        assert_int_equal(n, 1);
        assert_int_equal(e[0].start, 3);
        history_entries_free(e, n);
        /* One block read, not megabytes parsed. */
        print_message("history of one image behind 10 MiB of others: %.3f ms\n", took * 1e3);
        assert_true(took < 0.1);

        /* The worst cases stay bounded: an image with no pass scans the
         * whole budget with memmem; every image parses all of it. */
        t0 = now_sec();
        assert_int_equal(state_read_history(f->fd, "nosuch", 1, &e, &n), 0);
        took = now_sec() - t0;
        assert_int_equal(n, 0);
        free(e);
        print_message("history of an image without passes (8 MiB scanned): %.3f ms\n", took * 1e3);
        t0 = now_sec();
        assert_int_equal(state_read_history(f->fd, "", 0, &e, &n), 0);
        took = now_sec() - t0;
        print_message("history of every image (%zu passes, 8 MiB parsed): %.3f ms\n", n, took * 1e3);
        history_entries_free(e, n);

        /* Newest first across both files, oldest first in the answer. */
        assert_int_equal(state_read_history(f->fd, NULL, 3, &e, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(e[0].name, "other");
        assert_string_equal(e[2].name, "last");
        history_entries_free(e, n);
}

/* The cap with one rotated file: at most twice the cap on disk, the newest
 * lines always readable in order across the two files. */
static void test_history_rotation(void **state) {
        Fixture *f = *state;
        const uint64_t cap = 4096;
        HistoryEntry *e = NULL;
        size_t n = 0;

        for (uint64_t i = 0; i < 200; i++) {
                _cleanup_free_ char *line = make_line(i % 3 ? "b" : "a", 1000 + i, 50 + (size_t) (i * 37 % 400));

                assert_int_equal(state_append_history_max(f->fd, line, cap), 0);
                assert_true(file_size(f, "history.jsonl") <= (off_t) cap);
                assert_true(file_size(f, "history.jsonl.1") <= (off_t) cap);
        }
        assert_int_equal(state_read_history(f->fd, NULL, 0, &e, &n), 0);
        assert_true(n >= 8);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(e[i].start, 1000 + 200 - n + i);
        history_entries_free(e, n);

        assert_int_equal(state_read_history(f->fd, "a", 2, &e, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].start, 1000 + 195);
        assert_int_equal(e[1].start, 1000 + 198);
        history_entries_free(e, n);

        /* A crash between the rename and the next line: only the rotated file. */
        assert_int_equal(unlinkat(f->fd, "history.jsonl", 0), 0);
        assert_int_equal(state_read_history(f->fd, "b", 1, &e, &n), 0);
        assert_int_equal(n, 1);
        history_entries_free(e, n);
}

/* Reading backwards: lines across block boundaries, an overlong line (longer
 * than a read block), a file that ends mid-line, blank lines. */
static void test_history_backwards_edges(void **state) {
        Fixture *f = *state;
        size_t size = 0;
        char *text = NULL;
        FILE *out = open_memstream(&text, &size);
        HistoryEntry *e = NULL;
        size_t n = 0, want = 0;

        assert_non_null(out);
        for (uint64_t i = 0; i < 400; i++) {
                _cleanup_free_ char *line = make_line("a", i, 1 + (size_t) (i * 7919 % 3000));

                fputs(line, out);
                want++;
                if (i == 150) {
                        /* 200 KiB in one line: skipped whole. */
                        fputs("{\"name\":\"a\",\"result\":\"success\",\"message\":\"", out);
                        for (int k = 0; k < 200 * 1024; k++)
                                fputc('x', out);
                        fputs("\"}\n\n\n", out);
                }
        }
        fputs("{\"name\":\"a\",\"result\":\"succ", out);     /* cut short by a crash */
        assert_int_equal(fclose(out), 0);
        write_file(f, "history.jsonl", text, size);
        free(text);

        assert_int_equal(state_read_history(f->fd, "a", 0, &e, &n), 0);
        assert_int_equal(n, want);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(e[i].start, i);
        history_entries_free(e, n);

        assert_int_equal(state_read_history(f->fd, "a", 300, &e, &n), 0);
        assert_int_equal(n, 300);
        assert_int_equal(e[0].start, 100);
        history_entries_free(e, n);
}

static void test_trim_status(void **state) {
        Fixture *f = *state;
        TrimStatus t[2] = {
                { .mount = (char *) "/", .last = 5, .trimmed_last = 6, .trimmed_total = 7, .last_result = (char *) "success" },
                { .mount = (char *) "/mnt/a\nb", .last = 1, .trimmed_last = 0, .trimmed_total = 0, .last_result = (char *) "" },
        };
        TrimStatus *back = NULL;
        size_t n = 0;

        assert_int_equal(state_save_trim(f->fd, t, 2), 0);
        assert_int_equal(state_load_trim(f->fd, &back, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(back[1].mount, "/mnt/a\nb");
        assert_int_equal(back[0].trimmed_total, 7);
        assert_string_equal(back[0].last_result, "success");
        assert_string_equal(back[1].last_result, "");
        trim_status_free(back, n);

        assert_int_equal(trim_status_parse("version=1\nlast=5\n", &back, &n), -EBADMSG);
        assert_int_equal(trim_status_parse("mount=/\n", &back, &n), -EBADMSG);
        assert_int_equal(trim_status_parse("version=1\nmount=/\nlast=x\n", &back, &n), -EBADMSG);
        assert_int_equal(trim_status_parse("version=1\n", &back, &n), 0);
        assert_int_equal(n, 0);
        trim_status_free(back, n);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_escape_name),
                cmocka_unit_test_setup_teardown(test_record_round_trip, setup, teardown),
                cmocka_unit_test(test_record_last_dry_run),
                cmocka_unit_test_setup_teardown(test_state_lock, setup, teardown),
                cmocka_unit_test(test_record_rejects_corruption),
                cmocka_unit_test_setup_teardown(test_corrupt_files, setup, teardown),
                cmocka_unit_test_setup_teardown(test_atomic_write, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history_skips_malformed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history_big_file_rotated_and_bounded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history_rotation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history_backwards_edges, setup, teardown),
                cmocka_unit_test_setup_teardown(test_trim_status, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
