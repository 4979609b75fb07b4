/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fingerprint.h"
#include "unaligned.h"

/* Bumped when what a pass finds in an unchanged image may differ (a new
 * tier, a fixed bug): a fingerprint of another version never matches. */
#define FINGERPRINT_VERSION 1

#define VHDX_HEADER1_OFFSET (UINT64_C(64) * 1024)
#define VHDX_HEADER2_OFFSET (UINT64_C(128) * 1024)

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

uint64_t fingerprint_settings(DiscardMode discard, uint64_t min_hole, uint64_t held_by, bool force_fixed, bool compact) {
        uint64_t v[] = { FINGERPRINT_VERSION, (uint64_t) discard, min_hole, held_by, force_fixed, compact };

        return fnv1a(UINT64_C(0xcbf29ce484222325), v, sizeof v);
}

/* Signature, checksum, sequence number and FileWriteGuid: the first 32 bytes. */
static int read_header_start(int fd, uint64_t offset, uint64_t *sequence, uint8_t guid[static FINGERPRINT_GUID_SIZE]) {
        uint8_t b[32];
        ssize_t n = pread(fd, b, sizeof b, (off_t) offset);

        if (n < 0)
                return -errno;
        if (n != (ssize_t) sizeof b) {
                /* Too short for a header: nothing to compare beyond the size. */
                *sequence = 0;
                memset(guid, 0, FINGERPRINT_GUID_SIZE);
                return 0;
        }
        *sequence = memcmp(b, "head", 4) == 0 ? get_le64(b + 8) : 0;
        memcpy(guid, b + 16, FINGERPRINT_GUID_SIZE);
        return 0;
}

static void fingerprint_from_stat(const struct stat *st, Fingerprint *f) {
        f->dev = (uint64_t) st->st_dev;
        f->ino = (uint64_t) st->st_ino;
        f->size = (uint64_t) st->st_size;
        f->allocated = (uint64_t) st->st_blocks * 512;
        f->mtime_nsec = (int64_t) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
        f->ctime_nsec = (int64_t) st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

bool fingerprint_stat_matches(const Fingerprint *f, const struct stat *st) {
        Fingerprint s = {};

        fingerprint_from_stat(st, &s);
        return s.dev == f->dev && s.ino == f->ino && s.size == f->size && s.allocated == f->allocated &&
               s.mtime_nsec == f->mtime_nsec && s.ctime_nsec == f->ctime_nsec;
}

int fingerprint_take(int fd, bool vhdx, Fingerprint *ret) {
        struct stat st;
        Fingerprint f = {};
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        fingerprint_from_stat(&st, &f);
        f.vhdx = vhdx;
        if (vhdx) {
                r = read_header_start(fd, VHDX_HEADER1_OFFSET, &f.sequence[0], f.file_write_guid[0]);
                if (r >= 0)
                        r = read_header_start(fd, VHDX_HEADER2_OFFSET, &f.sequence[1], f.file_write_guid[1]);
                if (r < 0)
                        return r;
        }
        f.pass_time = ret->pass_time;
        f.settings = ret->settings;
        *ret = f;
        return 0;
}

bool fingerprint_equal(const Fingerprint *a, const Fingerprint *b) {
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->allocated == b->allocated &&
               a->mtime_nsec == b->mtime_nsec && a->ctime_nsec == b->ctime_nsec && a->vhdx == b->vhdx &&
               a->sequence[0] == b->sequence[0] && a->sequence[1] == b->sequence[1] &&
               memcmp(a->file_write_guid, b->file_write_guid, sizeof a->file_write_guid) == 0 &&
               a->settings == b->settings;
}

static void hex(char *out, const uint8_t *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
}

int fingerprint_format(const Fingerprint *f, char buf[static FINGERPRINT_TEXT_MAX]) {
        char g0[2 * FINGERPRINT_GUID_SIZE + 1], g1[2 * FINGERPRINT_GUID_SIZE + 1];
        int n;

        hex(g0, f->file_write_guid[0], FINGERPRINT_GUID_SIZE);
        hex(g1, f->file_write_guid[1], FINGERPRINT_GUID_SIZE);
        n = snprintf(buf, FINGERPRINT_TEXT_MAX,
                     "v%d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId64
                     " %s %" PRIu64 " %" PRIu64 " %s %s %016" PRIx64,
                     FINGERPRINT_VERSION, f->pass_time, f->dev, f->ino, f->size, f->allocated, f->mtime_nsec,
                     f->ctime_nsec, f->vhdx ? "vhdx" : "raw", f->sequence[0], f->sequence[1], g0, g1, f->settings);
        return n > 0 && n < FINGERPRINT_TEXT_MAX ? 0 : -EINVAL;
}

int fingerprint_parse(const char *s, size_t len, Fingerprint *ret) {
        char text[FINGERPRINT_TEXT_MAX], kind[8], g[2][2 * FINGERPRINT_GUID_SIZE + 1], again[FINGERPRINT_TEXT_MAX];
        Fingerprint f = {};
        int version, n = 0;

        if (len == 0 || len >= sizeof text || memchr(s, 0, len))
                return -EBADMSG;
        memcpy(text, s, len);
        text[len] = 0;
        if (sscanf(text, "v%d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNd64 " %" SCNd64
                         " %7s %" SCNu64 " %" SCNu64 " %32s %32s %" SCNx64 "%n",
                   &version, &f.pass_time, &f.dev, &f.ino, &f.size, &f.allocated, &f.mtime_nsec, &f.ctime_nsec,
                   kind, &f.sequence[0], &f.sequence[1], g[0], g[1], &f.settings, &n) != 14 ||
            (size_t) n != len || version != FINGERPRINT_VERSION)
                return -EBADMSG;
        if (strcmp(kind, "vhdx") == 0)
                f.vhdx = true;
        else if (strcmp(kind, "raw") != 0)
                return -EBADMSG;
        for (int k = 0; k < 2; k++)
                for (size_t i = 0; i < FINGERPRINT_GUID_SIZE; i++) {
                        unsigned v;

                        if (sscanf(g[k] + 2 * i, "%2x", &v) != 1)
                                return -EBADMSG;
                        f.file_write_guid[k][i] = (uint8_t) v;
                }
        /* sscanf accepts signs, spaces and short hex: only the canonical text counts. */
        if (fingerprint_format(&f, again) < 0 || strcmp(again, text) != 0)
                return -EBADMSG;
        *ret = f;
        return 0;
}
