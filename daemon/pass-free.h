/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>

#include "extent.h"
#include "image.h"
#include "pass.h"
#include "scan.h"

/* The free tier of a pass: guest file-system free space (fsaware) mapped to
 * the file ranges of present payload that store it. */
typedef struct FreeTier {
        bool enabled;
        ExtentList file_ranges;         /* normalized file ranges to punch */
        char *note;                     /* said in the report's message, may be NULL */
        bool skipped_differencing;
} FreeTier;

/* Reads the guest file systems (always, to name them in rep->filesystem) and,
 * when enabled, collects the free ranges, unless a differencing child names
 * the image (looked for in its folder and among also, NULL-terminated, may be
 * NULL): then the tier is skipped and the note names the child. Returns 1 to
 * go on, 0 when the pass must end untouched (the report says why), or a
 * negative errno with the report set. */
int free_tier_prepare(FreeTier *ft, Image *img, bool enabled, char *const *also, PassReport *rep);
/* Punches ft->file_ranges without reading them (they hold only free space). */
int free_tier_punch(const FreeTier *ft, Image *img, int fd, const ScanControl *c, bool dry_run, uint64_t *ret_punched);
/* Before the first free-range punch of a VHDX: new FileWriteGuid and
 * DataWriteGuid, as the guest-visible content is about to change. */
int free_tier_renew_guids(Image *img);
void free_tier_done(FreeTier *ft);
