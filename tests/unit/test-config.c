/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"

/* Each test gets a fresh directory with one file in it, test.conf. */
typedef struct Fixture {
        char dir[64];
        char path[96];
        Config *config;
        ConfigMessages msgs;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-config.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/test.conf", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        config_free(f->config);
        config_messages_done(&f->msgs);
        unlink(f->path);
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

static void write_file(const char *path, const char *text) {
        FILE *w = fopen(path, "we");

        assert_non_null(w);
        assert_int_equal(fputs(text, w) >= 0, 1);
        assert_int_equal(fclose(w), 0);
}

/* Loads text as test.conf; returns what config_load() returned. */
static int load(Fixture *f, const char *text) {
        f->config = config_free(f->config);
        config_messages_done(&f->msgs);
        write_file(f->path, text);
        return config_load(f->path, &f->config, &f->msgs);
}

static void load_ok(Fixture *f, const char *text) {
        int r = load(f, text);

        if (r < 0)
                config_messages_print(&f->msgs, stderr);
        assert_int_equal(r, 0);
        assert_non_null(f->config);
}

/* Message i is "test.conf's path:LINE: LEVEL: ..." and contains needle. */
static void assert_message(const Fixture *f, size_t i, ConfigMessageLevel level, unsigned line, const char *needle) {
        char prefix[160];

        assert_true(i < f->msgs.n_items);
        snprintf(prefix, sizeof(prefix), "%s:%u: %s: ", f->path, line,
                 level == CONFIG_MESSAGE_ERROR ? "error" : "warning");
        if (strncmp(f->msgs.items[i].text, prefix, strlen(prefix)) != 0 ||
            !strstr(f->msgs.items[i].text, needle)) {
                print_error("message %zu is '%s', expected '%s...%s'\n", i, f->msgs.items[i].text, prefix, needle);
                fail();
        }
        assert_int_equal(f->msgs.items[i].level, level);
        assert_int_equal(f->msgs.items[i].line, line);
}

static char *print_to_string(const Config *c) {
        char *buf = NULL;
        size_t size = 0;
        FILE *m = open_memstream(&buf, &size);

        assert_non_null(m);
        assert_int_equal(config_print(c, m), 0);
        assert_int_equal(fclose(m), 0);
        return buf;
}

/* ---- values ---- */

static void assert_size(const char *s, uint64_t expected) {
        uint64_t v = 0;

        assert_int_equal(parse_size(s, &v), 0);
        assert_int_equal(v, expected);
}

static void test_parse_size_suffixes(void **state) {
        uint64_t v;

        assert_size("0", 0);
        assert_size("4096", 4096);
        assert_size("7B", 7);
        assert_size("3K", 3 * KiB);
        assert_size("3KB", 3 * KiB);
        assert_size("5M", 5 * MiB);
        assert_size("5MB", 5 * MiB);
        assert_size("2G", 2 * GiB);
        assert_size("2GB", 2 * GiB);
        assert_size("1T", 1024 * GiB);
        assert_size("1TB", 1024 * GiB);
        assert_size("64mb", 64 * MiB);
        assert_size("64 MB", 64 * MiB);
        assert_size("1g", GiB);
        assert_size("18446744073709551615", UINT64_MAX);

        assert_int_equal(parse_size("", &v), -EINVAL);
        assert_int_equal(parse_size("MB", &v), -EINVAL);
        assert_int_equal(parse_size("-1", &v), -EINVAL);
        assert_int_equal(parse_size("+1", &v), -EINVAL);
        assert_int_equal(parse_size("1.5G", &v), -EINVAL);
        assert_int_equal(parse_size("1X", &v), -EINVAL);
        assert_int_equal(parse_size("1KiB", &v), -EINVAL);
        assert_int_equal(parse_size("1 G B", &v), -EINVAL);
        assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
        assert_int_equal(parse_size("16777216T", &v), -ERANGE);
}

static void assert_duration(const char *s, uint64_t expected) {
        uint64_t v = 0;

        assert_int_equal(parse_duration_usec(s, &v), 0);
        assert_int_equal(v, expected);
}

static void test_parse_duration_units(void **state) {
        uint64_t v;

        assert_duration("0", 0);
        assert_duration("90", 90 * USEC_PER_SEC);
        assert_duration("7us", 7);
        assert_duration("100ms", 100 * USEC_PER_MSEC);
        assert_duration("30s", 30 * USEC_PER_SEC);
        assert_duration("10m", 10 * USEC_PER_MINUTE);
        assert_duration("2h", 2 * USEC_PER_HOUR);
        assert_duration("1d", USEC_PER_DAY);
        assert_duration("1w", 7 * USEC_PER_DAY);
        assert_duration("1h30m", 90 * USEC_PER_MINUTE);
        assert_duration("1d 2h", 26 * USEC_PER_HOUR);
        assert_duration("1m500ms", 60500 * USEC_PER_MSEC);
        assert_duration("1H", USEC_PER_HOUR);

        assert_int_equal(parse_duration_usec("", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("h", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("1h30", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("1x", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("1 month", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("-1s", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("1.5h", &v), -EINVAL);
        assert_int_equal(parse_duration_usec("99999999999999999w", &v), -ERANGE);
        assert_int_equal(parse_duration_usec("18446744073709551615", &v), -ERANGE);
}

static void test_parse_boolean_spellings(void **state) {
        bool b;

        assert_int_equal(parse_boolean("true", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("TRUE", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("1", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("false", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("False", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("0", &b), 0);
        assert_false(b);

        assert_int_equal(parse_boolean("yes", &b), -EINVAL);
        assert_int_equal(parse_boolean("on", &b), -EINVAL);
        assert_int_equal(parse_boolean("2", &b), -EINVAL);
        assert_int_equal(parse_boolean("", &b), -EINVAL);
}

static void test_format_largest_exact_unit(void **state) {
        char buf[FORMAT_SIZE_MAX];

        assert_string_equal(format_size_exact(buf, 0), "0");
        assert_string_equal(format_size_exact(buf, 1023), "1023B");
        assert_string_equal(format_size_exact(buf, 64 * KiB), "64K");
        assert_string_equal(format_size_exact(buf, 1536 * KiB), "1536K");
        assert_string_equal(format_size_exact(buf, 200 * MiB), "200M");
        assert_string_equal(format_size_exact(buf, GiB), "1G");
        assert_string_equal(format_size_exact(buf, 2048 * GiB), "2T");

        assert_string_equal(format_duration(buf, 0), "0");
        assert_string_equal(format_duration(buf, 1), "1us");
        assert_string_equal(format_duration(buf, 100 * USEC_PER_MSEC), "100ms");
        assert_string_equal(format_duration(buf, 1500 * USEC_PER_MSEC), "1500ms");
        assert_string_equal(format_duration(buf, 90 * USEC_PER_SEC), "90s");
        assert_string_equal(format_duration(buf, 90 * USEC_PER_MINUTE), "90m");
        assert_string_equal(format_duration(buf, USEC_PER_DAY), "1d");
        assert_string_equal(format_duration(buf, 14 * USEC_PER_DAY), "2w");
}

static void test_format_parses_back(void **state) {
        uint64_t x = 0x9e3779b97f4a7c15ULL;

        for (unsigned i = 0; i < 2000; i++) {
                char buf[FORMAT_SIZE_MAX];
                uint64_t v, back;

                /* Values with many trailing zero bits, so every unit shows up. */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v = (x >> (i % 64)) << (i % 50);

                assert_int_equal(parse_size(format_size_exact(buf, v), &back), 0);
                assert_int_equal(back, v);
                assert_int_equal(parse_duration_usec(format_duration(buf, v), &back), 0);
                assert_int_equal(back, v);
        }
}

/* ---- files ---- */

static void test_empty_file_is_defaults(void **state) {
        Fixture *f = *state;
        Config *d = NULL;

        load_ok(f, "");
        assert_int_equal(f->msgs.n_items, 0);
        assert_int_equal(config_new_default(&d), 0);
        assert_true(config_equal(f->config, d));

        assert_string_equal(d->socket_path, "/run/vhdreclaim/control.sock");
        assert_string_equal(d->state_dir, DEFAULT_STATE_DIR);
        assert_string_equal(d->admin_group, "vhdreclaim");
        assert_true(d->sparse_vhd);
        assert_int_equal(d->reclaim.interval_usec, USEC_PER_DAY);
        assert_int_equal(d->reclaim.randomized_delay_usec, USEC_PER_HOUR);
        assert_int_equal(d->reclaim.idle_delay_usec, 10 * USEC_PER_MINUTE);
        assert_int_equal(d->reclaim.discard, DISCARD_FREE);
        assert_int_equal(d->reclaim.min_reclaim, 64 * MiB);
        assert_int_equal(d->reclaim.min_hole, 64 * KiB);
        assert_int_equal(d->reclaim.io_limit, 200 * MiB);
        assert_int_equal(d->reclaim.max_pass_time_usec, 10 * USEC_PER_MINUTE);
        assert_int_equal(d->reclaim.max_parallel, 1);
        assert_false(d->trim.all);
        assert_int_equal(d->trim.n_mounts, 0);
        assert_int_equal(d->trim.interval_usec, USEC_PER_WEEK);
        assert_int_equal(d->trim.chunk, GiB);
        assert_int_equal(d->trim.pause_usec, 100 * USEC_PER_MSEC);
        assert_int_equal(d->n_disks, 0);
        assert_int_equal(d->n_watches, 0);
        config_free(d);
}

static void test_every_key_is_read(void **state) {
        Fixture *f = *state;
        const Config *c;

        load_ok(f,
                "[daemon]\n"
                "socket=/tmp/x.sock\n"
                "stateDir=/srv/state/\n"
                "adminGroup=storage-admins\n"
                "[experimental]\n"
                "sparseVhd=false\n"
                "[reclaim]\n"
                "interval=12h\n"
                "randomizedDelay=5m\n"
                "idleDelay=1s\n"
                "discard=none\n"
                "minReclaim=1G\n"
                "minHole=4K\n"
                "ioLimit=0\n"
                "maxPassTime=0\n"
                "maxParallel=64\n"
                "[trim]\n"
                "mounts=/ /home//\n"
                "interval=1d\n"
                "chunk=16M\n"
                "pause=1s\n");
        c = f->config;
        assert_int_equal(f->msgs.n_items, 0);
        assert_string_equal(c->socket_path, "/tmp/x.sock");
        assert_string_equal(c->state_dir, "/srv/state");
        assert_string_equal(c->admin_group, "storage-admins");
        assert_false(c->sparse_vhd);
        assert_int_equal(c->reclaim.interval_usec, 12 * USEC_PER_HOUR);
        assert_int_equal(c->reclaim.randomized_delay_usec, 5 * USEC_PER_MINUTE);
        assert_int_equal(c->reclaim.idle_delay_usec, USEC_PER_SEC);
        assert_int_equal(c->reclaim.discard, DISCARD_NONE);
        assert_int_equal(c->reclaim.min_reclaim, GiB);
        assert_int_equal(c->reclaim.min_hole, 4 * KiB);
        assert_int_equal(c->reclaim.io_limit, 0);
        assert_int_equal(c->reclaim.max_pass_time_usec, 0);
        assert_int_equal(c->reclaim.max_parallel, 64);
        assert_int_equal(c->trim.n_mounts, 2);
        assert_string_equal(c->trim.mounts[0], "/");
        assert_string_equal(c->trim.mounts[1], "/home");
        assert_int_equal(c->trim.interval_usec, USEC_PER_DAY);
        assert_int_equal(c->trim.chunk, 16 * MiB);
        assert_int_equal(c->trim.pause_usec, USEC_PER_SEC);
}

static void test_names_ignore_case(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "[RECLAIM]\n"
                "MINHOLE=1M\n"
                "maxpasstime=1h\n"
                "Discard=SAFE\n"
                "[Disk.Ubuntu]\n"
                "PATH=/a.vhdx\n"
                "SPARSE=False\n"
                "[Experimental]\n"
                "SparseVHD=0\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_int_equal(f->config->reclaim.min_hole, MiB);
        assert_int_equal(f->config->reclaim.max_pass_time_usec, USEC_PER_HOUR);
        assert_int_equal(f->config->reclaim.discard, DISCARD_SAFE);
        assert_false(f->config->sparse_vhd);
        assert_int_equal(f->config->n_disks, 1);
        assert_string_equal(f->config->disks[0].name, "Ubuntu");
        assert_string_equal(f->config->disks[0].path, "/a.vhdx");
        assert_ptr_equal(config_find_disk(f->config, "ubuntu"), &f->config->disks[0]);
        assert_ptr_equal(config_find_disk(f->config, "UBUNTU"), &f->config->disks[0]);
        assert_null(config_find_disk(f->config, "debian"));
}

static void test_comments(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "# a comment\n"
                "; another = one\n"
                "   # indented comment\n"
                "[reclaim]   # comment after a header\n"
                "minHole=1M # after a value\n"
                "minReclaim=1G\t; after a tab\n"
                "interval = 2h   \n"
                "[watch.w]\n"
                "dir=/srv/a#b\n"
                "pattern=*#1;2.vhdx\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_int_equal(f->config->reclaim.min_hole, MiB);
        assert_int_equal(f->config->reclaim.min_reclaim, GiB);
        assert_int_equal(f->config->reclaim.interval_usec, 2 * USEC_PER_HOUR);
        /* Not after a blank: part of the value. */
        assert_string_equal(f->config->watches[0].dir, "/srv/a#b");
        assert_string_equal(f->config->watches[0].pattern, "*#1;2.vhdx");
}

static void test_crlf_and_bom(void **state) {
        Fixture *f = *state;

        load_ok(f, "\xef\xbb\xbf[reclaim]\r\nminHole=8K\r\n\r\n[trim]\r\nmounts=all\r\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_int_equal(f->config->reclaim.min_hole, 8 * KiB);
        assert_true(f->config->trim.all);
}

/* Notepad's "Unicode" is UTF-16: named as such, on line 1, not "invalid line". */
static void test_utf16_is_named(void **state) {
        static const char le[] = "\xff\xfe[\0r\0e\0c\0l\0a\0i\0m\0]\0\n\0";
        static const char be_no_bom[] = "\0[\0r\0e\0c\0l\0a\0i\0m\0]\0\n";
        Fixture *f = *state;
        FILE *w;

        w = fopen(f->path, "we");
        assert_non_null(w);
        assert_int_equal(fwrite(le, 1, sizeof le - 1, w), sizeof le - 1);
        assert_int_equal(fclose(w), 0);
        assert_int_equal(config_load(f->path, &f->config, &f->msgs), -EINVAL);
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "the file is UTF-16 (LE), not UTF-8: save it as UTF-8");
        config_messages_done(&f->msgs);

        w = fopen(f->path, "we");
        assert_non_null(w);
        assert_int_equal(fwrite(be_no_bom, 1, sizeof be_no_bom - 1, w), sizeof be_no_bom - 1);
        assert_int_equal(fclose(w), 0);
        assert_int_equal(config_load(f->path, &f->config, &f->msgs), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "the file is UTF-16 (BE)");
}

/* format= belongs to a disk or a folder; [reclaim] does not know it. */
static void test_format_key(void **state) {
        Fixture *f = *state;
        char *printed;

        load_ok(f,
                "[reclaim]\n"
                "format=raw\n"
                "[disk.a]\n"
                "path=/a.bin\n"
                "format=RAW\n"
                "[disk.b]\n"
                "path=/b.vhdx\n"
                "[watch.w]\n"
                "dir=/w\n"
                "format=vhdx\n");
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 2, "unknown key 'format' in [reclaim], ignored");
        assert_int_equal(f->config->disks[0].reclaim.format, DISK_FORMAT_RAW);
        assert_int_equal(f->config->disks[1].reclaim.format, DISK_FORMAT_AUTO);
        assert_int_equal(f->config->watches[0].reclaim.format, DISK_FORMAT_VHDX);
        printed = print_to_string(f->config);
        assert_non_null(strstr(printed, "[disk.a]\npath=/a.bin\nformat=raw\n"));
        assert_non_null(strstr(printed, "[watch.w]\ndir=/w\npattern=*.vhdx\nformat=vhdx\n"));
        assert_null(strstr(printed, "format=auto"));
        free(printed);

        assert_int_equal(load(f, "[disk.a]\npath=/a.bin\nformat=qcow2\n"), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 3, "invalid value for format: 'qcow2' (expected auto, vhdx or raw)");
}

/* recursive= is a [watch] key of its own: no [reclaim] default (a [disk]
 * has no subfolders), false unless set, printed only when true so that the
 * printed form of an older file stays as it was. */
static void test_recursive_key(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *printed = NULL;
        Config *a;

        load_ok(f,
                "[watch.flat]\n"
                "dir=/srv/flat\n"
                "[watch.tree]\n"
                "dir=/srv/fslogix\n"
                "Recursive=TRUE\n"
                "[watch.off]\n"
                "dir=/srv/off\n"
                "recursive=0\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_false(config_find_watch(f->config, "flat")->recursive);
        assert_true(config_find_watch(f->config, "tree")->recursive);
        assert_false(config_find_watch(f->config, "off")->recursive);
        printed = print_to_string(f->config);
        assert_non_null(strstr(printed, "[watch.tree]\ndir=/srv/fslogix\npattern=*.vhdx\nrecursive=true\n"));
        assert_non_null(strstr(printed, "[watch.off]\ndir=/srv/off\npattern=*.vhdx\n#sparse"));
        assert_null(strstr(printed, "recursive=false"));

        /* Part of what config_equal() compares, and printed so that it parses back. */
        a = TAKE_PTR(f->config);
        load_ok(f, printed);
        assert_true(config_equal(a, f->config));
        load_ok(f, "[watch.flat]\ndir=/srv/flat\n[watch.tree]\ndir=/srv/fslogix\n[watch.off]\ndir=/srv/off\n");
        assert_false(config_equal(a, f->config));
        config_free(a);

        /* A bad value is an error at its line; the first of two wins. */
        assert_int_equal(load(f, "[watch.w]\ndir=/w\n\nrecursive=yes\n"), -EINVAL);
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 4, "invalid value for recursive: 'yes' (expected true, false, 1 or 0)");
        load_ok(f, "[watch.w]\ndir=/w\nrecursive=true\nrecursive=false\n");
        assert_true(f->config->watches[0].recursive);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 4, "duplicate key 'recursive' in [watch.w], ignored: the first one (line 3) wins");

        /* Anywhere else: a warning that says where it belongs. */
        load_ok(f, "[reclaim]\nrecursive=true\n[disk.a]\npath=/a.vhdx\nrecursive=true\n[watch.w]\ndir=/w\n");
        assert_int_equal(f->msgs.n_items, 2);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 2,
                       "unknown key 'recursive' in [reclaim], ignored: a key of [watch.NAME] sections");
        assert_message(f, 1, CONFIG_MESSAGE_WARNING, 5,
                       "unknown key 'recursive' in [disk.a], ignored: a key of [watch.NAME] sections");
        assert_false(f->config->watches[0].recursive);
}

/* FSLogix names Profile_alice.VHDX in upper case, other clients as they
 * please: a pattern ignores case. A leading dot still needs one. */
static void test_watch_pattern_match(void **state) {
        assert_true(watch_pattern_match("*.vhdx", "Profile_alice.VHDX"));
        assert_true(watch_pattern_match("*.vhdx", "ODFC_alice.vhdx"));
        assert_true(watch_pattern_match("*.VHDX", "x.Vhdx"));
        assert_true(watch_pattern_match("Profile_*.vhdx", "PROFILE_bob.VHDX"));
        assert_true(watch_pattern_match("*.[vV]hdx", "a.VHDX"));
        assert_false(watch_pattern_match("*.vhdx", "Profile_alice.VHDX.tmp"));
        assert_false(watch_pattern_match("*.vhdx", ".hidden.vhdx"));
        assert_true(watch_pattern_match(".*.vhdx", ".hidden.VHDX"));
        assert_false(watch_pattern_match("*.vhdx", "a.avhdx"));
        assert_true(watch_pattern_match("*", "jürgen.VHDX"));
}

/* --check-config tells about a [disk] in a watched folder's tree: at any
 * depth for a recursive watch, in the folder itself otherwise; the name
 * matched without case. */
static void test_disk_in_recursive_watch_warns(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "[watch.tree]\n"
                "dir=/srv/fslogix\n"
                "recursive=true\n"
                "[watch.flat]\n"
                "dir=/srv/flat\n"
                "[disk.deep]\n"
                "path=/srv/fslogix/alice_S-1-5/Profile_alice.VHDX\n"
                "[disk.flatdeep]\n"
                "path=/srv/flat/sub/x.vhdx\n"
                "[disk.flattop]\n"
                "path=/srv/flat/X.VHDX\n"
                "[disk.other]\n"
                "path=/srv/fslogix/alice_S-1-5/notes.img\n"
                "[disk.beside]\n"
                "path=/srv/fslogix2/a.vhdx\n");
        assert_int_equal(f->msgs.n_items, 2);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 7,
                       "[disk.deep] names a file that [watch.tree] (line 2) matches: it is managed as [disk.deep] only");
        assert_message(f, 1, CONFIG_MESSAGE_WARNING, 11,
                       "[disk.flattop] names a file that [watch.flat] (line 5) matches");
}

static void test_duplicate_key_first_wins(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "[reclaim]\n"
                "interval=1h\n"
                "\n"
                "INTERVAL=2h\n"
                "[disk.a]\n"
                "path=/a.img\n"
                "path=/b.img\n"
                "[reclaim]\n"
                "interval=3h\n");
        assert_int_equal(f->config->reclaim.interval_usec, USEC_PER_HOUR);
        assert_string_equal(f->config->disks[0].path, "/a.img");
        assert_int_equal(f->msgs.n_items, 3);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 4, "duplicate key 'interval' in [reclaim], ignored: the first one (line 2) wins");
        assert_message(f, 1, CONFIG_MESSAGE_WARNING, 7, "duplicate key 'path' in [disk.a], ignored: the first one (line 6) wins");
        assert_message(f, 2, CONFIG_MESSAGE_WARNING, 9, "duplicate key 'interval' in [reclaim], ignored: the first one (line 2) wins");
}

static void test_unknown_keys_and_sections_warn(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "[reclaim]\n"
                "minhole=1M\n"
                "min_hole=2M\n"
                "[frobnicate]\n"
                "a=b\n"
                "c=d\n"
                "[disk.x]\n"
                "path=/x.img\n"
                "memory=4GB\n"
                "[trim]\n"
                "sparse=true\n");
        assert_int_equal(f->msgs.n_items, 4);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 3, "unknown key 'min_hole' in [reclaim], ignored");
        assert_message(f, 1, CONFIG_MESSAGE_WARNING, 4, "unknown section [frobnicate], its keys are ignored");
        /* WSL keys are quiet only in WSL's own sections. */
        assert_message(f, 2, CONFIG_MESSAGE_WARNING, 9, "unknown key 'memory' in [disk.x], ignored");
        assert_message(f, 3, CONFIG_MESSAGE_WARNING, 11, "unknown key 'sparse' in [trim], ignored");
        assert_int_equal(f->config->reclaim.min_hole, MiB);
}

static void test_key_outside_section_warns(void **state) {
        Fixture *f = *state;

        load_ok(f, "minHole=1M\n[reclaim]\n");
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 1, "key 'minHole' outside of any section, ignored");
        assert_int_equal(f->config->reclaim.min_hole, 64 * KiB);
}

static void test_wslconfig_keys_are_quiet(void **state) {
        Fixture *f = *state;

        load_ok(f,
                "[wsl2]\n"
                "memory=8GB\n"
                "processors=4\n"
                "swap=0\n"
                "swapFile=C:\\\\temp\\\\swap.vhdx\n"
                "kernelCommandLine = vsyscall=emulate\n"
                "localhostForwarding=true\n"
                "networkingMode=mirrored\n"
                "nestedVirtualization=false\n"
                "vmIdleTimeout=60000\n"
                "guiApplications=false\n"
                "debugConsole=false\n"
                "pageReporting=true\n"
                "safeMode=false\n"
                "dnsTunneling=true\n"
                "firewall=true\n"
                "autoProxy=true\n"
                "defaultVhdSize=1TB\n"
                "dnsProxy=true\n"
                "[experimental]\n"
                "sparseVhd=false\n"
                "autoMemoryReclaim=gradual\n"
                "hostAddressLoopback=true\n"
                "bestEffortDnsParsing=true\n"
                "ignoredPorts=3000,4000\n"
                "initialAutoProxyTimeout=1000\n"
                "useWindowsDnsCache=false\n"
                "[general]\n"
                "instanceIdleTimeout=10000\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_false(f->config->sparse_vhd);

        load_ok(f, "[wsl2]\nmemory=8GB\nmemoryy=8GB\n");
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 3, "unknown key 'memoryy' in [wsl2], ignored");
}

static void test_invalid_values_all_reported(void **state) {
        Fixture *f = *state;

        assert_int_equal(load(f,
                "[daemon]\n"
                "socket=run/x.sock\n"                   /* 2 */
                "stateDir=\n"                           /* 3 */
                "adminGroup=-bad\n"                     /* 4 */
                "[experimental]\n"
                "sparseVhd=yes\n"                       /* 6 */
                "[reclaim]\n"
                "interval=1h30\n"                       /* 8 */
                "randomizedDelay=soon\n"                /* 9 */
                "discard=all\n"                         /* 10 */
                "minReclaim=1.5G\n"                     /* 11 */
                "ioLimit=-1\n"                          /* 12 */
                "maxParallel=0\n"                       /* 13 */
                "maxPassTime=99999999999999999w\n"      /* 14 */
                "[trim]\n"
                "mounts=all /home\n"                    /* 16 */
                "chunk=4K\n"                            /* 17 */
                "pause=fast\n"                          /* 18 */
                "[watch.w]\n"
                "dir=/srv\n"
                "pattern=a/*.vhdx\n"),                  /* 21 */
                -EINVAL);
        assert_null(f->config);
        assert_int_equal(f->msgs.n_items, 15);
        assert_int_equal(config_messages_count(&f->msgs, CONFIG_MESSAGE_ERROR), 15);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "invalid value for socket: 'run/x.sock'");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 3, "invalid value for stateDir: ''");
        assert_message(f, 2, CONFIG_MESSAGE_ERROR, 4, "invalid value for adminGroup: '-bad'");
        assert_message(f, 3, CONFIG_MESSAGE_ERROR, 6, "invalid value for sparseVhd: 'yes' (expected true, false, 1 or 0)");
        assert_message(f, 4, CONFIG_MESSAGE_ERROR, 8, "invalid value for interval: '1h30'");
        assert_message(f, 5, CONFIG_MESSAGE_ERROR, 9, "invalid value for randomizedDelay: 'soon'");
        assert_message(f, 6, CONFIG_MESSAGE_ERROR, 10, "invalid value for discard: 'all' (expected none, safe or free)");
        assert_message(f, 7, CONFIG_MESSAGE_ERROR, 11, "invalid value for minReclaim: '1.5G'");
        assert_message(f, 8, CONFIG_MESSAGE_ERROR, 12, "invalid value for ioLimit: '-1'");
        assert_message(f, 9, CONFIG_MESSAGE_ERROR, 13, "invalid value for maxParallel: '0' (expected a whole number from 1 to 64)");
        assert_message(f, 10, CONFIG_MESSAGE_ERROR, 14, "invalid value for maxPassTime: '99999999999999999w' (too large)");
        assert_message(f, 11, CONFIG_MESSAGE_ERROR, 16, "invalid value for mounts: 'all /home'");
        assert_message(f, 12, CONFIG_MESSAGE_ERROR, 17, "invalid value for chunk: '4K'");
        assert_message(f, 13, CONFIG_MESSAGE_ERROR, 18, "invalid value for pause: 'fast'");
        assert_message(f, 14, CONFIG_MESSAGE_ERROR, 21, "invalid value for pattern: 'a/*.vhdx'");
}

/* compact= is opt-in: off by default, [reclaim] sets the default, a disk or
 * watch overrides it, and the printed form keeps where it came from. */
static void test_compact_key(void **state) {
        Fixture *f = *state;
        char *printed;

        load_ok(f, "[disk.a]\npath=/a.vhdx\n");
        assert_false(f->config->reclaim.compact);
        assert_false(f->config->disks[0].reclaim.compact);

        load_ok(f,
                "[reclaim]\n"
                "compact=TRUE\n"
                "[disk.a]\n"
                "path=/a.vhdx\n"
                "[disk.b]\n"
                "path=/b.vhdx\n"
                "Compact=0\n"
                "[watch.w]\n"
                "dir=/w\n");
        assert_int_equal(f->msgs.n_items, 0);
        assert_true(f->config->reclaim.compact);
        assert_true(f->config->disks[0].reclaim.compact);
        assert_false(f->config->disks[1].reclaim.compact);
        assert_true(f->config->watches[0].reclaim.compact);
        printed = print_to_string(f->config);
        assert_non_null(strstr(printed, "maxParallel=1\ncompact=true\n"));
        assert_non_null(strstr(printed, "[disk.a]\npath=/a.vhdx\n"));
        assert_non_null(strstr(printed, "#compact=true (from [reclaim])\n\n[disk.b]"));
        assert_non_null(strstr(printed, "[disk.b]\npath=/b.vhdx\ncompact=false\n"));
        free(printed);

        load_ok(f, "[watch.w]\ndir=/w\ncompact=1\n");
        assert_false(f->config->reclaim.compact);
        assert_true(f->config->watches[0].reclaim.compact);
        assert_true(f->config->watches[0].overridden & (1u << RECLAIM_COMPACT));

        assert_int_equal(load(f, "[disk.a]\npath=/a.vhdx\ncompact=yes\n"), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 3, "invalid value for compact: 'yes' (expected true, false, 1 or 0)");
}

static void test_max_parallel_range(void **state) {
        Fixture *f = *state;

        load_ok(f, "[reclaim]\nmaxParallel=1\n");
        assert_int_equal(f->config->reclaim.max_parallel, 1);
        load_ok(f, "[reclaim]\nmaxParallel=64\n");
        assert_int_equal(f->config->reclaim.max_parallel, 64);
        assert_int_equal(load(f, "[reclaim]\nmaxParallel=65\n"), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "maxParallel: '65'");
        assert_int_equal(load(f, "[reclaim]\nmaxParallel=2x\n"), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "maxParallel: '2x'");
}

static void test_min_hole_power_of_two(void **state) {
        static const char *const bad[] = { "0", "2K", "3K", "6K", "4095", "12K", "1000K" };
        static const struct {
                const char *value;
                uint64_t bytes;
        } good[] = { { "4K", 4 * KiB }, { "4096", 4096 }, { "8KB", 8 * KiB }, { "1M", MiB }, { "1G", GiB } };
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char text[64];

                snprintf(text, sizeof(text), "[reclaim]\nminHole=%s\n", bad[i]);
                assert_int_equal(load(f, text), -EINVAL);
                assert_int_equal(f->msgs.n_items, 1);
                assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "power of two of at least 4K");

                snprintf(text, sizeof(text), "[disk.d]\npath=/d.img\nminHole=%s\n", bad[i]);
                assert_int_equal(load(f, text), -EINVAL);
                assert_message(f, 0, CONFIG_MESSAGE_ERROR, 3, "invalid value for minHole");
        }
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                char text[64];

                snprintf(text, sizeof(text), "[reclaim]\nminHole=%s\n", good[i].value);
                load_ok(f, text);
                assert_int_equal(f->config->reclaim.min_hole, good[i].bytes);
        }
}

static void test_disk_overrides(void **state) {
        Fixture *f = *state;
        const DiskConfig *a, *b;

        /* [reclaim] after the disks still provides their defaults. */
        load_ok(f,
                "[disk.a]\n"
                "path=/srv//a.vhdx\n"
                "discard=safe\n"
                "minHole=1M\n"
                "sparse=true\n"
                "[disk.b]\n"
                "path=/srv/b.vhdx\n"
                "[experimental]\n"
                "sparseVhd=false\n"
                "[reclaim]\n"
                "interval=6h\n"
                "discard=none\n");
        assert_int_equal(f->config->n_disks, 2);
        a = config_find_disk(f->config, "a");
        b = config_find_disk(f->config, "b");
        assert_non_null(a);
        assert_non_null(b);

        assert_string_equal(a->path, "/srv/a.vhdx");
        assert_int_equal(a->line, 1);
        assert_true(a->sparse);
        assert_true(a->sparse_overridden);
        assert_int_equal(a->overridden, (1u << RECLAIM_DISCARD) | (1u << RECLAIM_MIN_HOLE));
        assert_int_equal(a->reclaim.discard, DISCARD_SAFE);
        assert_int_equal(a->reclaim.min_hole, MiB);
        assert_int_equal(a->reclaim.interval_usec, 6 * USEC_PER_HOUR);
        assert_int_equal(a->reclaim.min_reclaim, 64 * MiB);

        assert_false(b->sparse);
        assert_false(b->sparse_overridden);
        assert_int_equal(b->overridden, 0);
        assert_int_equal(b->reclaim.discard, DISCARD_NONE);
        assert_int_equal(b->reclaim.interval_usec, 6 * USEC_PER_HOUR);
        assert_int_equal(b->reclaim.min_hole, 64 * KiB);
}

static void test_watch_overrides_and_defaults(void **state) {
        Fixture *f = *state;
        const WatchConfig *w;

        load_ok(f,
                "[watch.profiles]\n"
                "dir=/srv/fslogix/\n"
                "idleDelay=30m\n"
                "sparse=0\n"
                "[watch.raw]\n"
                "dir=/srv/raw\n"
                "pattern=*.img\n");
        assert_int_equal(f->config->n_watches, 2);
        w = config_find_watch(f->config, "PROFILES");
        assert_non_null(w);
        assert_string_equal(w->dir, "/srv/fslogix");
        assert_string_equal(w->pattern, "*.vhdx");
        assert_false(w->sparse);
        assert_int_equal(w->overridden, 1u << RECLAIM_IDLE_DELAY);
        assert_int_equal(w->reclaim.idle_delay_usec, 30 * USEC_PER_MINUTE);
        assert_int_equal(w->reclaim.interval_usec, USEC_PER_DAY);
        w = config_find_watch(f->config, "raw");
        assert_string_equal(w->pattern, "*.img");
        assert_true(w->sparse);
}

static void test_required_path_and_dir(void **state) {
        Fixture *f = *state;

        assert_int_equal(load(f,
                "[disk.a]\n"
                "discard=safe\n"
                "[watch.w]\n"
                "pattern=*.vhdx\n"
                "[disk.b]\n"
                "path=relative.vhdx\n"
                "[disk.c]\n"
                "path=/\n"), -EINVAL);
        /* An invalid path is reported once, where it is. */
        assert_int_equal(f->msgs.n_items, 4);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "[disk.a] has no path=");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 3, "[watch.w] has no dir=");
        assert_message(f, 2, CONFIG_MESSAGE_ERROR, 6, "invalid value for path: 'relative.vhdx' (expected the absolute path of a file)");
        assert_message(f, 3, CONFIG_MESSAGE_ERROR, 8, "invalid value for path: '/'");
}

static void test_duplicate_disks(void **state) {
        Fixture *f = *state;

        assert_int_equal(load(f,
                "[disk.a]\n"
                "path=/a.img\n"
                "[DISK.A]\n"
                "path=/other.img\n"
                "[disk.b]\n"
                "path=//a.img\n"
                "[watch.w]\n"
                "dir=/w\n"
                "[watch.w]\n"
                "dir=/w2\n"), -EINVAL);
        assert_int_equal(f->msgs.n_items, 3);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 3, "duplicate section [disk.A], first defined at line 1");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 6, "[disk.b] has the same path as [disk.a] (line 2): /a.img");
        assert_message(f, 2, CONFIG_MESSAGE_ERROR, 9, "duplicate section [watch.w], first defined at line 7");
}

static void test_section_names(void **state) {
        Fixture *f = *state;

        load_ok(f, "[disk.Ubuntu-24.04_x]\npath=/u.vhdx\n");
        assert_string_equal(f->config->disks[0].name, "Ubuntu-24.04_x");

        assert_int_equal(load(f,
                "[disk.a b]\n"
                "path=/a.img\n"
                "[disk.]\n"
                "[disk]\n"
                "[watch.x/y]\n"
                "[disk..]\n"), -EINVAL);
        assert_int_equal(f->msgs.n_items, 5);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "invalid section name [disk.a b]");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 3, "invalid section name [disk.]");
        assert_message(f, 2, CONFIG_MESSAGE_ERROR, 4, "section [disk] needs a name: [disk.NAME]");
        assert_message(f, 3, CONFIG_MESSAGE_ERROR, 5, "invalid section name [watch.x/y]");
        assert_message(f, 4, CONFIG_MESSAGE_ERROR, 6, "invalid section name [disk..]");
}

static void test_syntax_errors_all_reported(void **state) {
        Fixture *f = *state;

        assert_int_equal(load(f,
                "[reclaim\n"
                "minHole=1M\n"
                "just words\n"
                "=value\n"
                "[trim]x\n"
                "a:b=c\n"
                "[reclaim]\n"
                "   continued=1\n"
                "minReclaim=1G\n"), -EINVAL);
        assert_int_equal(config_messages_count(&f->msgs, CONFIG_MESSAGE_ERROR), 5);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "invalid section header, expected [NAME]");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 3, "invalid line, expected [section] or key=value");
        assert_message(f, 2, CONFIG_MESSAGE_ERROR, 4, "invalid line");
        assert_message(f, 3, CONFIG_MESSAGE_ERROR, 5, "invalid section header");
        assert_message(f, 4, CONFIG_MESSAGE_ERROR, 6, "invalid line");
        /* An indented line is a key of its own, not a continuation. */
        assert_message(f, 5, CONFIG_MESSAGE_WARNING, 8, "unknown key 'continued' in [reclaim]");
}

static void test_long_lines(void **state) {
        Fixture *f = *state;
        char text[2048], path[700];

        /* libinih's buffer is 200 bytes; long values still arrive whole. */
        snprintf(path, sizeof(path), "/srv/%0600d.vhdx", 7);
        snprintf(text, sizeof(text), "[disk.a]\npath = %s   # comment\n[watch.w]\ndir=%s\n", path, path);
        load_ok(f, text);
        assert_int_equal(f->msgs.n_items, 0);
        assert_string_equal(f->config->disks[0].path, path);
        assert_string_equal(f->config->watches[0].dir, path);

        snprintf(text, sizeof(text), "[reclaim]\nminHole=%0300dX\n", 0);
        assert_int_equal(load(f, text), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "invalid value for minHole: '000");

        /* Headers and keys that long are errors, and such a header starts no section. */
        snprintf(text, sizeof(text), "[disk.%0300d]\npath=/x.img\n[reclaim]\nk%0300d=1\n", 0, 0);
        assert_int_equal(load(f, text), -EINVAL);
        assert_int_equal(f->msgs.n_items, 2);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 1, "line too long");
        assert_message(f, 1, CONFIG_MESSAGE_ERROR, 4, "line too long");
        assert_int_equal(f->config ? f->config->n_disks : 0, 0);
}

static void test_trim_mounts(void **state) {
        Fixture *f = *state;

        load_ok(f, "[trim]\nmounts=ALL\n");
        assert_true(f->config->trim.all);
        assert_int_equal(f->config->trim.n_mounts, 0);

        load_ok(f, "[trim]\nmounts=none\n");
        assert_false(f->config->trim.all);
        assert_int_equal(f->config->trim.n_mounts, 0);

        load_ok(f, "[trim]\nmounts=\n");
        assert_int_equal(f->config->trim.n_mounts, 0);

        load_ok(f, "[trim]\nmounts=/srv /  /srv/\t/var\n");
        assert_int_equal(f->config->trim.n_mounts, 3);
        assert_string_equal(f->config->trim.mounts[0], "/srv");
        assert_string_equal(f->config->trim.mounts[1], "/");
        assert_string_equal(f->config->trim.mounts[2], "/var");
        assert_int_equal(f->msgs.n_items, 1);
        assert_message(f, 0, CONFIG_MESSAGE_WARNING, 2, "mount point /srv is listed twice");

        assert_int_equal(load(f, "[trim]\nmounts=/srv home\n"), -EINVAL);
        assert_message(f, 0, CONFIG_MESSAGE_ERROR, 2, "invalid value for mounts: '/srv home'");
}

static void test_missing_file(void **state) {
        Fixture *f = *state;
        char path[128];

        snprintf(path, sizeof(path), "%s/absent.conf", f->dir);
        assert_int_equal(config_load(path, &f->config, &f->msgs), -ENOENT);
        assert_null(f->config);
        assert_int_equal(f->msgs.n_items, 1);
        assert_int_equal(f->msgs.items[0].line, 0);
        assert_true(strncmp(f->msgs.items[0].text, path, strlen(path)) == 0);
        assert_non_null(strstr(f->msgs.items[0].text, "No such file or directory"));

        /* Without a message list, the result is the same. */
        assert_int_equal(config_load(path, &f->config, NULL), -ENOENT);
        assert_int_equal(config_load(f->dir, &f->config, NULL), -EISDIR);
}

static const char round_trip_input[] =
        "[daemon]\n"
        "socket=/run/test/s.sock\n"
        "adminGroup=\n"
        "[wsl2]\n"
        "memory=4GB\n"
        "[experimental]\n"
        "sparseVhd=false\n"
        "[reclaim]\n"
        "interval=1h30m\n"
        "randomizedDelay=0\n"
        "idleDelay=1500ms\n"
        "minReclaim=1536K\n"
        "ioLimit=1000\n"
        "[disk.a]\n"
        "path=/srv/a.vhdx\n"
        "sparse=true\n"
        "discard=safe\n"
        "maxParallel=3\n"
        "[disk.B]\n"
        "path=/srv/b.img\n"
        "[watch.w]\n"
        "dir=/srv/w\n"
        "pattern=*.VHDX\n"
        "minHole=2M\n"
        "[trim]\n"
        "mounts=/ /home\n"
        "pause=2s\n";

static void test_round_trip(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *first = NULL, *second = NULL;
        Config *original;

        load_ok(f, round_trip_input);
        original = TAKE_PTR(f->config);
        first = print_to_string(original);

        load_ok(f, first);
        assert_int_equal(f->msgs.n_items, 0);
        assert_true(config_equal(original, f->config));
        second = print_to_string(f->config);
        assert_string_equal(first, second);

        /* Inherited values are printed, as comments. */
        assert_non_null(strstr(first, "[disk.B]\npath=/srv/b.img\n#sparse=false (from [experimental] sparseVhd)\n"
                                      "#interval=90m (from [reclaim])\n"));
        assert_non_null(strstr(first, "\nidleDelay=1500ms\n"));
        assert_non_null(strstr(first, "\nminReclaim=1536K\n"));
        assert_non_null(strstr(first, "\nioLimit=1000B\n"));
        assert_non_null(strstr(first, "\nadminGroup=\n"));
        assert_non_null(strstr(first, "\nmounts=/ /home\n"));
        assert_null(strstr(first, "memory"));
        config_free(original);
}

static void test_round_trip_defaults(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *text = NULL;
        Config *d = NULL;

        assert_int_equal(config_new_default(&d), 0);
        text = print_to_string(d);
        load_ok(f, text);
        assert_true(config_equal(d, f->config));
        assert_non_null(strstr(text, "\nmounts=none\n"));
        assert_non_null(strstr(text, "\nminHole=64K\n"));
        assert_non_null(strstr(text, "\nioLimit=200M\n"));
        config_free(d);
}

static void test_equal_sees_provenance(void **state) {
        Fixture *f = *state;
        Config *a;

        /* Same effective values; one disk inherits, the other overrides. */
        load_ok(f, "[disk.a]\npath=/a.img\n");
        a = TAKE_PTR(f->config);
        load_ok(f, "[disk.a]\npath=/a.img\ninterval=1d\n");
        assert_true(reclaim_settings_equal(&a->disks[0].reclaim, &f->config->disks[0].reclaim));
        assert_false(config_equal(a, f->config));

        load_ok(f, "[disk.a]\npath=/a.img\n[reclaim]\nioLimit=0\n");
        assert_false(config_equal(a, f->config));
        load_ok(f, "[disk.a]\npath=/a.img\n");
        assert_true(config_equal(a, f->config));
        config_free(a);
}

static void test_check_command(void **state) {
        Fixture *f = *state;
        char *out_buf = NULL, *err_buf = NULL;
        size_t out_size = 0, err_size = 0;
        FILE *out, *err;
        char expected[256];

        write_file(f->path, "[reclaim]\nbogus=1\nminHole=1M\n");
        out = open_memstream(&out_buf, &out_size);
        err = open_memstream(&err_buf, &err_size);
        assert_int_equal(config_check_command(f->path, out, err), 0);
        fclose(out);
        fclose(err);
        assert_non_null(strstr(out_buf, "[reclaim]\ninterval=1d\n"));
        assert_non_null(strstr(out_buf, "\nminHole=1M\n"));
        snprintf(expected, sizeof(expected), "%s:2: warning: unknown key 'bogus' in [reclaim], ignored\n", f->path);
        assert_string_equal(err_buf, expected);
        free(out_buf);
        free(err_buf);

        write_file(f->path, "[reclaim]\nminHole=1K\nmaxParallel=100\n");
        out = open_memstream(&out_buf, &out_size);
        err = open_memstream(&err_buf, &err_size);
        assert_int_equal(config_check_command(f->path, out, err), 1);
        fclose(out);
        fclose(err);
        assert_string_equal(out_buf, "");
        assert_non_null(strstr(err_buf, ":2: error: invalid value for minHole: '1K'"));
        assert_non_null(strstr(err_buf, ":3: error: invalid value for maxParallel: '100'"));
        free(out_buf);
        free(err_buf);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size_suffixes),
                cmocka_unit_test(test_parse_duration_units),
                cmocka_unit_test(test_parse_boolean_spellings),
                cmocka_unit_test(test_format_largest_exact_unit),
                cmocka_unit_test(test_format_parses_back),
                cmocka_unit_test_setup_teardown(test_empty_file_is_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_every_key_is_read, setup, teardown),
                cmocka_unit_test_setup_teardown(test_names_ignore_case, setup, teardown),
                cmocka_unit_test_setup_teardown(test_comments, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crlf_and_bom, setup, teardown),
                cmocka_unit_test_setup_teardown(test_utf16_is_named, setup, teardown),
                cmocka_unit_test_setup_teardown(test_format_key, setup, teardown),
                cmocka_unit_test_setup_teardown(test_recursive_key, setup, teardown),
                cmocka_unit_test(test_watch_pattern_match),
                cmocka_unit_test_setup_teardown(test_disk_in_recursive_watch_warns, setup, teardown),
                cmocka_unit_test_setup_teardown(test_duplicate_key_first_wins, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unknown_keys_and_sections_warn, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_outside_section_warns, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wslconfig_keys_are_quiet, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_values_all_reported, setup, teardown),
                cmocka_unit_test_setup_teardown(test_compact_key, setup, teardown),
                cmocka_unit_test_setup_teardown(test_max_parallel_range, setup, teardown),
                cmocka_unit_test_setup_teardown(test_min_hole_power_of_two, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disk_overrides, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch_overrides_and_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_required_path_and_dir, setup, teardown),
                cmocka_unit_test_setup_teardown(test_duplicate_disks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_section_names, setup, teardown),
                cmocka_unit_test_setup_teardown(test_syntax_errors_all_reported, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
                cmocka_unit_test_setup_teardown(test_trim_mounts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_round_trip_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_equal_sees_provenance, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_command, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
