/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "extent.h"
#include "macro.h"
#include "scan.h"
#include "scratch-dir.h"

#define ALIGN 4096
#define MIN_HOLE (64 * KiB)

/* Test files are described as a list of segments. */
typedef enum SegKind {
        SEG_DATA,       /* pattern bytes, never zero */
        SEG_ZERO,       /* written zeros: allocated */
        SEG_HOLE,       /* never written: a hole (keep these 4 KiB aligned) */
        SEG_ALMOST,     /* zeros but for the last byte: must never be punched */
} SegKind;

typedef struct Seg {
        SegKind kind;
        uint64_t length;
} Seg;

typedef struct TestFile {
        char path[300];
        int fd;
        uint64_t size;
        uint8_t *expected;      /* the content the file must always read back as */
} TestFile;

static uint8_t pattern_byte(uint64_t off) {
        uint64_t x = off * UINT64_C(0x9E3779B97F4A7C15);
        return (uint8_t) ((x >> 56) | 1);
}

static uint64_t segs_size(const Seg *segs, size_t n) {
        uint64_t t = 0;
        for (size_t i = 0; i < n; i++)
                t += segs[i].length;
        return t;
}

/* dir: the group's scratch directory, removed with all in it at the end. */
static void test_file_make(const char *dir, TestFile *f, const Seg *segs, size_t n) {
        uint64_t off = 0;

        snprintf(f->path, sizeof f->path, "%s/image-XXXXXX", dir);
        f->fd = mkostemp(f->path, O_CLOEXEC);
        assert_true(f->fd >= 0);
        f->size = segs_size(segs, n);
        assert_int_equal(ftruncate(f->fd, (off_t) f->size), 0);
        f->expected = calloc(1, f->size);
        assert_non_null(f->expected);

        for (size_t i = 0; i < n; i++) {
                uint8_t *p = f->expected + off;

                if (segs[i].kind == SEG_DATA)
                        for (uint64_t j = 0; j < segs[i].length; j++)
                                p[j] = pattern_byte(off + j);
                else if (segs[i].kind == SEG_ALMOST)
                        p[segs[i].length - 1] = 0x5a;
                if (segs[i].kind != SEG_HOLE)
                        assert_int_equal(pwrite(f->fd, p, segs[i].length, (off_t) off),
                                         (ssize_t) segs[i].length);
                off += segs[i].length;
        }
        assert_int_equal(fsync(f->fd), 0);
}

static void test_file_done(TestFile *f) {
        close(f->fd);
        unlink(f->path);
        free(f->expected);
}

static void assert_content_intact(const TestFile *f) {
        uint8_t *buf = malloc(f->size);

        assert_non_null(buf);
        assert_int_equal(pread(f->fd, buf, f->size, 0), (ssize_t) f->size);
        assert_memory_equal(buf, f->expected, f->size);
        free(buf);
}

/* The file's holes, as the kernel reports them. */
static void hole_map(int fd, uint64_t size, ExtentList *holes) {
        uint64_t pos = 0;

        extent_list_clear(holes);
        while (pos < size) {
                off_t h = lseek(fd, (off_t) pos, SEEK_HOLE), d;
                assert_true(h >= 0);
                if ((uint64_t) h >= size)
                        break;
                d = lseek(fd, h, SEEK_DATA);
                if (d < 0) {
                        assert_int_equal(errno, ENXIO);
                        d = (off_t) size;
                }
                assert_int_equal(extent_list_add(holes, (uint64_t) h, (uint64_t) (d - h)), 0);
                pos = (uint64_t) d;
        }
}

static void assert_holes(int fd, uint64_t size, const Extent *want, size_t n) {
        ExtentList got = {};

        hole_map(fd, size, &got);
        for (size_t i = 0; i < MAX(got.n, n); i++) {
                if (i < got.n && i < n && got.items[i].offset == want[i].offset &&
                    got.items[i].length == want[i].length)
                        continue;
                fprintf(stderr, "hole %zu: got [%" PRIu64 ", +%" PRIu64 ") want [%" PRIu64 ", +%" PRIu64 ")\n",
                        i, i < got.n ? got.items[i].offset : 0, i < got.n ? got.items[i].length : 0,
                        i < n ? want[i].offset : 0, i < n ? want[i].length : 0);
                fail();
        }
        extent_list_done(&got);
}

static ScanControl control_default(void) {
        return (ScanControl) { .min_hole = MIN_HOLE, .align = ALIGN };
}

static int scan_whole(const TestFile *f, const ScanControl *c, ScanResult *r) {
        ExtentList l = {};
        int k;

        assert_int_equal(extent_list_add(&l, 0, f->size), 0);
        k = scan_punch_zero_runs(f->fd, &l, c, r);
        extent_list_done(&l);
        return k;
}

/* Zero runs of many sizes, aligned and not, between data. */
static const Seg many_sizes[] = {
        { SEG_DATA, 8 * KiB },          /* [0, 8K) */
        { SEG_ZERO, 4 * KiB },          /* smaller than min_hole: stays */
        { SEG_DATA, 4 * KiB },
        { SEG_ZERO, 64 * KiB },         /* [16K, 80K): exactly min_hole */
        { SEG_DATA, 4 * KiB },
        { SEG_ZERO, 60 * KiB },         /* [84K, 144K): min_hole minus one block: stays */
        { SEG_DATA, 4 * KiB },
        { SEG_ZERO, 32 * KiB },         /* [148K, 180K) */
        { SEG_ALMOST, 4 * KiB },        /* one non-zero byte at its end splits the run */
        { SEG_ZERO, 32 * KiB },         /* [184K, 216K) */
        { SEG_DATA, 1000 },             /* [221184, 222184) */
        { SEG_ZERO, 70000 },            /* [222184, 292184): trimmed to [225280, 290816) = 64K */
        { SEG_DATA, 3096 },             /* [292184, 295280) */
        { SEG_ZERO, 69000 },            /* [295280, 364280): trimmed to [299008, 360448) = 60K: stays */
        { SEG_DATA, 4360 },             /* [364280, 368640) */
        { SEG_ZERO, 1 * MiB },          /* [368640, 1417216) */
        { SEG_DATA, 4 * KiB },          /* [1417216, 1421312) */
        { SEG_ZERO, 200 * KiB + 1000 }, /* [1421312, 1627112) to EOF: trimmed to 1626112 */
};

static const Extent many_sizes_holes[] = {
        { 16 * KiB, 64 * KiB },
        { 225280, 64 * KiB },
        { 368640, 1 * MiB },
        { 1421312, 200 * KiB },
};

static void test_runs_of_many_sizes(void **state) {
        ScanControl c = control_default();
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, many_sizes, ELEMENTSOF(many_sizes));
        assert_holes(f.fd, f.size, NULL, 0);
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_holes(f.fd, f.size, many_sizes_holes, ELEMENTSOF(many_sizes_holes));
        assert_int_equal(r.punched, 64 * KiB + 64 * KiB + 1 * MiB + 200 * KiB);
        assert_int_equal(r.examined, f.size);
        assert_int_equal(r.read, f.size);
        assert_content_intact(&f);
        test_file_done(&f);
}

static void test_dry_run_punches_nothing_and_counts_the_same(void **state) {
        ScanControl c = control_default();
        ScanResult dry, real;
        TestFile f;

        test_file_make(*state, &f, many_sizes, ELEMENTSOF(many_sizes));
        c.dry_run = true;
        assert_int_equal(scan_whole(&f, &c, &dry), 0);
        assert_holes(f.fd, f.size, NULL, 0);
        c.dry_run = false;
        assert_int_equal(scan_whole(&f, &c, &real), 0);
        assert_holes(f.fd, f.size, many_sizes_holes, ELEMENTSOF(many_sizes_holes));
        assert_int_equal(dry.punched, real.punched);
        assert_true(dry.punched > 0);
        assert_content_intact(&f);
        test_file_done(&f);
}

/* hold_until: below it nothing is punched and commit() never runs; reached,
 * commit() runs once, before the first punch, and every run is punched as
 * without the hold. The file is read once either way. */
typedef struct Commit {
        unsigned calls;
        int fd;
        uint64_t size;
        bool holes_at_commit;
} Commit;

static int on_commit(void *userdata) {
        Commit *cm = userdata;
        ExtentList holes = {};

        cm->calls++;
        hole_map(cm->fd, cm->size, &holes);
        cm->holes_at_commit = holes.n > 0;
        extent_list_done(&holes);
        return 0;
}

static void test_hold_until_threshold(void **state) {
        const uint64_t total = 64 * KiB + 64 * KiB + 1 * MiB + 200 * KiB;
        ScanControl c = control_default();
        Commit cm = {};
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, many_sizes, ELEMENTSOF(many_sizes));
        cm = (Commit) { .fd = f.fd, .size = f.size };
        c.commit = on_commit;
        c.userdata = &cm;

        c.hold_until = total + 1;
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_int_equal(cm.calls, 0);
        assert_false(r.committed);
        assert_int_equal(r.punched, 0);
        assert_int_equal(r.held, total);
        assert_int_equal(r.read, f.size);
        assert_holes(f.fd, f.size, NULL, 0);

        c.hold_until = 64 * KiB + 64 * KiB + 1;    /* reached inside the 1 MiB run */
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_int_equal(cm.calls, 1);
        assert_false(cm.holes_at_commit);
        assert_true(r.committed);
        assert_int_equal(r.held, 0);
        assert_int_equal(r.punched, total);
        assert_int_equal(r.read, f.size);
        assert_holes(f.fd, f.size, many_sizes_holes, ELEMENTSOF(many_sizes_holes));
        assert_content_intact(&f);
        test_file_done(&f);
}

static int failing_commit(void *userdata) {
        (*(unsigned *) userdata)++;
        return -EINTR;
}

/* A commit that fails (the caller's other tiers were stopped) stops the
 * scan with its error, nothing punched, below the first held run. */
static void test_hold_commit_failure(void **state) {
        ScanControl c = control_default();
        unsigned calls = 0;
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, many_sizes, ELEMENTSOF(many_sizes));
        c.commit = failing_commit;
        c.userdata = &calls;
        c.hold_until = 64 * KiB;
        assert_int_equal(scan_whole(&f, &c, &r), -EINTR);
        assert_int_equal(calls, 1);
        assert_int_equal(r.punched, 0);
        assert_true(r.stop_offset <= 16 * KiB);
        assert_holes(f.fd, f.size, NULL, 0);
        assert_content_intact(&f);
        test_file_done(&f);
}

static void test_zero_runs_at_file_start_and_unaligned_end(void **state) {
        static const Seg segs[] = {
                { SEG_ZERO, 128 * KiB },
                { SEG_DATA, 4 * KiB },
                { SEG_ZERO, 100 * KiB + 1000 },
        };
        static const Extent want[] = {
                { 0, 128 * KiB },
                { 132 * KiB, 100 * KiB },   /* the partial last block stays */
        };
        ScanControl c = control_default();
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, segs, ELEMENTSOF(segs));
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_holes(f.fd, f.size, want, ELEMENTSOF(want));
        assert_int_equal(r.punched, 228 * KiB);
        assert_content_intact(&f);
        test_file_done(&f);
}

static void test_existing_holes_are_skipped_and_merged(void **state) {
        static const Seg segs[] = {
                { SEG_DATA, 64 * KiB },
                { SEG_HOLE, 1 * MiB },          /* [64K, 1088K) */
                { SEG_DATA, 64 * KiB },
                { SEG_ZERO, 32 * KiB },         /* [1152K, 1184K) */
                { SEG_HOLE, 256 * KiB },
                { SEG_ZERO, 32 * KiB },         /* [1440K, 1472K): one run with the hole */
                { SEG_DATA, 4 * KiB },
                { SEG_ZERO, 8 * KiB },          /* [1476K, 1484K): widens the next hole */
                { SEG_HOLE, 128 * KiB },        /* [1484K, 1612K) */
                { SEG_DATA, 4 * KiB },
                { SEG_HOLE, 4 * KiB },          /* [1616K, 1620K) */
                { SEG_ZERO, 4 * KiB },          /* run of 8K with the hole: stays */
                { SEG_DATA, 4 * KiB },
        };
        static const Extent before[] = {
                { 64 * KiB, 1 * MiB },
                { 1184 * KiB, 256 * KiB },
                { 1484 * KiB, 128 * KiB },
                { 1616 * KiB, 4 * KiB },
        };
        static const Extent after[] = {
                { 64 * KiB, 1 * MiB },
                { 1152 * KiB, 320 * KiB },
                { 1476 * KiB, 136 * KiB },
                { 1616 * KiB, 4 * KiB },
        };
        ScanControl c = control_default();
        uint64_t allocated;
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, segs, ELEMENTSOF(segs));
        assert_holes(f.fd, f.size, before, ELEMENTSOF(before));
        assert_int_equal(scan_allocated_bytes(f.fd, 0, f.size, &allocated), 0);
        assert_int_equal(allocated, f.size - (1 * MiB + 256 * KiB + 128 * KiB + 4 * KiB));
        assert_int_equal(scan_allocated_bytes(f.fd, 1100 * KiB, 200 * KiB, &allocated), 0);
        assert_int_equal(allocated, 84 * KiB);

        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_holes(f.fd, f.size, after, ELEMENTSOF(after));
        assert_int_equal(r.punched, 72 * KiB);
        assert_int_equal(r.examined, f.size);
        assert_int_equal(r.read, f.size - (1 * MiB + 256 * KiB + 128 * KiB + 4 * KiB));
        assert_content_intact(&f);
        test_file_done(&f);
}

static const Seg ranges_layout[] = {
        { SEG_DATA, 64 * KiB },
        { SEG_ZERO, 96 * KiB },         /* [64K, 160K) */
        { SEG_DATA, 224 * KiB },
        { SEG_ZERO, 256 * KiB },        /* [384K, 640K) */
        { SEG_DATA, 64 * KiB },
        { SEG_ZERO, 64 * KiB },         /* [704K, 768K) */
        { SEG_DATA, 64 * KiB },
};

static void test_touching_and_separate_ranges(void **state) {
        static const Extent want[] = {
                { 64 * KiB, 96 * KiB },         /* 48K + 48K across touching ranges */
                { 384 * KiB, 116 * KiB },       /* up to the gap between ranges */
                { 520 * KiB, 120 * KiB },       /* after it */
        };
        ScanControl c = control_default();
        ExtentList l = {};
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, ranges_layout, ELEMENTSOF(ranges_layout));
        /* Not normalized on purpose: the first two touch. The last two do not,
         * and cut the 64K run at 704K into two short pieces. */
        l.items = (Extent[]) {
                { 0, 112 * KiB },
                { 112 * KiB, 388 * KiB },
                { 520 * KiB, 216 * KiB },
                { 740 * KiB, 92 * KiB },
        };
        l.n = l.allocated = 4;
        assert_int_equal(scan_punch_zero_runs(f.fd, &l, &c, &r), 0);
        assert_holes(f.fd, f.size, want, ELEMENTSOF(want));
        assert_int_equal(r.punched, (96 + 116 + 120) * KiB);
        assert_int_equal(r.examined, (112 + 388 + 216 + 92) * KiB);
        assert_content_intact(&f);
        test_file_done(&f);
}

static void test_overlapping_ranges_and_bad_align_are_refused(void **state) {
        ScanControl c = control_default();
        ExtentList l = {};
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, ranges_layout, ELEMENTSOF(ranges_layout));
        l.items = (Extent[]) { { 0, 200 * KiB }, { 100 * KiB, 200 * KiB } };
        l.n = l.allocated = 2;
        assert_int_equal(scan_punch_zero_runs(f.fd, &l, &c, &r), -EINVAL);
        assert_int_equal(scan_punch_ranges(f.fd, &l, &c, &r), -EINVAL);
        l.n = 1;
        c.align = 3000;
        assert_int_equal(scan_punch_zero_runs(f.fd, &l, &c, &r), -EINVAL);
        assert_holes(f.fd, f.size, NULL, 0);
        test_file_done(&f);
}

/* 24 MiB of data with 64K zero runs straddling every 256K boundary (a chunk
 * boundary for every chunk size the scanner uses), and a long run across the
 * 8 and 16 MiB boundaries. */
#define STRADDLE_SIZE (24 * MiB)
#define LONG_RUN_START (7 * MiB + 12 * KiB)
#define LONG_RUN_END (17 * MiB + 4 * KiB)

static size_t straddle_layout(Seg *segs, ExtentList *holes) {
        uint64_t pos = 0;
        size_t n = 0;

        for (uint64_t b = 256 * KiB; b < STRADDLE_SIZE; b += 256 * KiB) {
                uint64_t zs = b - 32 * KiB, ze = b + 32 * KiB;

                if (ze <= LONG_RUN_START || zs >= LONG_RUN_END) {
                        segs[n++] = (Seg) { SEG_DATA, zs - pos };
                        segs[n++] = (Seg) { SEG_ZERO, ze - zs };
                        extent_list_add(holes, zs, ze - zs);
                        pos = ze;
                } else if (pos < LONG_RUN_START) {
                        segs[n++] = (Seg) { SEG_DATA, LONG_RUN_START - pos };
                        segs[n++] = (Seg) { SEG_ZERO, LONG_RUN_END - LONG_RUN_START };
                        extent_list_add(holes, LONG_RUN_START, LONG_RUN_END - LONG_RUN_START);
                        pos = LONG_RUN_END;
                }
        }
        segs[n++] = (Seg) { SEG_DATA, STRADDLE_SIZE - pos };
        return n;
}

static void straddle_check(const char *dir, uint64_t io_limit) {
        ScanControl c = control_default();
        ExtentList want = {};
        Seg segs[256];
        ScanResult r;
        TestFile f;
        size_t n;

        n = straddle_layout(segs, &want);
        assert_true(n < ELEMENTSOF(segs));
        test_file_make(dir, &f, segs, n);
        c.io_limit = io_limit;
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        assert_holes(f.fd, f.size, want.items, want.n);
        assert_int_equal(r.punched, extent_list_total(&want));
        assert_content_intact(&f);
        test_file_done(&f);
        extent_list_done(&want);
}

static void test_runs_straddling_chunk_boundaries(void **state) {
        straddle_check(*state, 0);
        /* io_limit caps a read at 50 ms of bandwidth: 4.8 MiB, not a power of two. */
        straddle_check(*state, 96 * MiB);
}

/* Address-space limits cannot be tested under a sanitizer (it reserves
 * terabytes of address space), so this test exists only in the plain build,
 * which the suite runs as well. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
static uint64_t vm_size(void) {
        char line[256];
        uint64_t kb = 0;
        FILE *f = fopen("/proc/self/status", "re");

        assert_non_null(f);
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "VmSize: %" SCNu64 " kB", &kb) == 1)
                        break;
        fclose(f);
        assert_true(kb > 0);
        return kb * KiB;
}

/* Where the file cannot be mapped, the scanner reads it instead. A child with
 * too little address space to map an 8 MiB chunk shows that this path gives
 * the same result. */
static void test_read_path_when_mapping_fails(void **state) {
        ScanControl c = control_default();
        ExtentList want = {};
        struct { int rc; bool map_failed; ScanResult r; } out = {};
        Seg segs[256];
        TestFile f;
        int p[2], status;
        pid_t pid;

        test_file_make(*state, &f, segs, straddle_layout(segs, &want));
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct rlimit rl;
                void *m, *b;

                /* Keep 9 MiB of free heap (no mmap for big allocations, no
                 * trimming), so the scanner's 8 MiB buffer costs no address
                 * space, then leave 4 MiB of address space: too little for
                 * mapping an 8 MiB chunk. */
                mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
                mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
                free(malloc(9 * MiB));
                getrlimit(RLIMIT_AS, &rl);
                rl.rlim_cur = vm_size() + 4 * MiB;
                if (setrlimit(RLIMIT_AS, &rl) < 0)
                        _exit(2);
                b = malloc(8 * MiB + 8 * KiB);
                m = mmap(NULL, 8 * MiB, PROT_READ, MAP_SHARED, f.fd, 0);
                out.map_failed = b && m == MAP_FAILED;
                free(b);
                out.rc = scan_whole(&f, &c, &out.r);
                _exit(write(p[1], &out, sizeof out) == sizeof out ? 0 : 3);
        }
        close(p[1]);
        assert_int_equal(read(p[0], &out, sizeof out), (ssize_t) sizeof out);
        close(p[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        assert_true(out.map_failed);
        assert_int_equal(out.rc, 0);
        assert_int_equal(out.r.read, f.size);
        assert_int_equal(out.r.punched, extent_list_total(&want));
        assert_holes(f.fd, f.size, want.items, want.n);
        assert_content_intact(&f);
        extent_list_done(&want);
        test_file_done(&f);
}
#endif

typedef struct Counter {
        unsigned checks;
        uint64_t progress;
        uint64_t cancel_after;  /* bytes examined; 0 = never */
        int error;
} Counter;

static int counter_check(void *userdata) {
        Counter *k = userdata;

        k->checks++;
        if (k->cancel_after > 0 && k->progress >= k->cancel_after)
                return k->error;
        return 0;
}

static void counter_progress(uint64_t done, void *userdata) {
        Counter *k = userdata;

        assert_true(done >= k->progress);
        k->progress = done;
}

static void test_io_limit_paces_reads(void **state) {
        static const Seg segs[] = { { SEG_DATA, 20 * MiB } };
        ScanControl c = control_default();
        Counter k = {};
        struct timespec t0, t1;
        ScanResult r;
        TestFile f;
        double elapsed;

        test_file_make(*state, &f, segs, ELEMENTSOF(segs));
        c.io_limit = 100 * MiB;
        c.check = counter_check;
        c.progress = counter_progress;
        c.userdata = &k;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(scan_whole(&f, &c, &r), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
        fprintf(stderr, "20 MiB at 100 MiB/s took %.3f s, %u checks\n", elapsed, k.checks);
        assert_true(elapsed >= 0.15);
        /* Sleeping 150 ms in slices of at most 50 ms checks at least 3 times. */
        assert_true(k.checks >= 3);
        assert_int_equal(k.progress, f.size);
        assert_int_equal(r.read, 20 * MiB);
        test_file_done(&f);
}

/* 32 MiB: 1 MiB zero runs at every even MiB, one straddling 8 MiB. */
static size_t cancel_layout(Seg *segs, ExtentList *holes) {
        uint64_t pos = 0;
        size_t n = 0;

        for (uint64_t m = 0; m < 32; m += 2) {
                uint64_t zs = m == 8 ? 7 * MiB + 512 * KiB : m * MiB;

                if (zs > pos)
                        segs[n++] = (Seg) { SEG_DATA, zs - pos };
                segs[n++] = (Seg) { SEG_ZERO, 1 * MiB };
                extent_list_add(holes, zs, 1 * MiB);
                pos = zs + 1 * MiB;
        }
        segs[n++] = (Seg) { SEG_DATA, 32 * MiB - pos };
        return n;
}

static void test_cancel_stops_and_resumes(void **state) {
        ScanControl c = control_default();
        ExtentList want = {}, rest = {};
        Counter k = { .cancel_after = 10 * MiB, .error = -ECANCELED };
        uint64_t punched;
        Seg segs[64];
        ScanResult r;
        TestFile f;
        size_t n;

        n = cancel_layout(segs, &want);
        test_file_make(*state, &f, segs, n);
        c.check = counter_check;
        c.progress = counter_progress;
        c.userdata = &k;
        assert_int_equal(scan_whole(&f, &c, &r), -ECANCELED);
        fprintf(stderr, "cancelled at %" PRIu64 ", punched %" PRIu64 "\n", r.stop_offset, r.punched);
        /* Punches still queued when the scan stopped were dropped, so the
         * stop can lie below where the check struck, never above. */
        assert_true(r.stop_offset <= r.examined);
        assert_true(r.examined >= 10 * MiB);
        assert_true(r.examined < f.size);
        assert_int_equal(r.stop_offset % ALIGN, 0);

        /* Every run below the stop is a hole, nothing at or above it is. */
        {
                ExtentList below = {}, limit = {};
                extent_list_add(&limit, 0, r.stop_offset);
                assert_int_equal(extent_list_intersect(&want, &limit, &below), 0);
                assert_holes(f.fd, f.size, below.items, below.n);
                assert_int_equal(r.punched, extent_list_total(&below));
                extent_list_done(&below);
                extent_list_done(&limit);
        }
        assert_content_intact(&f);
        punched = r.punched;

        /* A later pass resumes at stop_offset and ends where one pass would. */
        k = (Counter) {};
        extent_list_add(&rest, r.stop_offset, f.size - r.stop_offset);
        assert_int_equal(scan_punch_zero_runs(f.fd, &rest, &c, &r), 0);
        assert_holes(f.fd, f.size, want.items, want.n);
        assert_int_equal(punched + r.punched, extent_list_total(&want));
        assert_content_intact(&f);

        extent_list_done(&want);
        extent_list_done(&rest);
        test_file_done(&f);
}

static void test_punch_failure_stops_with_nothing_half_done(void **state) {
        ScanControl c = control_default();
        _cleanup_close_ int ro = -1;
        ExtentList l = {};
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, many_sizes, ELEMENTSOF(many_sizes));
        /* fallocate() on a read-only descriptor fails like a host file system
         * that cannot punch would, at the first run worth punching. */
        ro = open(f.path, O_RDONLY | O_CLOEXEC);
        assert_true(ro >= 0);
        extent_list_add(&l, 0, f.size);
        assert_int_equal(scan_punch_zero_runs(ro, &l, &c, &r), -EBADF);
        assert_int_equal(r.punched, 0);
        assert_int_equal(r.stop_offset, 16 * KiB);
        assert_holes(f.fd, f.size, NULL, 0);
        assert_content_intact(&f);
        extent_list_done(&l);
        test_file_done(&f);
}

/* Stale tier: no reading, only data pieces count. */
static const Seg stale_layout[] = {
        { SEG_DATA, 1 * MiB + 256 * KiB },
        { SEG_HOLE, 256 * KiB },                /* [1M+256K, 1M+512K) */
        { SEG_DATA, 1 * MiB + 512 * KiB },      /* to 3M */
};

static ExtentList stale_ranges(void) {
        ExtentList l = {};
        extent_list_add(&l, 1 * MiB, 1 * MiB);                  /* a block with a hole inside */
        extent_list_add(&l, 2 * MiB + 1000, 69000);             /* trimmed to exactly 64K */
        extent_list_add(&l, 2 * MiB + 128 * KiB, 60 * KiB);     /* shorter than min_hole */
        extent_list_add(&l, 2 * MiB + 256 * KiB, 32 * KiB);     /* two touching halves */
        l.items[l.n++] = (Extent) { 2 * MiB + 288 * KiB, 32 * KiB };
        return l;
}

static void test_stale_ranges(void **state) {
        static const Extent want[] = {
                { 1 * MiB, 1 * MiB },
                { 2 * MiB + 4 * KiB, 64 * KiB },
                { 2 * MiB + 256 * KiB, 64 * KiB },
        };
        static const Extent hole_before[] = { { 1 * MiB + 256 * KiB, 256 * KiB } };
        ScanControl c = control_default();
        ExtentList l = stale_ranges();
        Counter k = {};
        ScanResult dry, r;
        TestFile f;

        test_file_make(*state, &f, stale_layout, ELEMENTSOF(stale_layout));
        c.check = counter_check;
        c.progress = counter_progress;
        c.userdata = &k;
        c.dry_run = true;
        assert_int_equal(scan_punch_ranges(f.fd, &l, &c, &dry), 0);
        assert_holes(f.fd, f.size, hole_before, ELEMENTSOF(hole_before));
        c.dry_run = false;
        k = (Counter) {};
        assert_int_equal(scan_punch_ranges(f.fd, &l, &c, &r), 0);
        assert_holes(f.fd, f.size, want, ELEMENTSOF(want));
        assert_int_equal(r.punched, 768 * KiB + 64 * KiB + 64 * KiB);
        assert_int_equal(dry.punched, r.punched);
        assert_int_equal(r.read, 0);
        assert_int_equal(r.examined, extent_list_total(&l));
        assert_true(k.checks >= 4);
        /* Nothing outside the ranges changed. */
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                memset(f.expected + want[i].offset, 0, want[i].length);
        assert_content_intact(&f);
        extent_list_done(&l);
        test_file_done(&f);
}

static void test_stale_cancel(void **state) {
        ScanControl c = control_default();
        ExtentList l = stale_ranges();
        Counter k = { .cancel_after = 1, .error = -ETIME };
        ScanResult r;
        TestFile f;

        test_file_make(*state, &f, stale_layout, ELEMENTSOF(stale_layout));
        c.check = counter_check;
        c.progress = counter_progress;
        c.userdata = &k;
        /* The first range is done, then the time limit strikes. */
        assert_int_equal(scan_punch_ranges(f.fd, &l, &c, &r), -ETIME);
        assert_int_equal(r.stop_offset, 2 * MiB);
        assert_int_equal(r.punched, 768 * KiB);
        assert_holes(f.fd, f.size, (const Extent[]) { { 1 * MiB, 1 * MiB } }, 1);
        extent_list_done(&l);
        test_file_done(&f);
}

static int scratch_setup(void **state) {
        return scratch_dir_setup(state, "test-scan");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_runs_of_many_sizes),
                cmocka_unit_test(test_dry_run_punches_nothing_and_counts_the_same),
                cmocka_unit_test(test_zero_runs_at_file_start_and_unaligned_end),
                cmocka_unit_test(test_existing_holes_are_skipped_and_merged),
                cmocka_unit_test(test_touching_and_separate_ranges),
                cmocka_unit_test(test_overlapping_ranges_and_bad_align_are_refused),
                cmocka_unit_test(test_runs_straddling_chunk_boundaries),
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
                cmocka_unit_test(test_read_path_when_mapping_fails),
#endif
                cmocka_unit_test(test_io_limit_paces_reads),
                cmocka_unit_test(test_cancel_stops_and_resumes),
                cmocka_unit_test(test_punch_failure_stops_with_nothing_half_done),
                cmocka_unit_test(test_stale_ranges),
                cmocka_unit_test(test_stale_cancel),
                /* Last: the address-space test above depends on the heap the tests before it leave. */
                cmocka_unit_test(test_hold_until_threshold),
                cmocka_unit_test(test_hold_commit_failure),
        };
        return cmocka_run_group_tests(tests, scratch_setup, scratch_dir_teardown);
}
