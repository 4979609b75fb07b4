/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "config.h"
#include "log.h"
#include "manager.h"
#include "once.h"
#include "pass.h"

typedef enum Mode {
        MODE_DAEMON,
        MODE_ONCE,
        MODE_INSPECT,
        MODE_CHECK_CONFIG,
} Mode;

typedef struct Args {
        Mode mode;
        const char *config_file;
        const char *socket_path;
        const char *state_dir;
        OnceOptions once;
} Args;

static void help(void) {
        printf("Usage:\n"
               "  vhdreclaimd [-c FILE] [--socket PATH] [--state-dir DIR]\n"
               "  vhdreclaimd --once [--dry-run] [--discard=safe|free] [--force] [--min-hole=SIZE] [--format=FORMAT] [--compact] [--json] IMAGE...\n"
               "  vhdreclaimd --inspect [--format=FORMAT] IMAGE\n"
               "  vhdreclaimd --check-config [-c FILE]   (also -n)\n"
               "\n"
               "Gives the space of dead, zero and free ranges of virtual disk images back to the host.\n"
               "\n"
               "  -c, --config=FILE      configuration file (default " DEFAULT_CONFIG_FILE ")\n"
               "      --socket=PATH      control socket (overrides [daemon] socket)\n"
               "      --state-dir=DIR    state directory (overrides [daemon] stateDir)\n"
               "      --once             reclaim the given images now and exit\n"
               "      --dry-run          with --once: find and count, change nothing\n"
               "      --discard=MODE     with --once: safe (stale + zero) or free (also guest free space; default)\n"
               "      --force            with --once: also reclaim fixed disks (LeaveBlockAllocated)\n"
               "      --min-hole=SIZE    with --once: smallest range worth punching (default 64K)\n"
               "      --json             with --once: one JSON object per image\n"
               "      --format=FORMAT    with --once and --inspect: auto (default: a VHDX by its signature,\n"
               "                         raw only when named .img or .raw), vhdx, or raw\n"
               "      --compact          with --once: also shrink the VHDX file in place (moves blocks)\n"
               "      --inspect          print an image's layout and exit\n"
               "  -n, --check-config     check the configuration, print it normalised, and exit\n"
               "      --version          print the version\n"
               "\n"
               "Exit status: 0 ok, 1 an image was refused or failed (or the configuration is invalid), 2 usage error.\n");
}

static int parse_args(int argc, char **argv, Args *a) {
        enum { ARG_SOCKET = 0x100, ARG_STATE_DIR, ARG_ONCE, ARG_DRY_RUN, ARG_DISCARD, ARG_FORCE,
               ARG_MIN_HOLE, ARG_JSON, ARG_INSPECT, ARG_VERSION, ARG_COMPACT, ARG_FORMAT };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "once", no_argument, NULL, ARG_ONCE },
                { "dry-run", no_argument, NULL, ARG_DRY_RUN },
                { "discard", required_argument, NULL, ARG_DISCARD },
                { "force", no_argument, NULL, ARG_FORCE },
                { "min-hole", required_argument, NULL, ARG_MIN_HOLE },
                { "json", no_argument, NULL, ARG_JSON },
                { "compact", no_argument, NULL, ARG_COMPACT },
                { "inspect", no_argument, NULL, ARG_INSPECT },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "check-config", no_argument, NULL, 'n' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        int c, d;

        while ((c = getopt_long(argc, argv, "hc:n", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        exit(0);
                case ARG_VERSION:
                        printf("vhdreclaimd %s\n", VHDRECLAIM_VERSION);
                        exit(0);
                case 'c':
                        a->config_file = optarg;
                        break;
                case ARG_SOCKET:
                        a->socket_path = optarg;
                        break;
                case ARG_STATE_DIR:
                        a->state_dir = optarg;
                        break;
                case ARG_ONCE:
                        a->mode = MODE_ONCE;
                        break;
                case ARG_INSPECT:
                        a->mode = MODE_INSPECT;
                        break;
                case 'n':
                        a->mode = MODE_CHECK_CONFIG;
                        break;
                case ARG_DRY_RUN:
                        a->once.pass.dry_run = true;
                        break;
                case ARG_FORCE:
                        a->once.pass.force_fixed = true;
                        break;
                case ARG_JSON:
                        a->once.json = true;
                        break;
                case ARG_COMPACT:
                        a->once.pass.compact = true;
                        break;
                case ARG_DISCARD:
                        d = discard_mode_from_string(optarg);
                        if (d != DISCARD_SAFE && d != DISCARD_FREE)
                                return log_error_errno(EINVAL, "--discard takes safe or free, not \"%s\"", optarg);
                        a->once.pass.discard = (DiscardMode) d;
                        break;
                case ARG_FORMAT:
                        d = disk_format_from_string(optarg);
                        if (d < 0)
                                return log_error_errno(EINVAL, "--format takes auto, vhdx or raw, not \"%s\"", optarg);
                        a->once.pass.format = (DiskFormat) d;
                        break;
                case ARG_MIN_HOLE:
                        if (parse_min_hole(optarg, &a->once.pass.min_hole) < 0)
                                return log_error_errno(EINVAL, "--min-hole takes " MIN_HOLE_EXPECTED
                                                               " (as minHole= in vhdreclaim.conf), not \"%s\"",
                                                       optarg);
                        break;
                default:
                        return -EINVAL;
                }

        if (a->mode == MODE_ONCE && optind >= argc)
                return log_error_errno(EINVAL, "--once needs at least one IMAGE");
        if (a->mode == MODE_INSPECT && argc - optind != 1)
                return log_error_errno(EINVAL, "--inspect takes exactly one IMAGE");
        if ((a->mode == MODE_DAEMON || a->mode == MODE_CHECK_CONFIG) && optind < argc)
                return log_error_errno(EINVAL, "unexpected argument \"%s\"", argv[optind]);
        return 0;
}

int main(int argc, char **argv) {
        Args a = {
                .mode = MODE_DAEMON,
                .config_file = DEFAULT_CONFIG_FILE,
                .once.pass = { .discard = DISCARD_FREE, .min_hole = 64 * 1024 },
        };

        log_setup("vhdreclaimd", LOG_TARGET_AUTO);
        if (parse_args(argc, argv, &a) < 0)
                return 2;

        switch (a.mode) {
        case MODE_ONCE:
                return once_run(&a.once, argv + optind, argc - optind);
        case MODE_INSPECT:
                return once_inspect(argv[optind], a.once.pass.format);
        case MODE_CHECK_CONFIG:
                return config_check_command(a.config_file, stdout, stderr);
        case MODE_DAEMON:
                return manager_main(a.config_file, a.socket_path, a.state_dir);
        }
        return 1;
}
