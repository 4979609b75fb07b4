/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "fingerprint.h"
#include "image.h"

/* One reclamation pass over one image: take the lease, validate, punch the
 * tiers the options allow, measure, release. The same code runs for
 * `vhdreclaimd --once` and on the daemon's worker threads. */

typedef enum PassResult {
        PASS_SUCCESS,
        PASS_NOTHING_TO_DO,
        PASS_SKIPPED_IN_USE,
        PASS_SKIPPED_DIRTY_LOG,
        PASS_SKIPPED_FIXED,
        PASS_SKIPPED_DIFFERENCING,
        PASS_SKIPPED_UNCLEAN_FS,
        PASS_SKIPPED_UNSAFE_FS,         /* network, cluster or FUSE file system (rule 6) */
        PASS_SKIPPED_THRESHOLD,
        PASS_REFUSED_INVALID,
        PASS_ERROR,
        PASS_CANCELLED,                 /* stopped by cancel or shutdown; keeps its resume point */
        _PASS_RESULT_MAX,
} PassResult;

typedef struct PassOptions {
        DiscardMode discard;            /* safe: stale + zero; free: also guest free space */
        DiskFormat format;              /* what the configuration says the image is (image_open()) */
        bool dry_run;
        bool force_fixed;               /* act on LeaveBlockAllocated disks */
        bool compact;                   /* then shrink the VHDX file (compact.h) */
        /* Set for images found in a [watch] folder: the length of the
         * folder's path in path; no symlink below it is followed (the pass
         * is refused), since its users could otherwise point the daemon at
         * any file on the host (beneath.h). 0: symlinks are followed. */
        size_t beneath;
        uint64_t min_hole;              /* bytes */
        uint64_t min_reclaim;           /* bytes; 0 = no threshold */
        uint64_t io_limit;              /* bytes/s; 0 = unlimited */
        uint64_t max_pass_usec;         /* 0 = unlimited */
        uint64_t resume_offset;         /* zero tier starts here (file offset) */
        /* [reclaim] localMounts: file systems the admin declares used by this
         * host alone, where an otherwise unsafe type may be punched. */
        char *const *local_mounts;
        size_t n_local_mounts;
        const atomic_bool *cancel;      /* set by another thread to stop; may be NULL */
        /* Progress of the zero tier: bytes examined of total. May be NULL.
         * Called on the pass's thread. */
        void (*progress)(uint64_t done, uint64_t total, void *userdata);
        void *userdata;
        /* The other images the daemon manages or watches, NULL-terminated
         * (may be NULL): looked at, besides the image's folder, for a
         * differencing child naming this image. Owned: pass_options_done(). */
        char **related_images;
        /* The image as our last complete pass left it (NULL: always a full
         * pass). When it is unchanged, the pass ends as nothing-to-do
         * without reading the image's data. */
        const Fingerprint *unchanged_since;
        /* With resume_offset: the image as the pass that stopped there left
         * it. Resuming skips what that pass read, which only holds while the
         * image is unchanged since; otherwise the zero tier starts from the
         * beginning (a user who opened the image mid-pass may have freed
         * space there). NULL: resume_offset is taken as it is. */
        const Fingerprint *resume_since;
} PassOptions;

typedef struct PassReport {
        char *path;
        ImageFormat format;
        bool format_known;
        uint64_t virtual_size;
        uint64_t file_size;
        uint64_t allocated_before;
        uint64_t allocated_after;
        uint64_t reclaimed;             /* measured from st_blocks */
        uint64_t stale_bytes;           /* punched, or would be with dry_run */
        uint64_t zero_bytes;
        uint64_t free_bytes;
        char *filesystem;
        PassResult result;
        char *message;
        uint64_t duration_ms;
        uint64_t resume_offset;         /* where the next pass's zero tier resumes; 0 when a round
                                         * is complete; the starting point when it never got there */
        bool dry_run;
        /* The image as this pass left it, taken under the lease, when the
         * pass judged the whole image (a round complete: what the next
         * pass's unchanged_since can be) or stopped at resume_offset (what
         * the next pass's resume_since can be). */
        bool have_fingerprint;
        Fingerprint fingerprint;
        bool unchanged;                 /* ended early: unchanged_since matched */
        bool compact;                   /* compaction was asked for */
        uint64_t file_size_after;       /* apparent size after compaction */
        uint64_t compacted;             /* bytes the apparent size shrank (or would) */
        uint64_t blocks_moved;
} PassReport;

/* Always fills *report (result and message say what happened); returns 0, or
 * -ENOMEM when even the report could not be made. */
int pass_run(const char *path, const PassOptions *o, PassReport *report);
void pass_report_done(PassReport *report);
void pass_options_done(PassOptions *o);
/* Sets the result and a printf-formatted message. */
void pass_report_set(PassReport *report, PassResult result, const char *format, ...) __attribute__((format(printf, 3, 4)));

const char *pass_result_to_string(PassResult r);
PassResult pass_result_from_string(const char *s);   /* -1 when unknown */
/* refused-invalid and error: the exit status and the daemon's alarms follow it. */
bool pass_result_is_failure(PassResult r);
