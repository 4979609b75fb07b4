/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "json.h"
#include "log.h"
#include "state.h"

#define streq(a, b) (strcmp((a), (b)) == 0)

#define STATE_VERSION "1"
#define HISTORY_FILE "history.jsonl"
#define HISTORY_OLD_FILE "history.jsonl.1"
#define TRIM_FILE "trim.state"
#define DISKS_DIR "disks"
#define HISTORY_LINE_MAX (16u * 1024u)
/* A history query reads in blocks this large: several lines, and more than
 * the longest line (see state_read_history_block()). */
#define HISTORY_BLOCK (64u * 1024u)

void disk_record_init(DiskRecord *r) {
        *r = (DiskRecord) { .last_result = -1, .format = -1, .sparse_override = -1 };
}

void disk_record_done(DiskRecord *r) {
        free(r->last_message);
        disk_record_init(r);
}

static bool name_char_plain(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int state_escape_name(const char *name, char **ret) {
        size_t n = strlen(name);
        char *s, *p;

        if (n == 0 || n > 200)
                return -EINVAL;
        s = p = malloc(n * 3 + 1);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) name[i];

                /* A dot is plain only inside the name: no ".", "..", or hidden files. */
                if (name_char_plain((char) c) || (c == '.' && i > 0 && i + 1 < n))
                        *p++ = (char) c;
                else
                        p += sprintf(p, "%%%02X", c);
        }
        *p = 0;
        *ret = s;
        return 0;
}

/* ---- key=value values: \\, \n and \xHH escapes, so a value is one line ---- */

static int escape_value(FILE *f, const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                if (c == '\\')
                        fputs("\\\\", f);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02x", c);
                else
                        fputc(c, f);
        }
        return 0;
}

static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static int unescape_value(const char *s, size_t len, char **ret) {
        char *out = malloc(len + 1), *p = out;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (s[i] != '\\') {
                        if ((unsigned char) s[i] < 0x20) {
                                free(out);
                                return -EBADMSG;
                        }
                        *p++ = s[i];
                        continue;
                }
                if (i + 1 >= len)
                        goto bad;
                i++;
                if (s[i] == '\\')
                        *p++ = '\\';
                else if (s[i] == 'n')
                        *p++ = '\n';
                else if (s[i] == 'x' && i + 2 < len && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
                        char c = (char) (hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));

                        if (c == 0)
                                goto bad;
                        *p++ = c;
                        i += 2;
                } else
                        goto bad;
        }
        *p = 0;
        *ret = out;
        return 0;
bad:
        free(out);
        return -EBADMSG;
}

/* Calls fn for every "key=value" line; blank lines and # comments skipped.
 * A line without '=' makes the whole text malformed. */
typedef int (*kv_fn)(const char *key, size_t key_len, const char *value, size_t value_len, void *userdata);

static int parse_kv_lines(const char *text, kv_fn fn, void *userdata) {
        const char *p = text;

        while (*p) {
                const char *eol = strchrnul(p, '\n'), *eq;
                int r;

                if (eol == p || *p == '#') {
                        p = *eol ? eol + 1 : eol;
                        continue;
                }
                eq = memchr(p, '=', (size_t) (eol - p));
                if (!eq || eq == p)
                        return -EBADMSG;
                r = fn(p, (size_t) (eq - p), eq + 1, (size_t) (eol - eq - 1), userdata);
                if (r < 0)
                        return r;
                p = *eol ? eol + 1 : eol;
        }
        return 0;
}

static bool key_is(const char *key, size_t len, const char *want) {
        return strlen(want) == len && memcmp(key, want, len) == 0;
}

/* ---- the state directory's lock ---- */

static pid_t read_lock_holder(int fd) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        unsigned long v;
        char *end;

        if (n <= 0)
                return 0;
        buf[n] = 0;
        errno = 0;
        v = strtoul(buf, &end, 10);
        if (errno != 0 || end == buf || (*end != '\n' && *end != 0) || v == 0 || v > INT32_MAX)
                return 0;
        return (pid_t) v;
}

int state_lock_dir(int dir_fd, int *ret_fd, pid_t *ret_holder) {
        _cleanup_close_ int fd = -1;
        char buf[32];
        int n;

        *ret_holder = 0;
        fd = openat(dir_fd, STATE_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return -errno;
                *ret_holder = read_lock_holder(fd);
                return -EBUSY;
        }
        /* The PID is for the message of the daemon that finds it taken;
         * the lock itself is the flock, gone with the process. */
        n = snprintf(buf, sizeof buf, "%d\n", (int) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t) n, 0) != n)
                return -errno ? -errno : -EIO;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* ---- disk records ---- */

int disk_record_format(const DiskRecord *r, const char *name, const char *path, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fputs("# vhdreclaimd per-image state; rewritten after every pass\nversion=" STATE_VERSION "\nname=", f);
        escape_value(f, name);
        fputs("\npath=", f);
        escape_value(f, path);
        fprintf(f, "\nlast_pass=%" PRIu64 "\n", r->last_pass);
        fprintf(f, "last_result=%s\n", r->last_result >= 0 ? pass_result_to_string((PassResult) r->last_result) : "");
        fprintf(f, "last_dry_run=%s\n", r->last_dry_run ? "true" : "false");
        fputs("last_message=", f);
        escape_value(f, r->last_message ? r->last_message : "");
        fprintf(f, "\nreclaimed_last=%" PRIu64 "\nreclaimed_total=%" PRIu64 "\nresume_offset=%" PRIu64
                "\nreclaimable=%" PRIu64 "\nvirtual_size=%" PRIu64 "\nformat=%s\npasses=%" PRIu32 "\nsparse=%s\n",
                r->reclaimed_last, r->reclaimed_total, r->resume_offset, r->reclaimable, r->virtual_size,
                r->format >= 0 ? image_format_to_string((ImageFormat) r->format) : "",
                r->passes, r->sparse_override < 0 ? "" : r->sparse_override ? "true" : "false");
        if (r->have_fingerprint) {
                char fp[FINGERPRINT_TEXT_MAX];

                if (fingerprint_format(&r->fingerprint, fp) >= 0)
                        fprintf(f, "fingerprint=%s\n", fp);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

typedef struct RecordParse {
        DiskRecord *r;
        bool have_version;
} RecordParse;

static int record_kv(const char *key, size_t klen, const char *value, size_t vlen, void *userdata) {
        RecordParse *p = userdata;
        DiskRecord *r = p->r;
        uint64_t v;
        int res;

        static const struct {
                const char *key;
                size_t offset;
        } numbers[] = {
                { "last_pass", offsetof(DiskRecord, last_pass) },
                { "reclaimed_last", offsetof(DiskRecord, reclaimed_last) },
                { "reclaimed_total", offsetof(DiskRecord, reclaimed_total) },
                { "resume_offset", offsetof(DiskRecord, resume_offset) },
                { "reclaimable", offsetof(DiskRecord, reclaimable) },
                { "virtual_size", offsetof(DiskRecord, virtual_size) },
        };

        for (size_t i = 0; i < ELEMENTSOF(numbers); i++)
                if (key_is(key, klen, numbers[i].key)) {
                        if (json_parse_u64(value, vlen, &v) < 0)
                                return -EBADMSG;
                        memcpy((char *) r + numbers[i].offset, &v, sizeof v);
                        return 0;
                }

        if (key_is(key, klen, "version")) {
                if (vlen != strlen(STATE_VERSION) || memcmp(value, STATE_VERSION, vlen) != 0)
                        return -EBADMSG;
                p->have_version = true;
        } else if (key_is(key, klen, "passes")) {
                if (json_parse_u64(value, vlen, &v) < 0 || v > UINT32_MAX)
                        return -EBADMSG;
                r->passes = (uint32_t) v;
        } else if (key_is(key, klen, "last_result")) {
                _cleanup_free_ char *s = strndup(value, vlen);

                if (!s)
                        return -ENOMEM;
                if (vlen == 0)
                        r->last_result = -1;
                else if ((r->last_result = (int) pass_result_from_string(s)) < 0)
                        return -EBADMSG;
        } else if (key_is(key, klen, "last_dry_run")) {
                /* Absent in files from before it was added: false. */
                if (vlen == 4 && memcmp(value, "true", 4) == 0)
                        r->last_dry_run = true;
                else if (vlen == 5 && memcmp(value, "false", 5) == 0)
                        r->last_dry_run = false;
                else
                        return -EBADMSG;
        } else if (key_is(key, klen, "last_message")) {
                if (vlen > STATE_MESSAGE_MAX)
                        return -EBADMSG;
                free(r->last_message);
                r->last_message = NULL;
                res = unescape_value(value, vlen, &r->last_message);
                if (res < 0)
                        return res;
        } else if (key_is(key, klen, "format")) {
                if (vlen == 0)
                        r->format = -1;
                else if (vlen == 4 && memcmp(value, "vhdx", 4) == 0)
                        r->format = IMAGE_FORMAT_VHDX;
                else if (vlen == 3 && memcmp(value, "raw", 3) == 0)
                        r->format = IMAGE_FORMAT_RAW;
                else
                        return -EBADMSG;
        } else if (key_is(key, klen, "fingerprint")) {
                /* Another version's, or damaged: only means "changed". */
                r->have_fingerprint = fingerprint_parse(value, vlen, &r->fingerprint) >= 0;
        } else if (key_is(key, klen, "sparse")) {
                if (vlen == 0)
                        r->sparse_override = -1;
                else if (vlen == 4 && memcmp(value, "true", 4) == 0)
                        r->sparse_override = 1;
                else if (vlen == 5 && memcmp(value, "false", 5) == 0)
                        r->sparse_override = 0;
                else
                        return -EBADMSG;
        }
        /* name, path and unknown keys: informational. */
        return 0;
}

int disk_record_parse(const char *text, DiskRecord *ret) {
        DiskRecord r;
        RecordParse p = { .r = &r };
        int res;

        if (strlen(text) > STATE_FILE_MAX)
                return -EBADMSG;
        disk_record_init(&r);
        res = parse_kv_lines(text, record_kv, &p);
        if (res >= 0 && !p.have_version)
                res = -EBADMSG;
        /* A total below the last pass's win cannot come from us. */
        if (res >= 0 && r.reclaimed_total < r.reclaimed_last)
                res = -EBADMSG;
        if (res < 0) {
                disk_record_done(&r);
                return res;
        }
        *ret = r;
        return 0;
}

/* ---- files ---- */

int state_write_atomic(int dir_fd, const char *filename, const char *data, size_t len) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        const char *slash = strrchr(filename, '/');
        int r;

        if (asprintf(&tmp, "%.*s.#%s.tmp", slash ? (int) (slash - filename + 1) : 0, filename,
                     slash ? slash + 1 : filename) < 0)
                return -ENOMEM;
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t n = write(fd, data, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                data += n;
                len -= (size_t) n;
        }
        if (fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        if (renameat(dir_fd, tmp, dir_fd, filename) < 0) {
                r = -errno;
                goto fail;
        }
        /* The rename itself must survive a crash too. */
        if (slash) {
                _cleanup_free_ char *dir = strndup(filename, (size_t) (slash - filename));
                _cleanup_close_ int dfd = dir ? openat(dir_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;

                if (dfd >= 0)
                        (void) fsync(dfd);
        } else
                (void) fsync(dir_fd);
        return 0;
fail:
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

int state_read_file(int dir_fd, const char *filename, size_t max, char **ret) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t got = 0;

        fd = openat(dir_fd, filename, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (got < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        buf[got] = 0;
        /* A NUL inside is not text we wrote. */
        if (strlen(buf) != got)
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int disk_state_filename(const char *name, char **ret) {
        _cleanup_free_ char *e = NULL;
        int r;

        r = state_escape_name(name, &e);
        if (r < 0)
                return r;
        if (asprintf(ret, DISKS_DIR "/%s.state", e) < 0)
                return -ENOMEM;
        return 0;
}

int state_save_disk(int dir_fd, const char *name, const char *path, const DiskRecord *r) {
        _cleanup_free_ char *fn = NULL, *text = NULL;
        int res;

        res = disk_state_filename(name, &fn);
        if (res < 0)
                return res;
        res = disk_record_format(r, name, path, &text);
        if (res < 0)
                return res;
        if (mkdirat(dir_fd, DISKS_DIR, 0755) < 0 && errno != EEXIST)
                return -errno;
        return state_write_atomic(dir_fd, fn, text, strlen(text));
}

int state_load_disk(int dir_fd, const char *name, DiskRecord *ret) {
        _cleanup_free_ char *fn = NULL, *text = NULL;
        int r;

        r = disk_state_filename(name, &fn);
        if (r < 0)
                return r;
        r = state_read_file(dir_fd, fn, STATE_FILE_MAX, &text);
        if (r == -EFBIG)
                return -EBADMSG;
        if (r < 0)
                return r;
        return disk_record_parse(text, ret);
}

int state_remove_disk(int dir_fd, const char *name) {
        _cleanup_free_ char *fn = NULL;
        int r;

        r = disk_state_filename(name, &fn);
        if (r < 0)
                return r;
        if (unlinkat(dir_fd, fn, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* ---- history: JSON lines ---- */

void history_entry_done(HistoryEntry *e) {
        free(e->name);
        free(e->path);
        free(e->result);
        free(e->message);
        free(e->discard);
        *e = (HistoryEntry) {};
}

void history_entries_free(HistoryEntry *e, size_t n) {
        for (size_t i = 0; i < n; i++)
                history_entry_done(&e[i]);
        free(e);
}

int history_format_line(const PassReport *rep, const char *name, uint64_t start, DiscardMode discard, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fputs("{\"name\":", f);
        json_write_string(f, name);
        fprintf(f, ",\"start\":%" PRIu64 ",\"path\":", start);
        json_write_string(f, rep->path ? rep->path : "");
        fputs(",\"format\":", f);
        if (rep->format_known)
                json_write_string(f, image_format_to_string(rep->format));
        else
                fputs("null", f);
        fprintf(f, ",\"virtual_size\":%" PRIu64 ",\"file_size\":%" PRIu64 ",\"allocated_before\":%" PRIu64
                ",\"allocated_after\":%" PRIu64 ",\"reclaimed\":%" PRIu64 ",\"stale_bytes\":%" PRIu64
                ",\"zero_bytes\":%" PRIu64 ",\"free_bytes\":%" PRIu64 ",\"filesystem\":",
                rep->virtual_size, rep->file_size, rep->allocated_before, rep->allocated_after, rep->reclaimed,
                rep->stale_bytes, rep->zero_bytes, rep->free_bytes);
        if (rep->filesystem)
                json_write_string(f, rep->filesystem);
        else
                fputs("null", f);
        fputs(",\"result\":", f);
        json_write_string(f, pass_result_to_string(rep->result));
        fputs(",\"message\":", f);
        json_write_string(f, rep->message ? rep->message : "");
        fprintf(f, ",\"duration_ms\":%" PRIu64 ",\"dry_run\":%s,\"discard\":", rep->duration_ms,
                rep->dry_run ? "true" : "false");
        json_write_string(f, discard_mode_to_string(discard));
        fputs("}\n", f);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

static char **history_string_slot(HistoryEntry *e, const char *key) {
        return streq(key, "name") ? &e->name : streq(key, "path") ? &e->path :
               streq(key, "result") ? &e->result : streq(key, "message") ? &e->message :
               streq(key, "discard") ? &e->discard : NULL;
}

static void history_set_number(HistoryEntry *e, const char *key, uint64_t v) {
        if (streq(key, "start"))
                e->start = v;
        else if (streq(key, "duration_ms"))
                e->duration_usec = v > UINT64_MAX / 1000 ? UINT64_MAX : v * 1000;
        else if (streq(key, "reclaimed"))
                e->reclaimed = v;
        else if (streq(key, "stale_bytes"))
                e->stale_bytes = v;
        else if (streq(key, "zero_bytes"))
                e->zero_bytes = v;
        else if (streq(key, "free_bytes"))
                e->free_bytes = v;
}

/* Of a member given twice the first counts; unknown members are ignored. */
static int history_member(const char *key, JsonValue *v, void *userdata) {
        HistoryEntry *e = userdata;
        char **slot;

        if (v->type == JSON_NUMBER)
                history_set_number(e, key, v->number);
        else if (v->type == JSON_STRING && (slot = history_string_slot(e, key)) && !*slot)
                *slot = TAKE_PTR(v->string);
        else if (v->type == JSON_TRUE && streq(key, "dry_run"))
                e->dry_run = true;
        return 0;
}

int history_parse_line(const char *line, size_t len, HistoryEntry *ret) {
        HistoryEntry e = {};
        int r;

        r = json_parse_flat_object(line, len, history_member, &e);
        if (r >= 0 && (!e.name || !e.result || pass_result_from_string(e.result) == (PassResult) -1))
                r = -EBADMSG;
        if (r < 0) {
                history_entry_done(&e);
                return r;
        }
        if (!e.path && !(e.path = strdup("")))
                r = -ENOMEM;
        if (r >= 0 && !e.message && !(e.message = strdup("")))
                r = -ENOMEM;
        if (r >= 0 && !e.discard && !(e.discard = strdup("")))
                r = -ENOMEM;
        if (r < 0) {
                history_entry_done(&e);
                return r;
        }
        *ret = e;
        return 0;
}

static int append_history(int dir_fd, const char *line, uint64_t max_bytes, bool sync) {
        _cleanup_close_ int fd = -1;
        size_t len = strlen(line);
        struct stat st;

        fd = openat(dir_fd, HISTORY_FILE, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        /* Full: the file becomes the one rotated file (replacing the one
         * before) and a new one starts, so at most twice max_bytes are kept
         * and a query reads at most that. A crash between the rename and the
         * first write leaves only the rotated file: still a valid history. */
        if (st.st_size > 0 && (uint64_t) st.st_size + len > max_bytes) {
                if (renameat(dir_fd, HISTORY_FILE, dir_fd, HISTORY_OLD_FILE) < 0)
                        return -errno;
                close(TAKE_FD(fd));
                fd = openat(dir_fd, HISTORY_FILE, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (fd < 0)
                        return -errno;
        }
        /* One write of one line: O_APPEND keeps lines whole. */
        if (write(fd, line, len) != (ssize_t) len)
                return errno > 0 ? -errno : -EIO;
        if (sync && fdatasync(fd) < 0)
                return -errno;
        return 0;
}

int state_append_history_max(int dir_fd, const char *line, uint64_t max_bytes) {
        return append_history(dir_fd, line, max_bytes, true);
}

int state_append_history(int dir_fd, const char *line) {
        return append_history(dir_fd, line, STATE_HISTORY_ROTATE_BYTES, true);
}

int state_append_history_unsynced(int dir_fd, const char *line) {
        return append_history(dir_fd, line, STATE_HISTORY_ROTATE_BYTES, false);
}

/* A query reads the files from their ends, newest line first, and stops at
 * `limit` matches or after the budget: its cost is bounded whatever the
 * files' size, and for one image with a limit it is what lies between the
 * end and that image's last passes. A line is parsed only when it contains
 * the name as the writer spells it, so other images' lines cost a memmem. */
typedef struct HistoryQuery {
        const char *name;               /* NULL: every image */
        char *needle;                   /* "name":"NAME" as JSON, or NULL */
        size_t needle_len;
        unsigned limit;                 /* 0: everything within the budget */
        uint64_t budget;                /* bytes still to be read */
        size_t block;                   /* bytes per read */
        HistoryEntry *items;            /* newest first while collecting */
        size_t n, allocated;
} HistoryQuery;

static void history_query_done(HistoryQuery *q) {
        free(q->needle);
        history_entries_free(q->items, q->n);
}

static bool history_query_full(const HistoryQuery *q) {
        return (q->limit > 0 && q->n >= q->limit) || q->budget == 0;
}

static int history_query_line(HistoryQuery *q, const char *line, size_t len) {
        HistoryEntry e;

        if (len == 0 || len > HISTORY_LINE_MAX || (q->limit > 0 && q->n >= q->limit))
                return 0;
        if (q->needle && !memmem(line, len, q->needle, q->needle_len))
                return 0;
        if (history_parse_line(line, len, &e) < 0)
                return 0;       /* malformed lines are skipped */
        if (q->name && !streq(e.name, q->name)) {
                history_entry_done(&e);
                return 0;
        }
        if (q->n == q->allocated) {
                size_t na = q->allocated ? q->allocated * 2 : 16;
                HistoryEntry *ne = reallocarray(q->items, na, sizeof *ne);

                if (!ne) {
                        history_entry_done(&e);
                        return -ENOMEM;
                }
                q->items = ne;
                q->allocated = na;
        }
        q->items[q->n++] = e;
        return 0;
}

/* The lines of buf[0..len), last first; returns the length of the leading
 * fragment left over (the tail of a line that began before buf). With
 * *skip_tail set, the trailing piece belongs to an overlong line and is
 * dropped. */
static int history_query_block(HistoryQuery *q, const char *buf, size_t len, bool *skip_tail, size_t *ret_left) {
        size_t line_end = len;
        int r;

        for (const char *nl; line_end > 0 && !history_query_full(q) && (nl = memrchr(buf, '\n', line_end));) {
                size_t i = (size_t) (nl - buf) + 1;

                if (*skip_tail)
                        *skip_tail = false;
                else {
                        r = history_query_line(q, buf + i, line_end - i);
                        if (r < 0)
                                return r;
                }
                line_end = i - 1;
        }
        *ret_left = line_end;
        return 0;
}

static int history_query_file(HistoryQuery *q, int dir_fd, const char *filename) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        bool skip_tail = false;
        struct stat st;
        uint64_t end;
        int r;

        fd = openat(dir_fd, filename, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        buf = malloc(q->block);
        if (!buf)
                return -ENOMEM;

        for (end = (uint64_t) st.st_size; end > 0 && !history_query_full(q);) {
                size_t len = (size_t) MIN(MIN((uint64_t) q->block, end), q->budget), left;
                uint64_t start = end - len;
                ssize_t n = pread(fd, buf, len, (off_t) start);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if ((size_t) n != len)
                        return -EIO;    /* shrank under us: not ours to write */
                q->budget -= len;
                r = history_query_block(q, buf, len, &skip_tail, &left);
                if (r < 0)
                        return r;
                if (start == 0) {
                        /* The first line of the file starts here. */
                        if (!skip_tail)
                                r = history_query_line(q, buf, left);
                        return r;
                }
                if (left == len) {
                        /* No line break in a whole block: a line longer
                         * than any we write; drop it. */
                        skip_tail = true;
                        end = start;
                } else
                        /* Read the leading fragment again, whole, with its start. */
                        end = start + left;
        }
        return 0;
}

static int history_needle(const char *name, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        fputs("\"name\":", f);
        json_write_string(f, name);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret_len = size;
        *ret = TAKE_PTR(buf);
        return 0;
}

int state_read_history_block(int dir_fd, const char *name, unsigned limit, size_t block, HistoryEntry **ret,
                             size_t *ret_n) {
        HistoryQuery q = { .limit = limit, .budget = STATE_HISTORY_READ_MAX, .block = block };
        int r = 0;

        if (block < 2)
                return -EINVAL;
        if (name && *name) {
                q.name = name;
                r = history_needle(name, &q.needle, &q.needle_len);
        }
        if (r >= 0)
                r = history_query_file(&q, dir_fd, HISTORY_FILE);
        if (r >= 0 && !history_query_full(&q))
                r = history_query_file(&q, dir_fd, HISTORY_OLD_FILE);
        if (r < 0) {
                history_query_done(&q);
                return r;
        }
        /* Oldest first. */
        for (size_t i = 0; i < q.n / 2; i++) {
                HistoryEntry t = q.items[i];

                q.items[i] = q.items[q.n - 1 - i];
                q.items[q.n - 1 - i] = t;
        }
        *ret = TAKE_PTR(q.items);
        *ret_n = q.n;
        q.n = 0;
        history_query_done(&q);
        return 0;
}

int state_read_history(int dir_fd, const char *name, unsigned limit, HistoryEntry **ret, size_t *ret_n) {
        return state_read_history_block(dir_fd, name, limit, HISTORY_BLOCK, ret, ret_n);
}

/* ---- trim status ---- */

void trim_status_free(TrimStatus *t, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(t[i].mount);
                free(t[i].last_result);
        }
        free(t);
}

void trim_status_remove(TrimStatus *t, size_t *n, const char *mount) {
        for (size_t i = 0; i < *n; i++)
                if (streq(t[i].mount, mount)) {
                        free(t[i].mount);
                        free(t[i].last_result);
                        memmove(t + i, t + i + 1, (*n - i - 1) * sizeof *t);
                        (*n)--;
                        return;
                }
}

int trim_status_format(const TrimStatus *t, size_t n, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fputs("# vhdreclaimd trim state: one block per mount point\nversion=" STATE_VERSION "\n", f);
        for (size_t i = 0; i < n; i++) {
                fputs("mount=", f);
                escape_value(f, t[i].mount);
                fprintf(f, "\nlast=%" PRIu64 "\ntrimmed_last=%" PRIu64 "\ntrimmed_total=%" PRIu64 "\nlast_result=",
                        t[i].last, t[i].trimmed_last, t[i].trimmed_total);
                escape_value(f, t[i].last_result ? t[i].last_result : "");
                fputc('\n', f);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

typedef struct TrimParse {
        TrimStatus *items;
        size_t n;
        bool have_version;
} TrimParse;

static int trim_kv(const char *key, size_t klen, const char *value, size_t vlen, void *userdata) {
        TrimParse *p = userdata;
        TrimStatus *cur = p->n > 0 ? &p->items[p->n - 1] : NULL;
        uint64_t v;

        if (key_is(key, klen, "version")) {
                if (vlen != strlen(STATE_VERSION) || memcmp(value, STATE_VERSION, vlen) != 0)
                        return -EBADMSG;
                p->have_version = true;
                return 0;
        }
        if (key_is(key, klen, "mount")) {
                TrimStatus *ni;

                if (p->n >= 4096 || vlen == 0 || vlen > 4096)
                        return -EBADMSG;
                ni = reallocarray(p->items, p->n + 1, sizeof *ni);
                if (!ni)
                        return -ENOMEM;
                p->items = ni;
                p->items[p->n] = (TrimStatus) {};
                p->n++;
                return unescape_value(value, vlen, &p->items[p->n - 1].mount);
        }
        if (!cur)
                return -EBADMSG;
        if (key_is(key, klen, "last_result")) {
                int r;

                if (cur->last_result)
                        return -EBADMSG;
                /* The bound is on the value, not its escaped spelling, which
                 * formatting may lengthen: what is read must print and read back. */
                r = unescape_value(value, vlen, &cur->last_result);
                if (r >= 0 && strlen(cur->last_result) > 64)
                        r = -EBADMSG;
                return r;
        }
        if (key_is(key, klen, "last") || key_is(key, klen, "trimmed_last") || key_is(key, klen, "trimmed_total")) {
                if (json_parse_u64(value, vlen, &v) < 0)
                        return -EBADMSG;
                if (key_is(key, klen, "last"))
                        cur->last = v;
                else if (key_is(key, klen, "trimmed_last"))
                        cur->trimmed_last = v;
                else
                        cur->trimmed_total = v;
        }
        return 0;
}

int trim_status_parse(const char *text, TrimStatus **ret, size_t *ret_n) {
        TrimParse p = {};
        int r;

        r = parse_kv_lines(text, trim_kv, &p);
        if (r >= 0 && !p.have_version)
                r = -EBADMSG;
        for (size_t i = 0; r >= 0 && i < p.n; i++)
                if (!p.items[i].last_result && !(p.items[i].last_result = strdup("")))
                        r = -ENOMEM;
        if (r < 0) {
                trim_status_free(p.items, p.n);
                return r;
        }
        *ret = p.items;
        *ret_n = p.n;
        return 0;
}

int state_save_trim(int dir_fd, const TrimStatus *t, size_t n) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = trim_status_format(t, n, &text);
        if (r < 0)
                return r;
        return state_write_atomic(dir_fd, TRIM_FILE, text, strlen(text));
}

int state_load_trim(int dir_fd, TrimStatus **ret, size_t *ret_n) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = state_read_file(dir_fd, TRIM_FILE, STATE_FILE_MAX * 4, &text);
        if (r == -EFBIG)
                return -EBADMSG;
        if (r < 0)
                return r;
        return trim_status_parse(text, ret, ret_n);
}
