/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "args.h"
#include "macro.h"

/* Parses a NULL-terminated argument list (argv[0] is supplied). Returns the
 * parser's result; *error is kept for the caller to check and free. */
static int parse_list(CtlArgs *a, char **error, const char *const *list) {
        char *argv[32] = { (char *) "vhdreclaimctl" };
        int argc = 1;

        for (; list[argc - 1]; argc++) {
                assert_true(argc < (int) ELEMENTSOF(argv));
                argv[argc] = (char *) list[argc - 1];
        }
        return ctl_parse_args(argc, argv, a, error);
}

#define PARSE(a, error, ...) parse_list(a, error, (const char *const[]) { __VA_ARGS__, NULL })

static CtlArgs parse_ok(const char *const *list) {
        char *error = NULL;
        CtlArgs a;

        assert_int_equal(parse_list(&a, &error, list), 0);
        assert_null(error);
        return a;
}

#define OK(...) parse_ok((const char *const[]) { __VA_ARGS__, NULL })

/* A usage error: -EINVAL and a message that contains what. */
static void expect_usage_error(const char *what, const char *const *list) {
        char *error = NULL;
        CtlArgs a;

        assert_int_equal(parse_list(&a, &error, list), -EINVAL);
        assert_non_null(error);
        if (!strstr(error, what))
                fail_msg("error \"%s\" does not mention \"%s\"", error, what);
        assert_null(strchr(error, '\n'));
        free(error);
        ctl_args_done(&a);
}

#define BAD(what, ...) expect_usage_error(what, (const char *const[]) { __VA_ARGS__, NULL })

static void test_status(void **state) {
        CtlArgs a = OK("status");

        assert_int_equal(a.command, CTL_COMMAND_STATUS);
        assert_int_equal(a.n_names, 0);
        assert_null(a.socket_path);
        assert_false(a.json);
        ctl_args_done(&a);

        a = OK("--json", "status", "ubuntu", "debian");
        assert_true(a.json);
        assert_int_equal(a.n_names, 2);
        assert_string_equal(a.names[0], "ubuntu");
        assert_string_equal(a.names[1], "debian");
        assert_null(a.names[2]);
        ctl_args_done(&a);

        /* options after the command, as systemctl takes them */
        a = OK("status", "ubuntu", "--json", "--socket", "/tmp/s");
        assert_true(a.json);
        assert_string_equal(a.socket_path, "/tmp/s");
        assert_int_equal(a.n_names, 1);
        ctl_args_done(&a);

        a = OK("--socket=/run/x.sock", "status");
        assert_string_equal(a.socket_path, "/run/x.sock");
        ctl_args_done(&a);

        /* "--" ends the options: a disk may be called "--all" */
        a = OK("status", "--", "--all", "-h");
        assert_int_equal(a.n_names, 2);
        assert_string_equal(a.names[0], "--all");
        assert_string_equal(a.names[1], "-h");
        ctl_args_done(&a);

        BAD("empty disk name", "status", "");
        BAD("does not apply to 'status'", "status", "--all");
        BAD("does not apply to 'status'", "status", "--wait");
}

static void test_reclaim(void **state) {
        CtlArgs a = OK("reclaim", "ubuntu");

        assert_int_equal(a.command, CTL_COMMAND_RECLAIM);
        assert_int_equal(a.n_names, 1);
        assert_false(a.all);
        assert_false(a.dry_run);
        assert_false(a.wait);
        assert_int_equal(a.discard, CTL_DISCARD_DEFAULT);
        assert_string_equal(ctl_discard_to_string(a.discard), "");
        ctl_args_done(&a);

        a = OK("reclaim", "--all", "--dry-run", "--discard=safe", "--wait");
        assert_true(a.all);
        assert_true(a.dry_run);
        assert_true(a.wait);
        assert_int_equal(a.discard, CTL_DISCARD_SAFE);
        assert_string_equal(ctl_discard_to_string(a.discard), "safe");
        assert_int_equal(a.n_names, 0);
        ctl_args_done(&a);

        a = OK("reclaim", "--discard", "free", "a", "b");
        assert_int_equal(a.discard, CTL_DISCARD_FREE);
        assert_string_equal(ctl_discard_to_string(a.discard), "free");
        assert_int_equal(a.n_names, 2);
        ctl_args_done(&a);

        BAD("disk names or --all", "reclaim");
        BAD("not both", "reclaim", "ubuntu", "--all");
        BAD("invalid --discard value 'none'", "reclaim", "--all", "--discard=none");
        BAD("invalid --discard value ''", "reclaim", "--all", "--discard=");
        BAD("'--discard' needs a value", "reclaim", "--all", "--discard");
        BAD("'--dry-run' takes no value", "reclaim", "--all", "--dry-run=yes");
        BAD("empty disk name", "reclaim", "");
}

static void test_trim(void **state) {
        CtlArgs a = OK("trim");

        assert_int_equal(a.command, CTL_COMMAND_TRIM);
        assert_int_equal(a.n_names, 0);
        assert_false(a.all);
        ctl_args_done(&a);

        a = OK("trim", "/", "/home", "--wait");
        assert_int_equal(a.n_names, 2);
        assert_true(a.wait);
        ctl_args_done(&a);

        a = OK("trim", "--all");
        assert_true(a.all);
        ctl_args_done(&a);

        BAD("not both", "trim", "/", "--all");
        BAD("'--dry-run' does not apply to 'trim'", "trim", "--dry-run");
        BAD("'--discard' does not apply to 'trim'", "trim", "--discard=safe");
        BAD("empty mount point name", "trim", "");
}

static void test_compact(void **state) {
        CtlArgs a = OK("compact", "ubuntu");

        assert_int_equal(a.command, CTL_COMMAND_COMPACT);
        assert_int_equal(a.n_names, 1);
        assert_string_equal(a.names[0], "ubuntu");
        assert_false(a.wait);
        ctl_args_done(&a);

        a = OK("--wait", "compact", "--json", "ubuntu");
        assert_true(a.wait);
        assert_true(a.json);
        assert_string_equal(a.names[0], "ubuntu");
        ctl_args_done(&a);

        BAD("compact needs exactly one disk", "compact");
        BAD("compact needs exactly one disk", "compact", "a", "b");
        BAD("'--all' does not apply to 'compact'", "compact", "--all");
        BAD("'--dry-run' does not apply to 'compact'", "compact", "a", "--dry-run");
        BAD("'--discard' does not apply to 'compact'", "compact", "a", "--discard=free");
        BAD("empty disk name", "compact", "");
}

static void test_cancel(void **state) {
        CtlArgs a = OK("cancel", "42");

        assert_int_equal(a.command, CTL_COMMAND_CANCEL);
        assert_int_equal(a.job_id, 42);
        ctl_args_done(&a);

        a = OK("cancel", "18446744073709551615");
        assert_true(a.job_id == UINT64_MAX);
        ctl_args_done(&a);

        BAD("exactly one job id", "cancel");
        BAD("exactly one job id", "cancel", "1", "2");
        BAD("invalid job id '0'", "cancel", "0");
        BAD("invalid job id 'x'", "cancel", "x");
        BAD("invalid job id '+1'", "cancel", "+1");
        BAD("invalid job id ' 1'", "cancel", " 1");
        BAD("invalid job id '1x'", "cancel", "1x");
        BAD("invalid job id ''", "cancel", "");
        BAD("invalid job id '18446744073709551616'", "cancel", "18446744073709551616");
        BAD("'--wait' does not apply to 'cancel'", "cancel", "1", "--wait");
}

static void test_set_sparse(void **state) {
        CtlArgs a = OK("set-sparse", "ubuntu", "false");

        assert_int_equal(a.command, CTL_COMMAND_SET_SPARSE);
        assert_string_equal(a.names[0], "ubuntu");
        assert_false(a.sparse);
        ctl_args_done(&a);

        a = OK("set-sparse", "ubuntu", "true");
        assert_true(a.sparse);
        ctl_args_done(&a);

        a = OK("set-sparse", "ubuntu", "1");
        assert_true(a.sparse);
        ctl_args_done(&a);

        BAD("needs a disk and true or false", "set-sparse");
        BAD("needs a disk and true or false", "set-sparse", "ubuntu");
        BAD("needs a disk and true or false", "set-sparse", "ubuntu", "true", "x");
        BAD("invalid value 'maybe'", "set-sparse", "ubuntu", "maybe");
        BAD("empty disk name", "set-sparse", "", "true");
}

static void test_simple_commands(void **state) {
        static const struct {
                const char *name;
                CtlCommand command;
        } commands[] = {
                { "reload", CTL_COMMAND_RELOAD },
                { "metrics", CTL_COMMAND_METRICS },
                { "version", CTL_COMMAND_VERSION },
                { "help", CTL_COMMAND_HELP },
        };

        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                CtlArgs a = OK(commands[i].name);

                assert_int_equal(a.command, commands[i].command);
                assert_string_equal(ctl_command_to_string(a.command), commands[i].name);
                ctl_args_done(&a);

                a = OK("--json", commands[i].name);
                assert_true(a.json);
                ctl_args_done(&a);

                BAD("takes no arguments, got 'x'", commands[i].name, "x");
                BAD("does not apply", commands[i].name, "--all");
        }
}

static void test_history(void **state) {
        CtlArgs a = OK("history");

        assert_int_equal(a.command, CTL_COMMAND_HISTORY);
        assert_int_equal(a.n_names, 0);
        ctl_args_done(&a);

        a = OK("history", "ubuntu", "--json");
        assert_int_equal(a.n_names, 1);
        assert_true(a.json);
        ctl_args_done(&a);

        BAD("at most one disk", "history", "a", "b");
        BAD("empty disk name", "history", "");
}

static void test_help(void **state) {
        /* --help wins over what else is wrong with the command line */
        CtlArgs a = OK("--help");

        assert_int_equal(a.command, CTL_COMMAND_HELP);
        ctl_args_done(&a);

        a = OK("reclaim", "-h");
        assert_int_equal(a.command, CTL_COMMAND_HELP);
        assert_int_equal(a.n_names, 0);
        ctl_args_done(&a);

        a = OK("nonsense", "x", "--help");
        assert_int_equal(a.command, CTL_COMMAND_HELP);
        ctl_args_done(&a);
}

static void test_global_errors(void **state) {
        expect_usage_error("missing command", (const char *const[]) { NULL });
        BAD("missing command", "--json");
        BAD("unknown command 'stat'", "stat");
        BAD("unknown option '--frobnicate'", "status", "--frobnicate");
        BAD("unknown option '--jso'", "--jso", "status");   /* no abbreviations */
        BAD("unknown option '-x'", "-x", "status");
        BAD("unknown option '-x'", "-hx", "status");
        BAD("'--socket' needs a value", "status", "--socket");
        BAD("non-empty path", "--socket=", "status");
        BAD("'--json' takes no value", "--json=1", "status");
}

static void test_last_socket_wins(void **state) {
        CtlArgs a = OK("--socket=/a", "status", "--socket", "/b");

        assert_string_equal(a.socket_path, "/b");
        ctl_args_done(&a);
}

static void test_single_dash_is_a_name(void **state) {
        CtlArgs a = OK("status", "-");

        assert_int_equal(a.n_names, 1);
        assert_string_equal(a.names[0], "-");
        ctl_args_done(&a);
}

static void test_command_names(void **state) {
        assert_string_equal(ctl_command_to_string(CTL_COMMAND_SET_SPARSE), "set-sparse");
        assert_string_equal(ctl_command_to_string(CTL_COMMAND_COMPACT), "compact");
        assert_null(ctl_command_to_string(_CTL_COMMAND_MAX));
        assert_null(ctl_command_to_string((CtlCommand) -1));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_status),
                cmocka_unit_test(test_reclaim),
                cmocka_unit_test(test_trim),
                cmocka_unit_test(test_compact),
                cmocka_unit_test(test_cancel),
                cmocka_unit_test(test_set_sparse),
                cmocka_unit_test(test_simple_commands),
                cmocka_unit_test(test_history),
                cmocka_unit_test(test_help),
                cmocka_unit_test(test_global_errors),
                cmocka_unit_test(test_last_socket_wins),
                cmocka_unit_test(test_single_dash_is_a_name),
                cmocka_unit_test(test_command_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
