/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the daemon's readers of untrusted text. The first byte
 * picks the reader, the rest is the input:
 *
 *   0  a per-image state file (disk_record_parse): when accepted, writing the
 *      record and reading it back gives the same record;
 *   1  a history line (history_parse_line): when accepted, the entry has a
 *      name and a known result;
 *   2  trim.state (trim_status_parse): when accepted, formatting and parsing
 *      again gives the same statuses;
 *   3  fstab, a NUL byte, mountinfo (trim_select_all), and the listed-mounts
 *      resolution of a few paths: every selected path is absolute and no
 *      device appears twice. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "trim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

static bool str_eq(const char *a, const char *b) {
        return strcmp(a ? a : "", b ? b : "") == 0;
}

static void fuzz_record(const char *text) {
        DiskRecord r, again;
        char *out = NULL;

        if (disk_record_parse(text, &r) < 0)
                return;
        check(disk_record_format(&r, "fuzz", "/fuzz", &out) == 0);
        check(disk_record_parse(out, &again) == 0);
        check(again.last_pass == r.last_pass && again.last_result == r.last_result);
        check(again.reclaimed_last == r.reclaimed_last && again.reclaimed_total == r.reclaimed_total);
        check(again.resume_offset == r.resume_offset && again.reclaimable == r.reclaimable);
        check(again.virtual_size == r.virtual_size && again.format == r.format && again.passes == r.passes);
        check(again.sparse_override == r.sparse_override && str_eq(again.last_message, r.last_message));
        free(out);
        disk_record_done(&again);
        disk_record_done(&r);
}

static void fuzz_history(const uint8_t *data, size_t size) {
        HistoryEntry e;

        if (history_parse_line((const char *) data, size, &e) < 0)
                return;
        check(e.name && e.result && e.path && e.message && e.discard);
        check(pass_result_from_string(e.result) != (PassResult) -1);
        history_entry_done(&e);
}

static void fuzz_trim_status(const char *text) {
        TrimStatus *t = NULL, *again = NULL;
        size_t n = 0, n2 = 0;
        char *out = NULL;

        if (trim_status_parse(text, &t, &n) < 0)
                return;
        check(trim_status_format(t, n, &out) == 0);
        check(trim_status_parse(out, &again, &n2) == 0);
        check(n2 == n);
        for (size_t i = 0; i < n; i++) {
                check(str_eq(t[i].mount, again[i].mount) && str_eq(t[i].last_result, again[i].last_result));
                check(t[i].last == again[i].last && t[i].trimmed_total == again[i].trimmed_total);
        }
        free(out);
        trim_status_free(t, n);
        trim_status_free(again, n2);
}

static void check_mounts(TrimMount *m, size_t n) {
        for (size_t i = 0; i < n; i++) {
                check(m[i].path && m[i].path[0] == '/');
                for (size_t k = 0; k < i; k++)
                        check(m[k].major != m[i].major || m[k].minor != m[i].minor);
        }
        trim_mounts_free(m, n);
}

static void fuzz_mounts(const char *text, size_t size) {
        char *paths[] = { (char *) "/", (char *) "/home", (char *) "/mnt/a b", (char *) "/srv/x/y" };
        size_t fstab_len = strlen(text);
        const char *mountinfo = fstab_len < size ? text + fstab_len + 1 : "";
        char *why = NULL;
        TrimMount *m = NULL;
        size_t n = 0;

        if (trim_select_all(text, mountinfo, &m, &n) == 0)
                check_mounts(m, n);
        if (trim_select_all(NULL, mountinfo, &m, &n) == 0)
                check_mounts(m, n);
        m = NULL;
        n = 0;
        if (trim_select_listed(paths, 4, mountinfo, &m, &n, &why) == 0)
                check_mounts(m, n);
        else
                check(m == NULL || n == 0);
        free(why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text;

        if (size < 1)
                return 0;
        /* The text readers take NUL-terminated text; keep inner NULs for the mount split. */
        text = malloc(size);
        check(text);
        memcpy(text, data + 1, size - 1);
        text[size - 1] = 0;
        switch (data[0] % 4) {
        case 0:
                fuzz_record(text);
                break;
        case 1:
                fuzz_history(data + 1, size - 1);
                break;
        case 2:
                fuzz_trim_status(text);
                break;
        default:
                fuzz_mounts(text, size - 1);
        }
        free(text);
        return 0;
}
