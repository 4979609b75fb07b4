/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "children.h"
#include "fsaware.h"
#include "macro.h"
#include "pass-free.h"

static int set_note(FreeTier *ft, const char *note) {
        free(ft->note);
        ft->note = strdup(note);
        return ft->note ? 0 : -ENOMEM;
}

/* A differencing child reads this image's blocks as its own and links to its
 * DataWriteGuid: with one, the free tier (which changes what free blocks read
 * as, and renews that GUID) must not run. Returns 1 when skipped. */
static int skip_for_children(FreeTier *ft, Image *img, const char *path, char *const *also) {
        _cleanup_free_ char *child = NULL, *why = NULL, *note = NULL;
        ChildSearch q = { .path = path, .also = also };
        int r;

        if (img->format != IMAGE_FORMAT_VHDX)
                return 0;       /* only a VHDX can be a VHDX's parent */
        q.data_write_guid = &img->vhdx->headers[img->vhdx->current].data_write_guid;
        r = children_find(&q, &child, &why);
        if (r <= 0)
                return r;
        if (asprintf(&note, "free tier skipped: %s may be a differencing child of this image (%s)", child, why) < 0)
                return -ENOMEM;
        ft->skipped_differencing = true;
        free(ft->note);
        ft->note = TAKE_PTR(note);
        return 1;
}

int free_tier_prepare(FreeTier *ft, Image *img, bool enabled, char *const *also, PassReport *rep) {
        FsScan scan = {};
        const FsPartition *unclean;
        int r;

        ft->enabled = enabled;
        if (img->format == IMAGE_FORMAT_VHDX && img->vhdx->has_parent) {
                /* A differencing disk's guest view needs the parent chain. */
                rep->filesystem = strdup("unknown (differencing disk)");
                if (enabled) {
                        ft->skipped_differencing = true;
                        return set_note(ft, "free tier skipped: differencing disk") < 0 ? -ENOMEM : 1;
                }
                return 1;
        }

        r = fsaware_scan(&img->vdisk, &scan);
        if (r < 0) {
                if (!enabled) {
                        /* The safe tiers do not depend on the guest's view. */
                        rep->filesystem = strdup("unknown");
                        return 1;
                }
                if (r == -EINTR)
                        pass_report_set(rep, PASS_SKIPPED_IN_USE,
                                        "stopped: another process opened the image while its file systems were read");
                else if (r == -ECANCELED)
                        pass_report_set(rep, PASS_CANCELLED, "cancelled while reading the guest file systems");
                else if (r == -ETIME)
                        pass_report_set(rep, PASS_ERROR, "stopped while reading the guest file systems: %s",
                                        "maximum pass time reached");
                else
                        pass_report_set(rep, r == -EBADMSG ? PASS_REFUSED_INVALID : PASS_ERROR,
                                        "reading the guest file systems: %s", scan.error[0] ? scan.error : strerror(-r));
                return r;
        }
        r = fsaware_summary(&scan, &rep->filesystem);
        if (r < 0)
                goto finish;

        if (enabled) {
                if (scan.ambiguous[0]) {
                        pass_report_set(rep, PASS_SKIPPED_UNCLEAN_FS, "%s", scan.ambiguous);
                        r = 0;
                        goto finish;
                }
                unclean = fsaware_first_unclean(&scan);
                if (unclean) {
                        pass_report_set(rep, PASS_SKIPPED_UNCLEAN_FS,
                                        "%s file system at virtual offset 0x%" PRIx64 "%s is not clean: %s",
                                        fs_kind_to_string(unclean->kind), unclean->offset,
                                        unclean->index > 0 ? " (a partition)" : "", unclean->reason);
                        r = 0;
                        goto finish;
                }
                r = skip_for_children(ft, img, rep->path, also);
                if (r < 0) {
                        pass_report_set(rep, PASS_ERROR, "looking for differencing children: %s", strerror(-r));
                        goto finish;
                }
                if (r > 0) {
                        r = 1;
                        goto finish;
                }
                r = image_map_virtual_ranges(img, &scan.free, &ft->file_ranges);
                if (r < 0)
                        goto finish;
                extent_list_normalize(&ft->file_ranges);
        }
        r = 1;
finish:
        fsaware_scan_done(&scan);
        if (r == -ENOMEM)
                pass_report_set(rep, PASS_ERROR, "out of memory");
        return r;
}

int free_tier_punch(const FreeTier *ft, Image *img, int fd, const ScanControl *c, bool dry_run, uint64_t *ret_punched) {
        ScanControl cc = *c;
        ScanResult sr = {};
        int r;

        *ret_punched = 0;
        if (!ft->enabled || ft->file_ranges.n == 0)
                return 0;
        cc.dry_run = dry_run;
        r = scan_punch_ranges(fd, &ft->file_ranges, &cc, &sr);
        *ret_punched = sr.punched;
        return r;
}

int free_tier_renew_guids(Image *img) {
        if (img->format != IMAGE_FORMAT_VHDX)
                return 0;
        return vhdx_renew_write_guids(img->vhdx, img->fd);
}

void free_tier_done(FreeTier *ft) {
        extent_list_done(&ft->file_ranges);
        free(ft->note);
        *ft = (FreeTier) {};
}
