/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "compact.h"
#include "guard.h"
#include "hostfs.h"
#include "log.h"
#include "macro.h"
#include "pass.h"
#include "pass-free.h"
#include "scan.h"

static const char *const result_names[_PASS_RESULT_MAX] = {
        [PASS_SUCCESS] = "success",
        [PASS_NOTHING_TO_DO] = "nothing-to-do",
        [PASS_SKIPPED_IN_USE] = "skipped-in-use",
        [PASS_SKIPPED_DIRTY_LOG] = "skipped-dirty-log",
        [PASS_SKIPPED_FIXED] = "skipped-fixed",
        [PASS_SKIPPED_DIFFERENCING] = "skipped-differencing",
        [PASS_SKIPPED_UNCLEAN_FS] = "skipped-unclean-fs",
        [PASS_SKIPPED_UNSAFE_FS] = "skipped-unsafe-fs",
        [PASS_SKIPPED_THRESHOLD] = "skipped-threshold",
        [PASS_REFUSED_INVALID] = "refused-invalid",
        [PASS_ERROR] = "error",
        [PASS_CANCELLED] = "cancelled",
};

const char *pass_result_to_string(PassResult r) {
        return r >= 0 && r < _PASS_RESULT_MAX ? result_names[r] : "unknown";
}

PassResult pass_result_from_string(const char *s) {
        for (int i = 0; i < _PASS_RESULT_MAX; i++)
                if (strcmp(result_names[i], s) == 0)
                        return (PassResult) i;
        return (PassResult) -1;
}

bool pass_result_is_failure(PassResult r) {
        return r == PASS_REFUSED_INVALID || r == PASS_ERROR;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

void pass_report_set(PassReport *rep, PassResult result, const char *format, ...) {
        va_list ap;

        rep->result = result;
        free(rep->message);
        rep->message = NULL;
        va_start(ap, format);
        if (vasprintf(&rep->message, format, ap) < 0)
                rep->message = NULL;
        va_end(ap);
}

typedef struct PassState {
        const PassOptions *o;
        PassReport *rep;
        int fd;
        uint64_t deadline;
        uint64_t progress_total;
        uint64_t progress_base;
        ScanControl scan;
        Image *img;
        const ExtentList *stale;
        const FreeTier *free_tier;
        uint64_t free_estimate;         /* data bytes the free tier will punch */
        bool stop_reported;             /* the report already says why the pass stopped */
} PassState;

static int pass_check(void *userdata) {
        PassState *s = userdata;

        if (guard_lease_broken(s->fd))
                return -EINTR;
        if (s->o->cancel && atomic_load(s->o->cancel))
                return -ECANCELED;
        if (s->deadline && now_usec() > s->deadline)
                return -ETIME;
        return 0;
}

static void pass_progress(uint64_t done, void *userdata) {
        PassState *s = userdata;

        if (s->o->progress)
                s->o->progress(s->progress_base + done, s->progress_total, s->o->userdata);
}

static uint64_t host_block_size(int fd) {
        struct statfs sfs;

        if (fstatfs(fd, &sfs) < 0 || sfs.f_bsize <= 0)
                return 4096;
        return (uint64_t) sfs.f_bsize;
}

static int allocated_bytes(int fd, uint64_t *ret) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        *ret = (uint64_t) st.st_blocks * 512;
        return 0;
}

/* Turns a scan's stop reason into the pass result. resume is where the next
 * pass's zero tier starts: the zero tier's own stop offset, or, for a stop
 * before it ran, the resume point this pass started from. */
static void report_stop(PassState *s, int r, const char *tier, uint64_t stop_offset, uint64_t resume) {
        PassReport *rep = s->rep;

        rep->resume_offset = resume;
        switch (r) {
        case -EINTR:
                pass_report_set(rep, PASS_SKIPPED_IN_USE,
                           "stopped: another process opened the image during the %s tier (at file offset 0x%" PRIx64 ")",
                           tier, stop_offset);
                break;
        case -ECANCELED:
                pass_report_set(rep, PASS_CANCELLED,
                           "cancelled during the %s tier at file offset 0x%" PRIx64 "; the next pass resumes at 0x%" PRIx64,
                           tier, stop_offset, resume);
                break;
        case -ETIME:
                pass_report_set(rep, rep->stale_bytes + rep->zero_bytes + rep->free_bytes > 0 ? PASS_SUCCESS : PASS_NOTHING_TO_DO,
                           "stopped after the maximum pass time in the %s tier at file offset 0x%" PRIx64
                           "; the next pass resumes at 0x%" PRIx64, tier, stop_offset, resume);
                break;
        default:
                pass_report_set(rep, PASS_ERROR, "%s tier at file offset 0x%" PRIx64 ": %s", tier, stop_offset, strerror(-r));
        }
        s->stop_reported = true;
}

static int zero_tier_ranges(const ExtentList *structures, const ExtentList *data,
                            const ExtentList *exclude, uint64_t resume, ExtentList *out) {
        ExtentList all = {}, from = {};
        int r = 0;

        for (size_t i = 0; r >= 0 && i < structures->n; i++)
                r = extent_list_add(&all, structures->items[i].offset, structures->items[i].length);
        for (size_t i = 0; r >= 0 && i < data->n; i++)
                r = extent_list_add(&all, data->items[i].offset, data->items[i].length);
        if (r >= 0) {
                extent_list_normalize(&all);
                r = extent_list_add(&from, resume, UINT64_MAX - resume);
        }
        if (r >= 0) {
                ExtentList tmp = {};
                r = extent_list_intersect(&all, &from, &tmp);
                if (r >= 0)
                        r = extent_list_subtract(&tmp, exclude, out);
                extent_list_done(&tmp);
        }
        extent_list_done(&all);
        extent_list_done(&from);
        return r;
}

/* Checks that refuse or skip the image before anything is touched. */
static bool pass_preflight(PassState *s, const Image *img) {
        const PassOptions *o = s->o;
        PassReport *rep = s->rep;

        if (img->format != IMAGE_FORMAT_VHDX)
                return true;
        if (img->vhdx->log_dirty) {
                pass_report_set(rep, PASS_SKIPPED_DIRTY_LOG,
                           "the log is not empty (LogGuid is set): open the disk in Hyper-V or qemu once to replay it");
                return false;
        }
        if (img->vhdx->leave_block_allocated && !o->force_fixed) {
                pass_report_set(rep, PASS_SKIPPED_FIXED, "fixed disk (LeaveBlockAllocated is set); use --force to reclaim it anyway");
                return false;
        }
        return true;
}

/* The tiers that punch without reading: stale ranges, then guest free space.
 * The header's GUIDs are renewed first, and only when a free range will
 * really be punched: a pass that changes no guest-visible byte leaves the
 * headers (and so the file's bytes and mtime) alone. */
static int punch_unread_tiers(PassState *s) {
        const PassOptions *o = s->o;
        PassReport *rep = s->rep;
        ScanControl c = s->scan;
        ScanResult sr = {};
        int r;

        c.dry_run = o->dry_run;
        c.hold_until = 0;
        if (s->progress_total > 0)
                c.progress = NULL;      /* committed from within the zero tier: its progress goes on */
        r = scan_punch_ranges(s->fd, s->stale, &c, &sr);
        rep->stale_bytes = sr.punched;
        if (r < 0) {
                report_stop(s, r, "stale", sr.stop_offset, o->resume_offset);
                return r;
        }
        if (!o->dry_run && s->free_estimate > 0) {
                r = free_tier_renew_guids(s->img);
                if (r < 0) {
                        pass_report_set(rep, PASS_ERROR, "renewing the header's DataWriteGuid: %s", strerror(-r));
                        s->stop_reported = true;
                        return r;
                }
        }
        r = free_tier_punch(s->free_tier, s->img, s->fd, &c, o->dry_run, &rep->free_bytes);
        if (r < 0) {
                report_stop(s, r, "free", 0, o->resume_offset);
                return r;
        }
        return 0;
}

static int pass_commit(void *userdata) {
        return punch_unread_tiers(userdata);
}

/* Data bytes that punching these ranges (unread) would free: a dry run of
 * the stale-tier punch, which only seeks. */
static int estimate_unread(PassState *s, const ExtentList *ranges, uint64_t *ret) {
        ScanControl c = s->scan;
        ScanResult sr = {};
        int r;

        c.dry_run = true;
        c.hold_until = 0;
        c.progress = NULL;
        r = scan_punch_ranges(s->fd, ranges, &c, &sr);
        *ret = sr.punched;
        return r;
}

/* minReclaim without reading anything twice. The stale and free tiers cost
 * no reading, so their size is known up front; when it already reaches
 * minReclaim the pass punches as it goes. Otherwise the zero tier's scan
 * holds back the runs it finds until the total reaches minReclaim, and only
 * then are the stale, free and held zero ranges punched, the scan going on
 * punching as it reads. A pass that ends (or reaches maxPassTime) below it
 * has punched nothing: skipped-threshold. */
static uint64_t hold_for_threshold(PassState *s, uint64_t stale_estimate) {
        const PassOptions *o = s->o;
        uint64_t unread = stale_estimate + s->free_estimate;

        if (o->min_reclaim == 0 || o->dry_run || unread >= o->min_reclaim)
                return 0;
        return o->min_reclaim - unread;
}

static void report_threshold(PassState *s, const ScanResult *sr, uint64_t stale_estimate, int r) {
        PassReport *rep = s->rep;
        uint64_t total;

        rep->stale_bytes = stale_estimate;
        rep->free_bytes = s->free_estimate;
        rep->zero_bytes = sr->held;
        total = stale_estimate + s->free_estimate + sr->held;
        if (r == -ETIME) {
                /* This pass judged [resume, stop): the round goes on from there. */
                rep->resume_offset = sr->stop_offset;
                pass_report_set(rep, PASS_SKIPPED_THRESHOLD,
                                "stopped after the maximum pass time at file offset 0x%" PRIx64 " having found %" PRIu64
                                " bytes, less than minReclaim (%" PRIu64 "); nothing punched, the next pass resumes there",
                                sr->stop_offset, total, s->o->min_reclaim);
        } else {
                /* A whole round judged: the next one starts from the beginning. */
                rep->resume_offset = 0;
                pass_report_set(rep, PASS_SKIPPED_THRESHOLD, "would reclaim %" PRIu64 " bytes, less than minReclaim (%" PRIu64 ")",
                                total, s->o->min_reclaim);
        }
}

static int run_tiers(PassState *s, const ExtentList *structures, const ExtentList *data) {
        const PassOptions *o = s->o;
        PassReport *rep = s->rep;
        ExtentList zero = {};
        ScanControl c = s->scan;
        ScanResult sr = {};
        uint64_t stale_estimate = 0;
        int r;

        rep->stale_bytes = rep->zero_bytes = rep->free_bytes = 0;
        r = estimate_unread(s, s->stale, &stale_estimate);
        if (r >= 0)
                r = estimate_unread(s, &s->free_tier->file_ranges, &s->free_estimate);
        if (r < 0) {
                report_stop(s, r, "stale", 0, o->resume_offset);
                return r;
        }

        c.dry_run = o->dry_run;
        c.hold_until = hold_for_threshold(s, stale_estimate);
        c.commit = pass_commit;
        if (c.hold_until == 0) {
                r = punch_unread_tiers(s);
                if (r < 0)
                        return r;
        }

        r = zero_tier_ranges(structures, data, &s->free_tier->file_ranges, o->resume_offset, &zero);
        if (r < 0) {
                pass_report_set(rep, PASS_ERROR, "computing the zero tier's ranges: %s", strerror(-r));
                s->stop_reported = true;
                return r;
        }
        s->progress_total = extent_list_total(&zero);
        r = scan_punch_zero_runs(s->fd, &zero, &c, &sr);
        extent_list_done(&zero);
        rep->zero_bytes = sr.punched;
        if (s->stop_reported)
                return r < 0 ? r : -EIO;        /* the commit failed and said why */
        if (c.hold_until > 0 && !sr.committed && (r == 0 || r == -ETIME)) {
                report_threshold(s, &sr, stale_estimate, r);
                return -EALREADY;
        }
        if (r < 0) {
                /* Stopped before anything was punched: nothing moved on. */
                report_stop(s, r, "zero", sr.stop_offset,
                            c.hold_until > 0 && !sr.committed ? o->resume_offset : sr.stop_offset);
                return r;
        }
        rep->resume_offset = 0;
        return 0;
}

/* After the tiers: blocks that now read as zeros leave the BAT, live blocks
 * move down and the file is cut (compact.h). A stop leaves a valid image. */
static int pass_compact(PassState *s, Image *img, const FreeTier *free_tier) {
        PassReport *rep = s->rep;
        CompactControl c = {
                .dry_run = s->o->dry_run,
                .check = pass_check,
                .userdata = s,
                .known_zero = s->o->dry_run ? &free_tier->file_ranges : NULL,
        };
        CompactResult res;
        const char *why = NULL;
        int r;

        rep->compact = true;
        rep->file_size_after = rep->file_size;
        if (img->format != IMAGE_FORMAT_VHDX)
                return 0;       /* a raw image has no blocks to move; the tiers did it all */
        if (free_tier->skipped_differencing && !img->vhdx->has_parent) {
                /* A child reads through this file's blocks: leave them where they are. */
                rep->compact = false;
                return 0;
        }
        r = compact_vhdx(img->vhdx, s->fd, &c, &res, &why);
        rep->file_size_after = res.file_size_after;
        rep->compacted = res.file_size_before - res.file_size_after;
        rep->blocks_moved = res.blocks_moved;
        if (r == -EOPNOTSUPP) {
                rep->compact = false;
                pass_report_set(rep, img->vhdx->has_parent ? PASS_SKIPPED_DIFFERENCING : PASS_SKIPPED_FIXED,
                                "not compacted: %s", why);
                return r;
        }
        if (r < 0) {
                if (r == -EINTR || r == -ECANCELED || r == -ETIME)
                        report_stop(s, r, "compaction", 0, s->o->resume_offset);
                else
                        pass_report_set(rep, PASS_ERROR, "compaction stopped at BAT entry %" PRIu64 ": %s; the image is valid",
                                        res.stop_block, strerror(-r));
                return r;
        }
        return res.blocks_zeroed + res.blocks_moved > 0 || rep->compacted > 0;
}

/* minReclaim counts what compaction wins too: a pass whose punching alone
 * stays below it (a disk punched before, say) still compacts when the file
 * would shrink by at least that much. Nothing was punched: the report's
 * figures were estimates, and it goes on as a pass that punched nothing.
 * Returns 0 to go on compacting, -EALREADY to stay skipped-threshold. */
static int compact_past_threshold(PassState *s, Image *img) {
        CompactControl c = { .dry_run = true, .check = pass_check, .userdata = s };
        CompactResult res;
        const char *why = NULL;

        if (img->format != IMAGE_FORMAT_VHDX || compact_vhdx(img->vhdx, s->fd, &c, &res, &why) < 0 ||
            res.file_size_before - res.file_size_after < s->o->min_reclaim)
                return -EALREADY;
        s->rep->stale_bytes = s->rep->zero_bytes = s->rep->free_bytes = 0;
        return 0;
}

static void pass_on_image(PassState *s, Image *img) {
        PassReport *rep = s->rep;
        ExtentList structures = {}, data = {}, stale = {};
        _cleanup_(free_tier_done) FreeTier free_tier = {};
        int r;

        if (!pass_preflight(s, img))
                return;

        r = image_file_ranges(img, &structures, &data, &stale);
        if (r < 0) {
                pass_report_set(rep, PASS_ERROR, "computing the file layout: %s", strerror(-r));
                goto finish;
        }

        r = free_tier_prepare(&free_tier, img, s->o->discard == DISCARD_FREE, s->o->related_images, rep);
        if (r <= 0)
                goto finish;    /* the report says why */

        s->img = img;
        s->stale = &stale;
        s->free_tier = &free_tier;
        s->progress_base = 0;
        r = run_tiers(s, &structures, &data);
        if (r == -EALREADY && s->o->compact)
                r = compact_past_threshold(s, img);
        if (r < 0)
                goto finish;    /* run_tiers() reported the stop */

        bool compacted = false;
        if (s->o->compact) {
                r = pass_compact(s, img, &free_tier);
                if (r < 0)
                        goto finish;    /* pass_compact() reported it */
                compacted = r > 0;
        }

        if (rep->stale_bytes + rep->zero_bytes + rep->free_bytes > 0 || compacted)
                pass_report_set(rep, PASS_SUCCESS, "%s", free_tier.note ? free_tier.note : "");
        else if (free_tier.skipped_differencing)
                pass_report_set(rep, PASS_SKIPPED_DIFFERENCING, "%s", free_tier.note);
        else
                pass_report_set(rep, PASS_NOTHING_TO_DO, "%s", free_tier.note ? free_tier.note : "");
finish:
        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
}

/* For a skipped image the sizes still say something: stat() opens nothing. */
static void report_sizes_from_path(PassReport *rep, const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return;
        rep->file_size = (uint64_t) st.st_size;
        rep->allocated_before = rep->allocated_after = (uint64_t) st.st_blocks * 512;
}

static uint64_t options_settings(const PassOptions *o, uint64_t held_by) {
        return fingerprint_settings(o->discard, o->min_hole, held_by, o->force_fixed, o->compact);
}

/* The image is as `was` recorded it (settings aside, the caller's
 * business): an fstat and, for a VHDX, the two 32-byte header starts. */
static bool image_as_recorded(PassState *s, const Fingerprint *was, Fingerprint *ret_now) {
        *ret_now = (Fingerprint) { .settings = was->settings };
        return fingerprint_take(s->fd, was->vhdx, ret_now) >= 0 && fingerprint_equal(was, ret_now);
}

/* The shortcut: the image is as our last complete pass left it, so a full
 * pass would find nothing new. Reads only the two VHDX header starts. */
static bool pass_unchanged(PassState *s) {
        const Fingerprint *was = s->o->unchanged_since;
        PassReport *rep = s->rep;
        Fingerprint now = {};
        char when[64] = "";
        struct tm tm;
        time_t t;

        if (!was || s->o->dry_run)
                return false;
        /* It punched all it found, or this same minReclaim held it back. */
        if (was->settings != options_settings(s->o, 0) && was->settings != options_settings(s->o, s->o->min_reclaim))
                return false;
        if (!image_as_recorded(s, was, &now))
                return false;
        t = (time_t) (was->pass_time / 1000000);
        if (gmtime_r(&t, &tm))
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        pass_report_set(rep, PASS_NOTHING_TO_DO, "unchanged since the pass of %s", when);
        rep->unchanged = true;
        rep->file_size = now.size;
        rep->allocated_before = now.allocated;
        rep->resume_offset = 0;
        rep->have_fingerprint = true;
        rep->fingerprint = *was;
        return true;
}

/* The image is as the pass that stopped at resume_offset left it: resuming
 * there skips nothing that changed. Settings aside: where the zero tier got
 * to holds whatever the discard mode. */
static bool pass_resume_holds(PassState *s) {
        const Fingerprint *was = s->o->resume_since;
        Fingerprint now = {};

        if (!was || s->o->resume_offset == 0)
                return true;
        return image_as_recorded(s, was, &now);
}

/* A pass that judged the whole image: the next one may start from here. */
static bool pass_judged_all(const PassState *s) {
        const PassReport *rep = s->rep;

        return !s->o->dry_run && rep->format_known && rep->resume_offset == 0 &&
               (rep->result == PASS_SUCCESS || rep->result == PASS_NOTHING_TO_DO ||
                rep->result == PASS_SKIPPED_THRESHOLD);
}

/* A pass that stopped on its way (maxPassTime, cancel, shutdown, an opener)
 * and says where the next one resumes. */
static bool pass_stopped_midway(const PassState *s) {
        const PassReport *rep = s->rep;

        return !s->o->dry_run && rep->format_known && rep->resume_offset > 0 &&
               !pass_result_is_failure(rep->result);
}

/* An image that was not parsed (skipped or refused) still has a format by
 * its configuration or its name, and a raw one's virtual size is its size. */
static void report_what_is_known(PassReport *rep, const char *path, DiskFormat format) {
        DiskFormat f = format != DISK_FORMAT_AUTO ? format : image_format_from_name(path);

        if (rep->format_known || f == DISK_FORMAT_AUTO)
                return;
        rep->format = f == DISK_FORMAT_VHDX ? IMAGE_FORMAT_VHDX : IMAGE_FORMAT_RAW;
        rep->format_known = true;
        if (rep->format == IMAGE_FORMAT_RAW)
                rep->virtual_size = rep->file_size;
}

/* Rule 6, before anything is opened: where a lease cannot see every opener,
 * taking one would prove nothing. */
static bool pass_host_fs_safe(PassState *s, const char *path, dev_t *ret_dev) {
        _cleanup_free_ char *why = NULL;
        int r;

        /* No device matches (dev_t) -1: if path could not be examined, the
         * open says why, or, should it succeed meanwhile, counts as a
         * replaced file. */
        *ret_dev = (dev_t) -1;
        r = hostfs_check(path, s->o->local_mounts, s->o->n_local_mounts, ret_dev, &why);
        if (r <= 0)
                return true;
        pass_report_set(s->rep, PASS_SKIPPED_UNSAFE_FS, "%s", why ?: "network or shared file system");
        report_sizes_from_path(s->rep, path);
        report_what_is_known(s->rep, path, s->o->format);
        return false;
}

static bool fd_on_device(int fd, dev_t dev) {
        struct stat st;

        return fstat(fd, &st) >= 0 && st.st_dev == dev;
}

static void pass_open_and_run(PassState *s, const char *path) {
        const PassOptions *o = s->o;
        PassOptions from_start;         /* o, resumed from 0 when the image changed since the stop */
        PassReport *rep = s->rep;
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        dev_t dev;
        int r;

        /* Before any open: a directory, device or FIFO is refused as
         * --inspect refuses it, not as a lease that cannot be taken. */
        r = image_check_regular(path, &error);
        if (r == -EBADMSG) {
                pass_report_set(rep, PASS_REFUSED_INVALID, "%s", error);
                return;
        }

        if (!pass_host_fs_safe(s, path, &dev))
                return;
        r = guard_open_leased(path, !o->dry_run, o->beneath, &fd);
        if (r >= 0 && !fd_on_device(fd, dev))
                r = -ESTALE;    /* the path now leads elsewhere than what was checked */
        if (r == -EBUSY) {
                pass_report_set(rep, PASS_SKIPPED_IN_USE, "another process has the image open");
                report_sizes_from_path(rep, path);
                report_what_is_known(rep, path, o->format);
                return;
        }
        if (r == -ESTALE) {
                pass_report_set(rep, PASS_SKIPPED_IN_USE, "the image was replaced while it was being opened");
                return;
        }
        if (r == -ELOOP && o->beneath) {
                pass_report_set(rep, PASS_REFUSED_INVALID,
                                "%s is or lies in a symbolic link below its watched folder: an image found in a "
                                "watched folder is not followed elsewhere", path);
                return;
        }
        if (r < 0) {
                pass_report_set(rep, PASS_ERROR, r == -EACCES || r == -EPERM ?
                                "cannot take a write lease on the image (needs its owner or CAP_LEASE): %s" :
                                "cannot open the image or take a write lease on it: %s", strerror(-r));
                return;
        }
        s->fd = fd;

        r = allocated_bytes(fd, &rep->allocated_before);
        if (r >= 0 && pass_unchanged(s)) {
                rep->allocated_after = rep->allocated_before;
                guard_release(fd);
                return;
        }
        if (r >= 0 && !pass_resume_holds(s)) {
                from_start = *o;
                from_start.resume_offset = 0;
                s->o = o = &from_start;
                rep->resume_offset = 0;
        }
        if (r >= 0)
                r = image_open(fd, path, o->format, &img, &error);
        if (r < 0) {
                if (r == -EBADMSG || r == -EOPNOTSUPP)
                        pass_report_set(rep, PASS_REFUSED_INVALID, "%s", error ? error : strerror(-r));
                else
                        pass_report_set(rep, PASS_ERROR, "reading the image: %s", error ? error : strerror(-r));
                report_sizes_from_path(rep, path);
                report_what_is_known(rep, path, o->format);
        } else {
                rep->format = img->format;
                rep->format_known = true;
                rep->virtual_size = img->virtual_size;
                rep->file_size = img->file_size;

                s->scan.align = host_block_size(fd);
                s->scan.min_hole = ALIGN_UP(MAX(o->min_hole, s->scan.align), s->scan.align);
                s->scan.io_limit = o->io_limit;
                s->scan.check = pass_check;
                s->scan.progress = pass_progress;
                s->scan.userdata = s;
                img->check = pass_check;
                img->check_userdata = s;

                pass_on_image(s, img);
                image_free(img);
        }

        /* Still under the lease, after our own punches and header updates
         * (their ctime, allocated bytes and sequence numbers): an opener
         * waits for the release, so nothing else is in it. Taken before an
         * opener waiting on a broken lease goes on (an fstat and two
         * 32-byte reads): whatever it does next then shows as a change. */
        bool broken = guard_lease_broken(fd);
        if (pass_judged_all(s) || pass_stopped_midway(s)) {
                rep->fingerprint = (Fingerprint) {
                        .settings = options_settings(o, rep->result == PASS_SKIPPED_THRESHOLD ? o->min_reclaim : 0),
                };
                rep->have_fingerprint =
                        fingerprint_take(fd, rep->format == IMAGE_FORMAT_VHDX, &rep->fingerprint) >= 0;
        }
        /* An opener waiting on a broken lease gets it first: what was
         * punched is in the page cache already, so it sees the same bytes
         * whether or not they are on disk yet. */
        if (broken)
                guard_release(fd);
        if (!o->dry_run && rep->stale_bytes + rep->zero_bytes + rep->free_bytes > 0 && fsync(fd) < 0 &&
            !pass_result_is_failure(rep->result))
                pass_report_set(rep, PASS_ERROR, "fsync: %s", strerror(errno));
        guard_release(fd);
        if (allocated_bytes(fd, &rep->allocated_after) < 0)
                rep->allocated_after = rep->allocated_before;
        rep->reclaimed = rep->allocated_before > rep->allocated_after ? rep->allocated_before - rep->allocated_after : 0;
}

int pass_run(const char *path, const PassOptions *o, PassReport *rep) {
        PassState s = { .o = o, .rep = rep, .fd = -1 };
        uint64_t start = now_usec();

        /* A pass that ends early keeps the resume point it started from. */
        *rep = (PassReport) { .dry_run = o->dry_run, .result = PASS_ERROR, .resume_offset = o->resume_offset };
        rep->path = strdup(path);
        if (!rep->path)
                return -ENOMEM;
        if (o->max_pass_usec > 0)
                s.deadline = start + o->max_pass_usec;

        pass_open_and_run(&s, path);

        rep->duration_ms = (now_usec() - start) / 1000;
        if (!rep->message)
                pass_report_set(rep, rep->result, "%s", "");
        return rep->message ? 0 : -ENOMEM;
}

void pass_options_done(PassOptions *o) {
        if (o->related_images)
                for (char **p = o->related_images; *p; p++)
                        free(*p);
        free(o->related_images);
        o->related_images = NULL;
}

void pass_report_done(PassReport *rep) {
        free(rep->path);
        free(rep->filesystem);
        free(rep->message);
        *rep = (PassReport) {};
}
