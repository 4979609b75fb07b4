/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <inttypes.h>
#include <string.h>

#include "json.h"
#include "report.h"

/* What a dry run would punch; a real pass reports what it did in reclaimed. */
static uint64_t would_reclaim(const PassReport *r) {
        return r->dry_run ? r->stale_bytes + r->zero_bytes + r->free_bytes : 0;
}

/* RFC 4648 base64 with padding: file names are bytes, JSON strings are
 * Unicode, and a name that is not UTF-8 must still map back to its file. */
static void write_base64(FILE *f, const char *s) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *p = (const unsigned char *) s;
        size_t n = strlen(s);

        fputc('"', f);
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16 | (i + 1 < n ? (uint32_t) p[i + 1] << 8 : 0) |
                             (i + 2 < n ? p[i + 2] : 0);

                fputc(alphabet[v >> 18 & 63], f);
                fputc(alphabet[v >> 12 & 63], f);
                fputc(i + 1 < n ? alphabet[v >> 6 & 63] : '=', f);
                fputc(i + 2 < n ? alphabet[v & 63] : '=', f);
        }
        fputc('"', f);
}

void report_write_json(const PassReport *r, FILE *f) {
        fputs("{\"path\":", f);
        json_write_string(f, r->path);
        fputs(",\"path_bytes\":", f);
        write_base64(f, r->path);
        fputs(",\"format\":", f);
        if (r->format_known)
                json_write_string(f, image_format_to_string(r->format));
        else
                fputs("null", f);
        fprintf(f, ",\"virtual_size\":%" PRIu64 ",\"file_size\":%" PRIu64
                   ",\"allocated_before\":%" PRIu64 ",\"allocated_after\":%" PRIu64
                   ",\"reclaimed\":%" PRIu64 ",\"stale_bytes\":%" PRIu64
                   ",\"zero_bytes\":%" PRIu64 ",\"free_bytes\":%" PRIu64,
                r->virtual_size, r->file_size, r->allocated_before, r->allocated_after,
                r->reclaimed, r->stale_bytes, r->zero_bytes, r->free_bytes);
        fputs(",\"filesystem\":", f);
        json_write_string(f, r->filesystem ? r->filesystem : "unknown");
        fputs(",\"result\":", f);
        json_write_string(f, pass_result_to_string(r->result));
        fputs(",\"message\":", f);
        json_write_string(f, r->message);
        fprintf(f, ",\"duration_ms\":%" PRIu64 ",\"dry_run\":%s,\"would_reclaim\":%" PRIu64
                   ",\"resume_offset\":%" PRIu64,
                r->duration_ms, r->dry_run ? "true" : "false", would_reclaim(r), r->resume_offset);
        if (r->compact)
                fprintf(f, ",\"file_size_after\":%" PRIu64 ",\"compacted\":%" PRIu64 ",\"blocks_moved\":%" PRIu64,
                        r->file_size_after, r->compacted, r->blocks_moved);
        fputs("}\n", f);
}

static void format_bytes(uint64_t n, char *buf, size_t size) {
        static const char units[] = "BKMGTPE";
        double v = (double) n;
        unsigned u = 0;

        while (v >= 1024 && u < sizeof units - 2) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, size, "%" PRIu64 "B", n);
        else
                snprintf(buf, size, "%.1f%c", v, units[u]);
}

void report_write_text(const PassReport *r, FILE *f) {
        char rec[32], st[32], ze[32], fr[32];

        format_bytes(r->dry_run ? would_reclaim(r) : r->reclaimed, rec, sizeof rec);
        format_bytes(r->stale_bytes, st, sizeof st);
        format_bytes(r->zero_bytes, ze, sizeof ze);
        format_bytes(r->free_bytes, fr, sizeof fr);
        fprintf(f, "%s: %s%s: %s %s (stale %s, zero %s, free %s) in %" PRIu64 " ms%s%s\n",
                r->path, pass_result_to_string(r->result), r->dry_run ? " (dry run)" : "",
                r->dry_run ? "would punch" : "reclaimed",
                rec, st, ze, fr, r->duration_ms,
                r->message && *r->message ? ": " : "", r->message ? r->message : "");
        if (r->compact && r->format_known && r->format == IMAGE_FORMAT_RAW)
                fprintf(f, "%s: %s\n", r->path, REPORT_RAW_NOT_COMPACTED);
        else if (r->compact) {
                char before[32], after[32];

                format_bytes(r->file_size, before, sizeof before);
                format_bytes(r->file_size_after, after, sizeof after);
                fprintf(f, "%s: compaction %s file size %s -> %s, %" PRIu64 " blocks moved\n", r->path,
                        r->dry_run ? "would take the" : "took the", before, after, r->blocks_moved);
        }
}
