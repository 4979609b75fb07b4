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
 *      device appears twice;
 *   4  a block size byte, a limit byte, then history.jsonl.1, a NUL byte,
 *      history.jsonl: reading backwards (state_read_history_block) gives
 *      what reading each file forwards line by line gives, for every image
 *      and for "a", with and without the limit;
 *   5  a cap byte, then lines appended one by one through the rotation
 *      (state_append_history_max): neither file ever holds more than the cap
 *      (or one line longer than it), and the newest line that parses is the
 *      one a query with limit 1 returns. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* One directory for the history files, made once, emptied per input,
 * removed at exit. */
static char history_dir_path[] = "/dev/shm/fuzz-state-XXXXXX";
static int history_dir_fd = -1;

static void history_dir_remove(void) {
        (void) unlinkat(history_dir_fd, "history.jsonl", 0);
        (void) unlinkat(history_dir_fd, "history.jsonl.1", 0);
        (void) rmdir(history_dir_path);
}

static int history_dir(void) {
        int fd = history_dir_fd;

        if (fd < 0) {
                if (!mkdtemp(history_dir_path)) {
                        strcpy(history_dir_path, "/tmp/fuzz-state-XXXXXX");
                        check(mkdtemp(history_dir_path));
                }
                fd = history_dir_fd = open(history_dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                check(fd >= 0);
                atexit(history_dir_remove);
        }
        (void) unlinkat(fd, "history.jsonl", 0);
        (void) unlinkat(fd, "history.jsonl.1", 0);
        return fd;
}

static void put_file(int dir, const char *name, const char *data, size_t len) {
        int fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        check(fd >= 0);
        check(write(fd, data, len) == (ssize_t) len);
        close(fd);
}

typedef struct Expected {
        uint64_t start[4096];
        char *name[4096];
        size_t n;
} Expected;

/* The forward reading: every line, in order, that the rules keep. */
static void expect_file(Expected *x, const char *data, size_t len, size_t block, const char *name) {
        size_t max_line = block - 1 < 16 * 1024 ? block - 1 : 16 * 1024;
        char needle[64];
        size_t needle_len = name ? (size_t) snprintf(needle, sizeof needle, "\"name\":\"%s\"", name) : 0;

        for (size_t p = 0; p < len;) {
                const char *eol = memchr(data + p, '\n', len - p);
                size_t l = eol ? (size_t) (eol - (data + p)) : len - p;
                HistoryEntry e;

                if (l > 0 && (l <= max_line || (p == 0 && l <= block && l <= 16 * 1024)) &&
                    (!name || memmem(data + p, l, needle, needle_len)) && history_parse_line(data + p, l, &e) == 0) {
                        if (!name || strcmp(e.name, name) == 0) {
                                check(x->n < 4096);
                                x->start[x->n] = e.start;
                                x->name[x->n] = strdup(e.name);
                                x->n++;
                        }
                        history_entry_done(&e);
                }
                p += l + 1;
        }
}

static void check_read(int dir, const char *old, size_t old_len, const char *cur, size_t cur_len, size_t block,
                       const char *name, unsigned limit) {
        Expected *x = calloc(1, sizeof *x);
        HistoryEntry *e = NULL;
        size_t n = 0, skip;

        check(x);
        expect_file(x, old, old_len, block, name);
        expect_file(x, cur, cur_len, block, name);
        check(state_read_history_block(dir, name, limit, block, &e, &n) == 0);
        skip = limit > 0 && x->n > limit ? x->n - limit : 0;
        check(n == x->n - skip);
        for (size_t i = 0; i < n; i++)
                check(e[i].start == x->start[skip + i] && strcmp(e[i].name, x->name[skip + i]) == 0);
        history_entries_free(e, n);
        for (size_t i = 0; i < x->n; i++)
                free(x->name[i]);
        free(x);
}

static void fuzz_history_read(const uint8_t *data, size_t size) {
        const char *old, *cur, *nul;
        size_t block, old_len, cur_len;
        unsigned limit;
        int dir;

        if (size < 2)
                return;
        block = 2 + data[0];
        limit = data[1] % 8;
        old = (const char *) data + 2;
        nul = memchr(old, 0, size - 2);
        old_len = nul ? (size_t) (nul - old) : size - 2;
        cur = nul ? nul + 1 : old + old_len;
        cur_len = size - 2 - old_len - (nul ? 1 : 0);
        dir = history_dir();
        if (nul)
                put_file(dir, "history.jsonl.1", old, old_len);
        put_file(dir, "history.jsonl", cur, cur_len);
        check_read(dir, nul ? old : "", nul ? old_len : 0, cur, cur_len, block, NULL, 0);
        check_read(dir, nul ? old : "", nul ? old_len : 0, cur, cur_len, block, NULL, limit);
        check_read(dir, nul ? old : "", nul ? old_len : 0, cur, cur_len, block, "a", limit);
}

static off_t size_of(int dir, const char *name) {
        struct stat st;

        return fstatat(dir, name, &st, 0) < 0 ? 0 : st.st_size;
}

static char *slurp(int dir, const char *name, size_t *ret_len) {
        off_t size = size_of(dir, name);
        char *buf = malloc((size_t) size + 1);
        int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);

        check(buf);
        *ret_len = 0;
        if (fd >= 0) {
                check(read(fd, buf, (size_t) size) == (ssize_t) size);
                *ret_len = (size_t) size;
                close(fd);
        }
        return buf;
}

static void fuzz_history_rotate(const uint8_t *data, size_t size) {
        uint64_t cap, longest = 0;
        char *text, *save = NULL, *old, *cur;
        HistoryEntry *e = NULL;
        Expected *x;
        size_t n = 0, old_len, cur_len;
        int dir;

        if (size < 1)
                return;
        cap = 16 + (uint64_t) data[0] * 4;
        text = strndup((const char *) data + 1, size - 1);
        check(text);
        dir = history_dir();
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char *line;
                uint64_t len = strlen(l) + 1;

                check(asprintf(&line, "%s\n", l) > 0);
                check(state_append_history_max(dir, line, cap) == 0);
                free(line);
                /* Each file: within the cap, or one line alone. */
                check((uint64_t) size_of(dir, "history.jsonl") <= (cap > len ? cap : len));
                longest = len > longest ? len : longest;
                check((uint64_t) size_of(dir, "history.jsonl.1") <= (cap > longest ? cap : longest));
        }
        free(text);

        /* The newest line that parses, of what the two files still hold. */
        x = calloc(1, sizeof *x);
        check(x);
        old = slurp(dir, "history.jsonl.1", &old_len);
        cur = slurp(dir, "history.jsonl", &cur_len);
        expect_file(x, old, old_len, 64 * 1024, NULL);
        expect_file(x, cur, cur_len, 64 * 1024, NULL);
        check(state_read_history(dir, NULL, 1, &e, &n) == 0);
        check(n == (x->n > 0 ? 1u : 0u));
        if (n > 0)
                check(strcmp(e[0].name, x->name[x->n - 1]) == 0 && e[0].start == x->start[x->n - 1]);
        history_entries_free(e, n);
        for (size_t i = 0; i < x->n; i++)
                free(x->name[i]);
        free(x);
        free(old);
        free(cur);
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
        switch (data[0] % 6) {
        case 0:
                fuzz_record(text);
                break;
        case 1:
                fuzz_history(data + 1, size - 1);
                break;
        case 2:
                fuzz_trim_status(text);
                break;
        case 4:
                fuzz_history_read(data + 1, size - 1);
                break;
        case 5:
                fuzz_history_rotate(data + 1, size - 1);
                break;
        default:
                fuzz_mounts(text, size - 1);
        }
        free(text);
        return 0;
}
