/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdint.h>

#include "config.h"
#include "extent.h"
#include "vdisk.h"
#include "vhdx.h"

/* A format-independent view of one image file, read through the pass's one
 * descriptor: which file ranges hold what, and the virtual disk inside. */

typedef enum ImageFormat {
        IMAGE_FORMAT_RAW,
        IMAGE_FORMAT_VHDX,
} ImageFormat;

typedef struct Image {
        int fd;                 /* borrowed: the pass owns it */
        ImageFormat format;
        uint64_t file_size;
        uint64_t virtual_size;
        Vhdx *vhdx;             /* VHDX only */
        VhdxSource source;
        VDisk vdisk;
        /* Called before every virtual-disk read (the free tier's file system
         * scan): a negative errno fails the read, so a broken lease stops
         * that scan too. May be NULL. */
        int (*check)(void *userdata);
        void *check_userdata;
} Image;

/* Parses the image on fd. A file is what it claims (DESIGN.md, safety rule
 * 7): with format auto, the VHDX signature makes a VHDX, a name ending in
 * .vhdx or .avhdx demands one, and raw needs a raw name (.img, .raw); with
 * vhdx or raw the configuration says which. path is used for its name only.
 * -EBADMSG/-EOPNOTSUPP with *ret_error naming the problem when the file is
 * not an image we can handle safely. */
int image_open(int fd, const char *path, DiskFormat format, Image **ret, char **ret_error);

/* Refuses (-EBADMSG, *ret_error "not a regular file: a directory") what is
 * not a regular file, from stat() alone: nothing is opened, so a FIFO cannot
 * block and a device is not touched. 0 for a regular file; -errno when
 * stat() fails. */
int image_check_regular(const char *path, char **ret_error);

/* What the file's name claims: VHDX for .vhdx/.avhdx, RAW for .img/.raw
 * (any case), AUTO for anything else. */
DiskFormat image_format_from_name(const char *path);
Image *image_free(Image *img);

/* See vhdx_file_ranges(); a raw image is one data range. */
int image_file_ranges(const Image *img, ExtentList *structures, ExtentList *data, ExtentList *stale);
/* Virtual disk ranges to the file ranges that store them (present data only). */
int image_map_virtual_ranges(const Image *img, const ExtentList *virt, ExtentList *out);

const char *image_format_to_string(ImageFormat f);
