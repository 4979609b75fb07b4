/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* vhdreclaimctl's command line. Options may come before or after the
 * command (as with systemctl); "--" ends them. The parser keeps no state
 * outside its arguments (no getopt), so it can be fuzzed. */

#include <stdbool.h>
#include <stdint.h>

typedef enum CtlCommand {
        CTL_COMMAND_HELP,
        CTL_COMMAND_STATUS,
        CTL_COMMAND_RECLAIM,
        CTL_COMMAND_COMPACT,
        CTL_COMMAND_TRIM,
        CTL_COMMAND_CANCEL,
        CTL_COMMAND_SET_SPARSE,
        CTL_COMMAND_RELOAD,
        CTL_COMMAND_HISTORY,
        CTL_COMMAND_METRICS,
        CTL_COMMAND_VERSION,
        _CTL_COMMAND_MAX,
} CtlCommand;

typedef enum CtlDiscard {
        CTL_DISCARD_DEFAULT,    /* each disk's configured mode */
        CTL_DISCARD_SAFE,
        CTL_DISCARD_FREE,
} CtlDiscard;

typedef struct CtlArgs {
        CtlCommand command;
        const char *socket_path;        /* NULL: $VHDRECLAIM_SOCKET or the default */
        bool json;
        bool all;
        bool dry_run;
        bool wait;
        CtlDiscard discard;
        /* status, reclaim, compact, trim, history: disks or mounts; NULL-terminated,
         * the strings point into argv. */
        char **names;
        size_t n_names;
        uint64_t job_id;                /* cancel */
        bool sparse;                    /* set-sparse (names[0] is the disk) */
} CtlArgs;

/* Parses argv (argv[0] is the program). Returns 0 and fills *ret, or a
 * negative errno: -EINVAL with a one-line message in *error (to free) for a
 * usage error, -ENOMEM. Release *ret with ctl_args_done() either way. */
int ctl_parse_args(int argc, char **argv, CtlArgs *ret, char **error);
void ctl_args_done(CtlArgs *a);

const char *ctl_command_to_string(CtlCommand c);
/* "safe", "free", or "" for the configured default, as Reclaim() takes it. */
const char *ctl_discard_to_string(CtlDiscard d);
