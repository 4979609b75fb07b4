/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config.h"

/* What an image looked like right after our own pass, so that the next
 * periodic pass can tell, without reading its data, that nobody changed it
 * since: then there is nothing new to reclaim.
 *
 * Of these, a writer cannot avoid changing ctime: every write, truncate,
 * fallocate and even a utimensat() that puts mtime back sets it to the
 * current time, and no user-space call can set it. The others catch what a
 * ctime check alone would miss: a file replaced by another (dev, ino), a
 * clock set back (size, allocated bytes, mtime), and for VHDX the headers
 * every writer must update before its first write to an opened file (a
 * new FileWriteGuid, written with higher sequence numbers). `settings` is a hash
 * of what the pass was asked to do (discard mode, minHole, force, compact) and, when
 * minReclaim held it back (skipped-threshold), of that minReclaim: another
 * request is another pass, but a pass that punched everything it found
 * stands for any minReclaim. */

#define FINGERPRINT_GUID_SIZE 16

typedef struct Fingerprint {
        uint64_t pass_time;             /* realtime usec of the pass that took it */
        uint64_t dev;
        uint64_t ino;
        uint64_t size;
        uint64_t allocated;             /* st_blocks * 512 */
        int64_t mtime_nsec;
        int64_t ctime_nsec;
        bool vhdx;                      /* the header fields below are set */
        uint64_t sequence[2];           /* headers 1 and 2 */
        uint8_t file_write_guid[2][FINGERPRINT_GUID_SIZE];
        uint64_t settings;
} Fingerprint;

/* The hash that goes into `settings`. */
/* held_by: the minReclaim that held the pass back, 0 when it punched all it found. */
uint64_t fingerprint_settings(DiscardMode discard, uint64_t min_hole, uint64_t held_by, bool force_fixed, bool compact);

/* Fills *ret from fd (fstat, and for a VHDX the two 32-byte header starts
 * at 64 KiB and 128 KiB); pass_time and settings are the caller's. */
int fingerprint_take(int fd, bool vhdx, Fingerprint *ret);

/* Every field but pass_time. */
bool fingerprint_equal(const Fingerprint *a, const Fingerprint *b);
/* The fields a stat() gives (dev, ino, size, allocated, mtime, ctime) match:
 * without opening the file, whether a writer could have been in it (ctime). */
bool fingerprint_stat_matches(const Fingerprint *f, const struct stat *st);

/* One line of text (no newline) and back; parse fails with -EBADMSG on
 * anything but exactly what format writes. */
#define FINGERPRINT_TEXT_MAX 320
int fingerprint_format(const Fingerprint *f, char buf[static FINGERPRINT_TEXT_MAX]);
int fingerprint_parse(const char *s, size_t len, Fingerprint *ret);
