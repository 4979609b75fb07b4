/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Runs the zero-tier scanner over a whole file, the way a pass does (one
 * leased descriptor), and prints what it did as one JSON object:
 *
 *     scan-bench [--min-hole BYTES] [--io-limit BYTES] [--dry-run] FILE
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "extent.h"
#include "guard.h"
#include "log.h"
#include "macro.h"
#include "scan.h"

typedef struct Options {
        uint64_t min_hole;
        uint64_t io_limit;
        bool dry_run;
        const char *path;
} Options;

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;

        errno = 0;
        *ret = strtoull(s, &end, 0);
        return errno || *end || end == s ? -EINVAL : 0;
}

static int parse_args(int argc, char **argv, Options *o) {
        static const struct option options[] = {
                { "min-hole", required_argument, NULL, 'm' },
                { "io-limit", required_argument, NULL, 'l' },
                { "dry-run",  no_argument,       NULL, 'n' },
                {}
        };
        int c;

        *o = (Options) { .min_hole = 64 * KiB };
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'm':
                        if (parse_u64(optarg, &o->min_hole) < 0)
                                return log_error_errno(EINVAL, "Bad --min-hole: %s", optarg);
                        break;
                case 'l':
                        if (parse_u64(optarg, &o->io_limit) < 0)
                                return log_error_errno(EINVAL, "Bad --io-limit: %s", optarg);
                        break;
                case 'n':
                        o->dry_run = true;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind != argc - 1)
                return log_error_errno(EINVAL, "Usage: scan-bench [--min-hole N] [--io-limit N] [--dry-run] FILE");
        o->path = argv[optind];
        return 0;
}

static int lease_check(void *userdata) {
        return guard_lease_broken(*(int *) userdata) ? -EINTR : 0;
}

static double now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        _cleanup_close_ int fd = -1;
        ExtentList ranges = {};
        ScanControl c;
        ScanResult r;
        struct stat st;
        Options o;
        double t;
        int k;

        log_setup("scan-bench", LOG_TARGET_AUTO);
        if (parse_args(argc, argv, &o) < 0)
                return 2;

        fd = open(o.path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0)
                return log_error_errno(errno, "Failed to open %s: %m", o.path), 1;
        k = guard_acquire(fd);
        if (k < 0)
                return log_error_errno(k, "Failed to take a write lease on %s: %m", o.path), 1;

        c = (ScanControl) {
                .min_hole = o.min_hole,
                .align = (uint64_t) st.st_blksize,
                .io_limit = o.io_limit,
                .dry_run = o.dry_run,
                .check = lease_check,
                .userdata = &fd,
        };
        k = extent_list_add(&ranges, 0, (uint64_t) st.st_size);
        if (k < 0)
                return log_error_errno(k, "Out of memory"), 1;

        t = now_sec();
        k = scan_punch_zero_runs(fd, &ranges, &c, &r);
        t = now_sec() - t;
        guard_release(fd);
        extent_list_done(&ranges);
        if (k < 0)
                return log_error_errno(k, "Scan stopped at %" PRIu64 ": %m", r.stop_offset), 1;

        printf("{\"seconds\": %.6f, \"examined\": %" PRIu64 ", \"read\": %" PRIu64
               ", \"punched\": %" PRIu64 "}\n", t, r.examined, r.read, r.punched);
        return 0;
}
