/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pass.h"

/* Persistent state in the state directory (DESIGN.md: default
 * /var/lib/vhdreclaim):
 *
 *   disks/NAME.state   one per image: key=value lines, written atomically
 *                      (write, fsync, rename, fsync of the directory)
 *   trim.state         one block of key=value lines per mount point
 *   history.jsonl      append-only, one JSON object per pass; when the next
 *                      line would take it past STATE_HISTORY_ROTATE_BYTES it
 *                      is renamed history.jsonl.1 (replacing the one
 *                      before) and a new one is started
 *
 * Every reader treats the files as untrusted: sizes are bounded, numbers
 * fully validated, unknown keys ignored, a malformed file rejected as a whole
 * (-EBADMSG) and the image then starts with no record. */

#define STATE_FILE_MAX (64u * 1024u)
#define STATE_MESSAGE_MAX 4096u

/* What survives a restart for one image. */
typedef struct DiskRecord {
        uint64_t last_pass;             /* realtime usec of the last pass's start; 0 = never */
        int last_result;                /* PassResult, -1 = never */
        bool last_dry_run;              /* that result is a dry run's (a watch-only disk's estimate) */
        char *last_message;
        uint64_t reclaimed_last;
        uint64_t reclaimed_total;
        uint64_t resume_offset;         /* the zero tier resumes here */
        uint64_t reclaimable;           /* estimate; 0 = unknown */
        uint64_t virtual_size;
        int format;                     /* ImageFormat, -1 = unknown */
        uint32_t passes;
        int sparse_override;            /* SetSparse: -1 none, 0 false, 1 true */
        /* The image as our last complete pass left it. Absent (an older
         * state file, or one this version cannot read): the image counts as
         * changed, and the next pass is a full one. */
        bool have_fingerprint;
        Fingerprint fingerprint;
} DiskRecord;

void disk_record_init(DiskRecord *r);
void disk_record_done(DiskRecord *r);

/* NAME -> file name: [A-Za-z0-9_-] and inner dots kept, everything else as
 * %XX, so no name can escape the directory or collide with another. */
int state_escape_name(const char *name, char **ret);

/* The text of a disk state file, and its parser (NUL-terminated text). */
int disk_record_format(const DiskRecord *r, const char *name, const char *path, char **ret);
int disk_record_parse(const char *text, DiskRecord *ret);

/* Writes data to dir_fd/filename atomically. */
int state_write_atomic(int dir_fd, const char *filename, const char *data, size_t len);
/* Reads a whole file of at most max bytes, NUL-terminated; -EFBIG when larger. */
int state_read_file(int dir_fd, const char *filename, size_t max, char **ret);

/* One daemon per state directory: two would overwrite each other's
 * records, history and rotation. Takes an exclusive flock on dir_fd/lock
 * (held as long as *ret_fd stays open) and writes our PID into it. -EBUSY
 * when another process holds it, *ret_holder then its PID (0 if unknown). */
#define STATE_LOCK_FILE "lock"
int state_lock_dir(int dir_fd, int *ret_fd, pid_t *ret_holder);

int state_save_disk(int dir_fd, const char *name, const char *path, const DiskRecord *r);
/* -ENOENT when there is no record; -EBADMSG when it is malformed. */
int state_load_disk(int dir_fd, const char *name, DiskRecord *ret);
/* Forgets an image for good (its file was deleted); the history keeps its passes. */
int state_remove_disk(int dir_fd, const char *name);

/* ---- history ---- */

typedef struct HistoryEntry {
        char *name;
        char *path;
        uint64_t start;                 /* realtime usec */
        char *result;
        char *message;
        uint64_t duration_usec;
        uint64_t reclaimed;
        uint64_t stale_bytes;
        uint64_t zero_bytes;
        uint64_t free_bytes;
        char *discard;
        bool dry_run;                   /* the byte counts are what it would have punched */
} HistoryEntry;

void history_entry_done(HistoryEntry *e);
void history_entries_free(HistoryEntry *e, size_t n);

/* One line: the once-mode report's fields plus name, start and discard. */
int history_format_line(const PassReport *rep, const char *name, uint64_t start, DiscardMode discard, char **ret);
/* Parses one line; -EBADMSG when it is not a JSON object with the fields we need. */
int history_parse_line(const char *line, size_t len, HistoryEntry *ret);

/* A size cap with one rotated file, rather than a count of lines: the disk
 * space and a query's read are bounded in bytes, whatever the messages'
 * length. 4 MiB hold about 9,000 passes: a year of daily passes of 25
 * images, or a day of 10,000. */
#define STATE_HISTORY_ROTATE_BYTES (UINT64_C(4) * 1024 * 1024)
/* What a query reads at most: both files at their cap. (An older, larger
 * history.jsonl shows only its newest part.) */
#define STATE_HISTORY_READ_MAX (2 * STATE_HISTORY_ROTATE_BYTES)

int state_append_history(int dir_fd, const char *line);
/* Without the fdatasync, on the event loop: for a pass that changed nothing
 * (an unchanged image's), whose line a crash may lose harmlessly; a cycle
 * over 10,000 unchanged images made 10,000 syncs on the loop. */
int state_append_history_unsynced(int dir_fd, const char *line);
/* The same with another cap, for tests. */
int state_append_history_max(int dir_fd, const char *line, uint64_t max_bytes);
/* The last `limit` entries (0 = all) for name (NULL or "" = all), oldest
 * first, read from the end of the history (the current file, then the
 * rotated one), at most STATE_HISTORY_READ_MAX bytes of it. Malformed and
 * overlong lines are skipped. */
int state_read_history(int dir_fd, const char *name, unsigned limit, HistoryEntry **ret, size_t *ret_n);
/* The same, reading `block` bytes at a time (the daemon: 64 KiB), for the
 * fuzzer. Beside the 16 KiB bound, a line is skipped when it does not fit in
 * a block with the line break before it (the file's first line: in a block). */
int state_read_history_block(int dir_fd, const char *name, unsigned limit, size_t block, HistoryEntry **ret,
                             size_t *ret_n);

/* ---- trim status ---- */

typedef struct TrimStatus {
        char *mount;
        uint64_t last;                  /* realtime usec */
        uint64_t trimmed_last;
        uint64_t trimmed_total;
        char *last_result;
} TrimStatus;

void trim_status_free(TrimStatus *t, size_t n);
/* Drops mount's entry, if there is one, keeping the others in order. */
void trim_status_remove(TrimStatus *t, size_t *n, const char *mount);
int trim_status_format(const TrimStatus *t, size_t n, char **ret);
int trim_status_parse(const char *text, TrimStatus **ret, size_t *ret_n);
int state_save_trim(int dir_fd, const TrimStatus *t, size_t n);
int state_load_trim(int dir_fd, TrimStatus **ret, size_t *ret_n);
