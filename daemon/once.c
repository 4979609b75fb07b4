/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compact.h"
#include "fsaware.h"
#include "guard.h"
#include "image.h"
#include "log.h"
#include "macro.h"
#include "once.h"
#include "report.h"
#include "scan.h"

int once_run(const OnceOptions *o, char **images, int n_images) {
        int status = 0;

        for (int i = 0; i < n_images; i++) {
                PassReport rep;
                int r = pass_run(images[i], &o->pass, &rep);
                if (r < 0)
                        return log_error_errno(r, "%s: %m", images[i]), 1;
                if (o->json)
                        report_write_json(&rep, stdout);
                else
                        report_write_text(&rep, stdout);
                fflush(stdout);
                if (pass_result_is_failure(rep.result))
                        status = 1;
                pass_report_done(&rep);
        }
        return status;
}

static void print_sizes(const Image *img, int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return;
        printf("format              %s\n", image_format_to_string(img->format));
        printf("virtual size        %" PRIu64 " bytes\n", img->virtual_size);
        printf("file size           %" PRIu64 " bytes (apparent)\n", (uint64_t) st.st_size);
        printf("allocated           %" PRIu64 " bytes\n", (uint64_t) st.st_blocks * 512);
}

static void print_layout(const Image *img) {
        ExtentList structures = {}, data = {}, stale = {};

        if (image_file_ranges(img, &structures, &data, &stale) >= 0)
                printf("file ranges         structures %" PRIu64 ", present data %" PRIu64 ", stale %" PRIu64 " bytes\n",
                       extent_list_total(&structures), extent_list_total(&data), extent_list_total(&stale));
        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
}

/* What the free tier would punch: allocated file bytes that store guest free space. */
static uint64_t free_tier_allocated(const Image *img, int fd, const ExtentList *free_virtual) {
        ExtentList file = {};
        uint64_t total = 0;

        if (image_map_virtual_ranges(img, free_virtual, &file) >= 0) {
                extent_list_normalize(&file);
                for (size_t i = 0; i < file.n; i++) {
                        uint64_t a = 0;
                        if (scan_allocated_bytes(fd, file.items[i].offset, file.items[i].length, &a) >= 0)
                                total += a;
                }
        }
        extent_list_done(&file);
        return total;
}

/* Prints what the guest file systems hold; *free_file gets the file ranges
 * the free tier would punch (none when it does not apply). */
static void print_file_systems(Image *img, int fd, ExtentList *free_file) {
        FsScan scan = {};
        int r;

        if (img->vhdx && img->vhdx->has_parent) {
                printf("guest file systems  not read: differencing disk (the free tier does not apply)\n");
                return;
        }
        r = fsaware_scan(&img->vdisk, &scan);
        if (r < 0) {
                printf("guest file systems  cannot be read: %s\n", scan.error[0] ? scan.error : strerror(-r));
                return;
        }
        /* Table "none" with a file system on the whole disk is not "no file system". */
        printf("guest file systems  %s%s\n",
               scan.table != PARTITION_TABLE_NONE ? partition_table_kind_to_string(scan.table) :
               scan.n_parts > 0 ? "no partition table" : "none found",
               scan.gpt_backup_used ? " (primary GPT damaged, backup used)" : "");
        for (size_t i = 0; i < scan.n_parts; i++) {
                char line[512];
                fsaware_describe(&scan.parts[i], line, sizeof line);
                printf("  %s\n", line);
        }
        if (scan.ambiguous[0])
                printf("free tier           skipped: %s\n", scan.ambiguous);
        else if (fsaware_first_unclean(&scan))
                printf("free tier           skipped: a file system is not clean\n");
        else {
                printf("free tier           would punch up to %" PRIu64 " bytes (guest free space in allocated file data)\n",
                       free_tier_allocated(img, fd, &scan.free));
                if (image_map_virtual_ranges(img, &scan.free, free_file) >= 0)
                        extent_list_normalize(free_file);
                else
                        extent_list_clear(free_file);
        }
        fsaware_scan_done(&scan);
}

/* How small compaction would make the file: a dry run, which only reads
 * (through this read-only descriptor). The safe tiers' figure is what a pass
 * with --discard=safe reaches; the free tier's ranges read as zeros once
 * punched, so discard=free may reach further. */
static void print_compaction(Image *img, int fd, const ExtentList *free_file) {
        CompactControl c = { .dry_run = true };
        CompactResult res, with_free;
        const char *why = NULL;
        int r;

        if (!img->vhdx) {
                printf("compaction          does not apply: a raw image has no blocks to move\n");
                return;
        }
        if (img->vhdx->log_dirty) {
                printf("compaction          does not apply: the log is not empty\n");
                return;
        }
        r = compact_vhdx(img->vhdx, fd, &c, &res, &why);
        if (r == -EOPNOTSUPP) {
                printf("compaction          does not apply: %s\n", why);
                return;
        }
        if (r < 0) {
                printf("compaction          cannot be estimated: %s\n", strerror(-r));
                return;
        }
        printf("compaction          would take the file from %" PRIu64 " to %" PRIu64 " bytes (%" PRIu64
               " blocks moved, %" PRIu64 " blocks that read as zeros dropped)\n",
               res.file_size_before, res.file_size_after, res.blocks_moved, res.blocks_zeroed);
        if (free_file->n == 0)
                return;
        c.known_zero = free_file;
        if (compact_vhdx(img->vhdx, fd, &c, &with_free, &why) >= 0 && with_free.file_size_after != res.file_size_after)
                printf("                    to %" PRIu64 " bytes (%" PRIu64 " blocks moved) after the free tier (discard=free)\n",
                       with_free.file_size_after, with_free.blocks_moved);
}

int once_inspect(const char *path, DiskFormat format) {
        ExtentList free_file = {};
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        int r;

        /* Before open(): a FIFO would block it, and --once says the same. */
        r = image_check_regular(path, &error);
        if (r == -EBADMSG)
                return log_error("%s: %s", path, error), 1;
        fd = guard_open_image(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return log_error_errno(fd, "%s: cannot open: %m", path), 1;
        r = image_open(fd, path, format, &img, &error);
        if (r < 0) {
                log_error_errno(r, "%s: %s", path, error ? error : strerror(-r));
                return 1;
        }
        printf("path                %s\n", path);
        print_sizes(img, fd);
        if (img->vhdx)
                vhdx_print_inspect(img->vhdx, stdout);
        print_layout(img);
        if (!img->vhdx || !img->vhdx->log_dirty)
                print_file_systems(img, fd, &free_file);
        print_compaction(img, fd, &free_file);
        extent_list_done(&free_file);
        image_free(img);
        return 0;
}
