/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <locale.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <unistd.h>

#include "args.h"
#include "build-config.h"
#include "client.h"
#include "commands.h"
#include "log.h"
#include "macro.h"
#include "vhdreclaim-bus.h"

static void print_help(void) {
        printf("vhdreclaimctl [--socket PATH] [--json] COMMAND ...\n"
               "\n"
               "Ask vhdreclaimd what it reclaimed, and tell it what to do.\n"
               "\n"
               "Commands:\n"
               "  status [DISK...]            the managed disks: state, sizes, last result,\n"
               "                              reclaimed in total, next pass\n"
               "  reclaim DISK...|--all [--dry-run] [--discard=safe|free] [--wait]\n"
               "                              start a pass on the disks\n"
               "  compact DISK [--wait]       a pass that also shrinks the VHDX file in place\n"
               "                              (moves blocks down, cuts the file), whatever\n"
               "                              the disk's compact= setting\n"
               "  trim [MOUNT...|--all] [--wait]\n"
               "                              discard free space of mounted file systems\n"
               "                              (no argument: the configured [trim] mounts)\n"
               "  cancel JOB                  stop a job at a safe point\n"
               "  set-sparse DISK true|false  let the daemon reclaim the disk, or stop and\n"
               "                              allocate its holes again\n"
               "  reload                      read the configuration again; print its errors\n"
               "  history [DISK]              the passes run so far\n"
               "  metrics                     per-disk gauges and counters in the Prometheus text\n"
               "                              format (with --json: as status)\n"
               "  version                     the client's and the daemon's version\n"
               "\n"
               "Options:\n"
               "      --socket=PATH   the daemon's control socket (default: $VHDRECLAIM_SOCKET,\n"
               "                      else %s)\n"
               "      --json          JSON for scripts instead of tables and words\n"
               "      --all           reclaim: every managed disk; trim: every file system\n"
               "      --dry-run       reclaim: count what a pass would punch, change nothing\n"
               "      --discard=MODE  reclaim: safe (stale + zero ranges) or free (also guest\n"
               "                      free space), instead of each disk's configured mode\n"
               "      --wait          reclaim, compact, trim: wait for the jobs to end, showing\n"
               "                      progress (compact: and the file size before and after)\n"
               "  -h, --help          show this help\n"
               "\n"
               "Exit status:\n"
               "  %d  success (with --wait: every job ended in success, nothing to do or a skip)\n"
               "  %d  the daemon refused or failed the request (unknown disk, permission denied,\n"
               "     invalid configuration on reload), or a job failed\n"
               "  %d  usage error\n"
               "  %d  vhdreclaimd cannot be reached\n"
               "\n"
               "See vhdreclaimctl(8).\n",
               DEFAULT_SOCKET_PATH, CTL_EXIT_OK, CTL_EXIT_FAILED, CTL_EXIT_USAGE, CTL_EXIT_UNREACHABLE);
}

static int run(int argc, char **argv) {
        _cleanup_free_ char *error = NULL;
        CtlArgs a;
        Ctl c = {};
        int r;

        r = ctl_parse_args(argc, argv, &a, &error);
        if (r < 0) {
                if (error)
                        log_error("%s (see 'vhdreclaimctl --help')", error);
                else
                        log_error_errno(r, "cannot parse the command line: %m");
                ctl_args_done(&a);
                return r == -EINVAL ? CTL_EXIT_USAGE : CTL_EXIT_FAILED;
        }

        if (a.command == CTL_COMMAND_HELP) {
                print_help();
                ctl_args_done(&a);
                return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
        }
        if (a.command == CTL_COMMAND_VERSION && !a.json) {
                /* Printed even when the daemon cannot be reached. */
                printf("vhdreclaimctl %s\n", VHDRECLAIM_VERSION);
                fflush(stdout);
        }

        c.socket_path = ctl_socket_path(a.socket_path);
        c.json = a.json;
        r = ctl_connect(&c);
        if (r == 0)
                r = ctl_run(&c, &a);
        ctl_disconnect(&c);
        ctl_args_done(&a);
        return r;
}

int main(int argc, char **argv) {
        /* status --json at 10,000 images is 3.7 MB of output: one thread
         * writes it, so stdio needs no locks, and into a file or pipe it goes
         * in big writes (a terminal keeps line buffering; the progress lines
         * of --wait are flushed one by one). */
        static char stdout_buffer[256 * 1024];   /* glibc ignores a size without a buffer */

        (void) __fsetlocking(stdout, FSETLOCKING_BYCALLER);
        if (!isatty(STDOUT_FILENO))
                (void) setvbuf(stdout, stdout_buffer, _IOFBF, sizeof(stdout_buffer));
        setlocale(LC_ALL, "");
        log_setup("vhdreclaimctl", LOG_TARGET_STDERR_PLAIN);
        return run(argc, argv);
}
