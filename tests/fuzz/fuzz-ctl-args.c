/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: vhdreclaimctl's argument parser.
 *
 * The input is the argument list, NUL-separated (argv[0] is supplied).
 * Invariants: a usage error comes with a message; a success names a known
 * command whose arguments fit it (reclaim: disks or --all; cancel: a job id
 * of at least 1; set-sparse: a disk and a boolean), and every name and the
 * socket path point into argv; the parser keeps no state, so a second parse
 * of the same argv gives the same answer. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "macro.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

static bool points_into_argv(const char *p, int argc, char **argv) {
        for (int i = 0; i < argc; i++)
                if (p >= argv[i] && p <= argv[i] + strlen(argv[i]))
                        return true;
        return false;
}

static void check_success(const CtlArgs *a, int argc, char **argv) {
        check(ctl_command_to_string(a->command) != NULL);
        check(a->n_names == 0 || a->names);
        if (a->names)
                check(a->names[a->n_names] == NULL);
        for (size_t i = 0; i < a->n_names; i++)
                check(points_into_argv(a->names[i], argc, argv));
        if (a->socket_path)
                check(a->socket_path[0] != 0 && points_into_argv(a->socket_path, argc, argv));

        switch (a->command) {
        case CTL_COMMAND_RECLAIM:
                check(a->all != (a->n_names > 0));
                break;
        case CTL_COMMAND_CANCEL:
                check(a->n_names == 1 && a->job_id >= 1);
                break;
        case CTL_COMMAND_SET_SPARSE:
                check(a->n_names == 2 && a->names[0][0] != 0);
                break;
        case CTL_COMMAND_HISTORY:
                check(a->n_names <= 1);
                break;
        case CTL_COMMAND_HELP:
        case CTL_COMMAND_RELOAD:
        case CTL_COMMAND_METRICS:
        case CTL_COMMAND_VERSION:
                check(a->n_names == 0);
                break;
        default:
                break;
        }
}

static bool same_args(const CtlArgs *a, const CtlArgs *b) {
        if (a->command != b->command || a->socket_path != b->socket_path || a->json != b->json ||
            a->all != b->all || a->dry_run != b->dry_run || a->wait != b->wait ||
            a->discard != b->discard || a->n_names != b->n_names || a->job_id != b->job_id ||
            a->sparse != b->sparse)
                return false;
        for (size_t i = 0; i < a->n_names; i++)
                if (a->names[i] != b->names[i])
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *buf, *argv[MAX_ARGS + 2], *error = NULL, *error2 = NULL;
        CtlArgs a, b;
        int argc = 0, r, r2;

        /* A terminating NUL, so that the last argument is a string too. */
        buf = malloc(size + 1);
        check(buf);
        memcpy(buf, data, size);
        buf[size] = 0;

        argv[argc++] = (char *) "vhdreclaimctl";
        for (char *p = buf; p < buf + size && argc <= MAX_ARGS; p += strlen(p) + 1)
                argv[argc++] = p;
        argv[argc] = NULL;

        r = ctl_parse_args(argc, argv, &a, &error);
        if (r == -EINVAL)
                check(error && error[0]);
        else if (r >= 0) {
                check(!error);
                check_success(&a, argc, argv);
        } else
                check(r == -ENOMEM);

        r2 = ctl_parse_args(argc, argv, &b, &error2);
        check(r == r2);
        check((error == NULL) == (error2 == NULL));
        if (error)
                check(strcmp(error, error2) == 0);
        if (r >= 0)
                check(same_args(&a, &b));

        ctl_args_done(&a);
        ctl_args_done(&b);
        free(error);
        free(error2);
        free(buf);
        return 0;
}
