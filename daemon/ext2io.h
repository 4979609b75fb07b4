/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <ext2fs/ext2fs.h>

#include "vdisk.h"

/* A read-only libext2fs io_manager that reads a file system through a VDisk,
 * at a byte offset (the partition start) and bounded by the partition size.
 * It has no descriptor of its own: every read goes through the VDisk's read
 * callback. Every write entry point fails with EROFS, and so does opening
 * with IO_FLAG_RW.
 *
 * The channel is named by a string that encodes the VDisk pointer, offset
 * and size (see ext2io_format_name()), so no state is shared between
 * channels. The VDisk must outlive the channel. */

/* Enough for "vdisk:" plus a pointer and two 64-bit numbers. */
#define EXT2IO_NAME_MAX 80

io_manager ext2io_manager(void);

/* Writes the name to pass to ext2fs_open2() with ext2io_manager(). Returns 0
 * or -ENOBUFS when buf is too small. */
int ext2io_format_name(VDisk *d, uint64_t offset, uint64_t size, char *buf, size_t buf_size);

/* The negative errno of the first VDisk read that failed on this channel, or
 * 0; reads past the partition end are not counted (libext2fs gets
 * EXT2_ET_SHORT_READ for them). A caller uses it to tell a damaged file
 * system from a failing disk (e.g. a broken lease). */
int ext2io_channel_error(io_channel ch);
