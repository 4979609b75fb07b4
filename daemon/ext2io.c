/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext2io.h"
#include "macro.h"

typedef struct Ext2IoChannel {
        VDisk *disk;
        uint64_t offset;
        uint64_t size;
        int error;                      /* first failed VDisk read, negative errno */
        struct struct_io_stats stats;
} Ext2IoChannel;

static int parse_name(const char *name, VDisk **ret_disk, uint64_t *ret_offset, uint64_t *ret_size) {
        void *p = NULL;
        uint64_t offset, size;
        int end = -1;

        if (sscanf(name, "vdisk:%p:%" SCNu64 ":%" SCNu64 "%n", &p, &offset, &size, &end) != 3 ||
            end < 0 || name[end] != '\0' || !p)
                return -EINVAL;
        *ret_disk = p;
        *ret_offset = offset;
        *ret_size = size;
        return 0;
}

int ext2io_format_name(VDisk *d, uint64_t offset, uint64_t size, char *buf, size_t buf_size) {
        int n = snprintf(buf, buf_size, "vdisk:%p:%" PRIu64 ":%" PRIu64, (void *) d, offset, size);

        if (n < 0 || (size_t) n >= buf_size)
                return -ENOBUFS;
        return 0;
}

static errcode_t ext2io_close(io_channel ch) {
        if (--ch->refcount > 0)
                return 0;
        free(ch->private_data);
        free(ch->name);
        free(ch);
        return 0;
}

static errcode_t ext2io_open(const char *name, int flags, io_channel *ret) {
        _cleanup_free_ Ext2IoChannel *c = NULL;
        _cleanup_free_ char *n = NULL;
        io_channel ch;
        VDisk *disk;
        uint64_t offset, size;

        if (flags & IO_FLAG_RW)
                return EROFS;
        if (!name || parse_name(name, &disk, &offset, &size) < 0)
                return EXT2_ET_BAD_DEVICE_NAME;
        if (offset > disk->size || size > disk->size - offset)
                return EXT2_ET_BAD_DEVICE_NAME;

        c = calloc(1, sizeof *c);
        n = strdup(name);
        ch = calloc(1, sizeof *ch);
        if (!c || !n || !ch) {
                free(ch);
                return EXT2_ET_NO_MEMORY;
        }
        *c = (Ext2IoChannel) {
                .disk = disk,
                .offset = offset,
                .size = size,
                .stats.num_fields = 2,
        };
        *ch = (struct struct_io_channel) {
                .magic = EXT2_ET_MAGIC_IO_CHANNEL,
                .manager = ext2io_manager(),
                .name = TAKE_PTR(n),
                .block_size = 1024,
                .refcount = 1,
                .flags = flags,
                .private_data = TAKE_PTR(c),
        };
        *ret = ch;
        return 0;
}

static errcode_t ext2io_set_blksize(io_channel ch, int blksize) {
        if (blksize <= 0)
                return EXT2_ET_INVALID_ARGUMENT;
        ch->block_size = blksize;
        return 0;
}

/* count > 0 is in blocks, count < 0 in bytes (libext2fs's convention). */
static errcode_t ext2io_read_blk64(io_channel ch, unsigned long long block, int count, void *data) {
        Ext2IoChannel *c = ch->private_data;
        uint64_t bs = (uint64_t) ch->block_size, len, pos, avail;
        errcode_t e = 0;
        int r;

        len = count < 0 ? (uint64_t) -(int64_t) count : (uint64_t) count * bs;
        if (block > UINT64_MAX / bs)
                return EXT2_ET_LLSEEK_FAILED;
        pos = block * bs;
        avail = pos >= c->size ? 0 : MIN(len, c->size - pos);

        if (avail > 0) {
                r = vdisk_read(c->disk, data, avail, c->offset + pos);
                if (r < 0) {
                        if (c->error == 0)
                                c->error = r;
                        memset(data, 0, len);
                        e = -r;
                }
        }
        /* Past the partition end: nothing of this file system is there. */
        if (e == 0 && avail < len) {
                memset((uint8_t *) data + avail, 0, len - avail);
                e = EXT2_ET_SHORT_READ;
        }
        if (e != 0 && ch->read_error)
                return ch->read_error(ch, block, count, data, len, e == EXT2_ET_SHORT_READ ? (int) avail : 0, e);
        if (e == 0)
                c->stats.bytes_read += len;
        return e;
}

static errcode_t ext2io_read_blk(io_channel ch, unsigned long block, int count, void *data) {
        return ext2io_read_blk64(ch, block, count, data);
}

static errcode_t ext2io_write_blk(io_channel ch, unsigned long block, int count, const void *data) {
        return EROFS;
}

static errcode_t ext2io_write_blk64(io_channel ch, unsigned long long block, int count, const void *data) {
        return EROFS;
}

static errcode_t ext2io_write_byte(io_channel ch, unsigned long offset, int count, const void *data) {
        return EROFS;
}

static errcode_t ext2io_discard(io_channel ch, unsigned long long block, unsigned long long count) {
        return EROFS;
}

static errcode_t ext2io_zeroout(io_channel ch, unsigned long long block, unsigned long long count) {
        return EROFS;
}

/* Nothing is buffered. */
static errcode_t ext2io_flush(io_channel ch) {
        return 0;
}

static errcode_t ext2io_set_option(io_channel ch, const char *option, const char *arg) {
        return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t ext2io_get_stats(io_channel ch, io_stats *ret) {
        Ext2IoChannel *c = ch->private_data;

        if (ret)
                *ret = &c->stats;
        return 0;
}

static const struct struct_io_manager ext2io_ops = {
        .magic = EXT2_ET_MAGIC_IO_MANAGER,
        .name = "vhdreclaim VDisk I/O manager",
        .open = ext2io_open,
        .close = ext2io_close,
        .set_blksize = ext2io_set_blksize,
        .read_blk = ext2io_read_blk,
        .write_blk = ext2io_write_blk,
        .flush = ext2io_flush,
        .write_byte = ext2io_write_byte,
        .set_option = ext2io_set_option,
        .get_stats = ext2io_get_stats,
        .read_blk64 = ext2io_read_blk64,
        .write_blk64 = ext2io_write_blk64,
        .discard = ext2io_discard,
        .zeroout = ext2io_zeroout,
};

io_manager ext2io_manager(void) {
        /* libext2fs takes a non-const pointer but never writes through it. */
        return (io_manager) &ext2io_ops;
}

int ext2io_channel_error(io_channel ch) {
        if (!ch || ch->manager != ext2io_manager())
                return 0;
        return ((Ext2IoChannel *) ch->private_data)->error;
}
