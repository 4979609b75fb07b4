/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "config.h"
#include "macro.h"

#define CMD(c) (1u << (c))
#define ALL_COMMANDS (~0u)

typedef enum CtlOption {
        OPT_SOCKET,
        OPT_JSON,
        OPT_HELP,
        OPT_ALL,
        OPT_DRY_RUN,
        OPT_DISCARD,
        OPT_WAIT,
} CtlOption;

typedef struct OptionSpec {
        const char *name;       /* long name without "--" */
        char short_name;        /* 0: none */
        bool takes_value;
        unsigned commands;      /* bit mask of the commands it applies to */
} OptionSpec;

static const OptionSpec option_specs[] = {
        [OPT_SOCKET]  = { "socket",  0,   true,  ALL_COMMANDS },
        [OPT_JSON]    = { "json",    0,   false, ALL_COMMANDS },
        [OPT_HELP]    = { "help",    'h', false, ALL_COMMANDS },
        [OPT_ALL]     = { "all",     0,   false, CMD(CTL_COMMAND_RECLAIM) | CMD(CTL_COMMAND_TRIM) },
        [OPT_DRY_RUN] = { "dry-run", 0,   false, CMD(CTL_COMMAND_RECLAIM) },
        [OPT_DISCARD] = { "discard", 0,   true,  CMD(CTL_COMMAND_RECLAIM) },
        [OPT_WAIT]    = { "wait",    0,   false, CMD(CTL_COMMAND_RECLAIM) | CMD(CTL_COMMAND_COMPACT) |
                                                 CMD(CTL_COMMAND_TRIM) },
};

static const char *const command_names[_CTL_COMMAND_MAX] = {
        [CTL_COMMAND_HELP] = "help",
        [CTL_COMMAND_STATUS] = "status",
        [CTL_COMMAND_RECLAIM] = "reclaim",
        [CTL_COMMAND_COMPACT] = "compact",
        [CTL_COMMAND_TRIM] = "trim",
        [CTL_COMMAND_CANCEL] = "cancel",
        [CTL_COMMAND_SET_SPARSE] = "set-sparse",
        [CTL_COMMAND_RELOAD] = "reload",
        [CTL_COMMAND_HISTORY] = "history",
        [CTL_COMMAND_METRICS] = "metrics",
        [CTL_COMMAND_VERSION] = "version",
};

const char *ctl_command_to_string(CtlCommand c) {
        return c >= 0 && c < _CTL_COMMAND_MAX ? command_names[c] : NULL;
}

const char *ctl_discard_to_string(CtlDiscard d) {
        switch (d) {
        case CTL_DISCARD_SAFE:
                return "safe";
        case CTL_DISCARD_FREE:
                return "free";
        default:
                return "";
        }
}

/* What the parser collects before it knows which command the options
 * belong to. */
typedef struct Scan {
        const char *command;
        char **positional;
        size_t n_positional;
        bool seen[ELEMENTSOF(option_specs)];    /* indexed by CtlOption */
} Scan;

static int usage_error(char **error, const char *format, ...) _printf_(2, 3);
static int usage_error(char **error, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(error, format, ap);
        va_end(ap);
        if (r < 0) {
                *error = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

static const OptionSpec *find_long_option(const char *name, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(option_specs); i++)
                if (strlen(option_specs[i].name) == len && strncmp(option_specs[i].name, name, len) == 0)
                        return &option_specs[i];
        return NULL;
}

static const OptionSpec *find_short_option(char c) {
        for (size_t i = 0; i < ELEMENTSOF(option_specs); i++)
                if (option_specs[i].short_name != 0 && option_specs[i].short_name == c)
                        return &option_specs[i];
        return NULL;
}

static int parse_discard(const char *value, CtlDiscard *ret, char **error) {
        if (strcmp(value, "safe") == 0)
                *ret = CTL_DISCARD_SAFE;
        else if (strcmp(value, "free") == 0)
                *ret = CTL_DISCARD_FREE;
        else
                return usage_error(error, "invalid --discard value '%s': expected safe or free", value);
        return 0;
}

static int apply_option(const OptionSpec *o, const char *value, CtlArgs *a, Scan *s, char **error) {
        CtlOption id = (CtlOption) (o - option_specs);

        s->seen[id] = true;

        switch (id) {
        case OPT_SOCKET:
                if (value[0] == '\0')
                        return usage_error(error, "--socket needs a non-empty path");
                a->socket_path = value;
                return 0;
        case OPT_JSON:
                a->json = true;
                return 0;
        case OPT_HELP:
                return 0;
        case OPT_ALL:
                a->all = true;
                return 0;
        case OPT_DRY_RUN:
                a->dry_run = true;
                return 0;
        case OPT_DISCARD:
                return parse_discard(value, &a->discard, error);
        case OPT_WAIT:
                a->wait = true;
                return 0;
        }
        return usage_error(error, "internal error: unhandled option");
}

/* "--name", "--name=value" or "--name value"; advances *i past a separate
 * value. */
static int scan_long_option(int argc, char **argv, int *i, CtlArgs *a, Scan *s, char **error) {
        const char *arg = argv[*i] + 2;
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t) (eq - arg) : strlen(arg);
        const OptionSpec *o = find_long_option(arg, len);
        const char *value = NULL;

        if (!o)
                return usage_error(error, "unknown option '--%.*s'", (int) len, arg);
        if (o->takes_value) {
                if (eq)
                        value = eq + 1;
                else if (*i + 1 < argc)
                        value = argv[++*i];
                else
                        return usage_error(error, "option '--%s' needs a value", o->name);
        } else if (eq)
                return usage_error(error, "option '--%s' takes no value", o->name);

        return apply_option(o, value, a, s, error);
}

/* "-h", and clusters of value-less short options. */
static int scan_short_options(char **argv, int i, CtlArgs *a, Scan *s, char **error) {
        for (const char *p = argv[i] + 1; *p; p++) {
                const OptionSpec *o = find_short_option(*p);
                int r;

                if (!o)
                        return usage_error(error, "unknown option '-%c'", *p);
                r = apply_option(o, NULL, a, s, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int scan_argv(int argc, char **argv, CtlArgs *a, Scan *s, char **error) {
        bool options_done = false;
        int r;

        s->positional = calloc((size_t) MAX(argc, 1), sizeof(char *));
        if (!s->positional)
                return -ENOMEM;

        for (int i = 1; i < argc; i++) {
                const char *arg = argv[i];

                if (!options_done && strcmp(arg, "--") == 0) {
                        options_done = true;
                        continue;
                }
                if (!options_done && arg[0] == '-' && arg[1] == '-')
                        r = scan_long_option(argc, argv, &i, a, s, error);
                else if (!options_done && arg[0] == '-' && arg[1] != '\0')
                        r = scan_short_options(argv, i, a, s, error);
                else {
                        if (!s->command)
                                s->command = arg;
                        else
                                s->positional[s->n_positional++] = argv[i];
                        r = 0;
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static int lookup_command(const char *name, CtlCommand *ret, char **error) {
        for (CtlCommand c = 0; c < _CTL_COMMAND_MAX; c++)
                if (strcmp(command_names[c], name) == 0) {
                        *ret = c;
                        return 0;
                }
        return usage_error(error, "unknown command '%s'", name);
}

static int check_options_apply(const Scan *s, CtlCommand c, char **error) {
        for (size_t i = 0; i < ELEMENTSOF(option_specs); i++)
                if (s->seen[i] && !(option_specs[i].commands & CMD(c)))
                        return usage_error(error, "option '--%s' does not apply to '%s'",
                                           option_specs[i].name, command_names[c]);
        return 0;
}

static int parse_job_id(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        if (v == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int check_no_empty_names(const CtlArgs *a, const char *what, char **error) {
        for (size_t i = 0; i < a->n_names; i++)
                if (a->names[i][0] == '\0')
                        return usage_error(error, "empty %s name", what);
        return 0;
}

/* The positional arguments each command takes. */
static int check_arguments(CtlArgs *a, char **error) {
        switch (a->command) {
        case CTL_COMMAND_HELP:
        case CTL_COMMAND_RELOAD:
        case CTL_COMMAND_METRICS:
        case CTL_COMMAND_VERSION:
                if (a->n_names > 0)
                        return usage_error(error, "'%s' takes no arguments, got '%s'",
                                           command_names[a->command], a->names[0]);
                return 0;
        case CTL_COMMAND_STATUS:
                return check_no_empty_names(a, "disk", error);
        case CTL_COMMAND_RECLAIM:
                if (a->all && a->n_names > 0)
                        return usage_error(error, "reclaim takes disk names or --all, not both");
                if (!a->all && a->n_names == 0)
                        return usage_error(error, "reclaim needs disk names or --all");
                return check_no_empty_names(a, "disk", error);
        case CTL_COMMAND_COMPACT:
                if (a->n_names != 1)
                        return usage_error(error, "compact needs exactly one disk");
                return check_no_empty_names(a, "disk", error);
        case CTL_COMMAND_TRIM:
                if (a->all && a->n_names > 0)
                        return usage_error(error, "trim takes mount points or --all, not both");
                return check_no_empty_names(a, "mount point", error);
        case CTL_COMMAND_CANCEL: {
                int r;

                if (a->n_names != 1)
                        return usage_error(error, "cancel needs exactly one job id");
                r = parse_job_id(a->names[0], &a->job_id);
                if (r < 0)
                        return usage_error(error, "invalid job id '%s': expected a positive number",
                                           a->names[0]);
                return 0;
        }
        case CTL_COMMAND_SET_SPARSE:
                if (a->n_names != 2)
                        return usage_error(error, "set-sparse needs a disk and true or false");
                if (parse_boolean(a->names[1], &a->sparse) < 0)
                        return usage_error(error, "invalid value '%s' for set-sparse: expected true or false",
                                           a->names[1]);
                return check_no_empty_names(a, "disk", error);
        case CTL_COMMAND_HISTORY:
                if (a->n_names > 1)
                        return usage_error(error, "history takes at most one disk");
                return check_no_empty_names(a, "disk", error);
        default:
                return usage_error(error, "internal error: unhandled command");
        }
}

int ctl_parse_args(int argc, char **argv, CtlArgs *ret, char **error) {
        Scan s = {};
        int r;

        *ret = (CtlArgs) {};
        *error = NULL;

        r = scan_argv(argc, argv, ret, &s, error);
        if (r < 0)
                goto finish;
        ret->names = TAKE_PTR(s.positional);
        ret->n_names = s.n_positional;

        if (s.seen[OPT_HELP]) {
                ret->command = CTL_COMMAND_HELP;
                free(ret->names);
                ret->names = NULL;
                ret->n_names = 0;
                r = 0;
                goto finish;
        }
        if (!s.command) {
                r = usage_error(error, "missing command");
                goto finish;
        }
        r = lookup_command(s.command, &ret->command, error);
        if (r < 0)
                goto finish;
        r = check_options_apply(&s, ret->command, error);
        if (r < 0)
                goto finish;
        r = check_arguments(ret, error);
finish:
        free(s.positional);
        return r;
}

void ctl_args_done(CtlArgs *a) {
        free(a->names);
        *a = (CtlArgs) {};
}
