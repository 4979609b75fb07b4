/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


#include "macro.h"
#include "ntfs3g.h"
#include "ntfsio.h"

struct NtfsIo {
        VDisk *disk;
        uint64_t offset;
        uint64_t size;
        int64_t pos;                    /* for seek() and read() */
        int error;                      /* first failed VDisk read, negative errno */
        unsigned writes_refused;
};

static NtfsIo *io_of(struct ntfs_device *dev) {
        return dev->d_private;
}

static int nio_open(struct ntfs_device *dev, int flags) {
        if ((flags & O_ACCMODE) != O_RDONLY) {
                io_of(dev)->writes_refused++;
                errno = EROFS;
                return -1;
        }
        if (NDevOpen(dev)) {
                errno = EBUSY;
                return -1;
        }
        io_of(dev)->pos = 0;
        NDevSetOpen(dev);
        NDevSetReadOnly(dev);
        return 0;
}

static int nio_close(struct ntfs_device *dev) {
        if (!NDevOpen(dev)) {
                errno = EBADF;
                return -1;
        }
        NDevClearOpen(dev);
        return 0;
}

static s64 nio_seek(struct ntfs_device *dev, s64 offset, int whence) {
        NtfsIo *io = io_of(dev);
        int64_t base;

        switch (whence) {
        case SEEK_SET:
                base = 0;
                break;
        case SEEK_CUR:
                base = io->pos;
                break;
        case SEEK_END:
                base = (int64_t) io->size;
                break;
        default:
                errno = EINVAL;
                return -1;
        }
        if ((offset < 0 && base + offset < 0) || (offset > 0 && offset > INT64_MAX - base)) {
                errno = EINVAL;
                return -1;
        }
        io->pos = base + offset;
        return io->pos;
}

/* Past the volume end reads are short (0 at the end): libntfs-3g probes the
 * device size that way. */
static s64 nio_pread(struct ntfs_device *dev, void *buf, s64 count, s64 offset) {
        NtfsIo *io = io_of(dev);
        uint64_t len;
        int r;

        if (count < 0 || offset < 0) {
                errno = EINVAL;
                return -1;
        }
        /* After one failure nothing more is read: a broken lease means
         * stop all I/O now. The library sees EIO, never EINTR or EAGAIN,
         * which its pread loop would retry forever; the real errno stays in
         * io->error for ntfs_io_error(). */
        if (io->error != 0) {
                errno = EIO;
                return -1;
        }
        if ((uint64_t) offset >= io->size || count == 0)
                return 0;
        len = MIN((uint64_t) count, io->size - (uint64_t) offset);
        r = vdisk_read(io->disk, buf, len, io->offset + (uint64_t) offset);
        if (r < 0) {
                io->error = r;
                errno = EIO;
                return -1;
        }
        return (s64) len;
}

static s64 nio_read(struct ntfs_device *dev, void *buf, s64 count) {
        NtfsIo *io = io_of(dev);
        s64 n = nio_pread(dev, buf, count, io->pos);

        if (n > 0)
                io->pos += n;
        return n;
}

static s64 nio_write(struct ntfs_device *dev, const void *buf, s64 count) {
        io_of(dev)->writes_refused++;
        errno = EROFS;
        return -1;
}

static s64 nio_pwrite(struct ntfs_device *dev, const void *buf, s64 count, s64 offset) {
        io_of(dev)->writes_refused++;
        errno = EROFS;
        return -1;
}

/* Nothing is buffered, nothing is written. */
static int nio_sync(struct ntfs_device *dev) {
        return 0;
}

static int nio_stat(struct ntfs_device *dev, struct stat *st) {
        *st = (struct stat) {
                .st_mode = S_IFREG | 0444,
                .st_size = (off_t) io_of(dev)->size,
                .st_blksize = 4096,
        };
        return 0;
}

/* Not a block device: the library falls back to probing with reads. */
static int nio_ioctl(struct ntfs_device *dev, unsigned long request, void *argp) {
        errno = ENOTTY;
        return -1;
}

static struct ntfs_device_operations nio_ops = {
        .open = nio_open,
        .close = nio_close,
        .seek = nio_seek,
        .read = nio_read,
        .write = nio_write,
        .pread = nio_pread,
        .pwrite = nio_pwrite,
        .sync = nio_sync,
        .stat = nio_stat,
        .ioctl = nio_ioctl,
};

int ntfs_io_new(VDisk *d, uint64_t offset, uint64_t size, NtfsIo **ret_io, struct ntfs_device **ret_dev) {
        _cleanup_free_ NtfsIo *io = NULL;
        struct ntfs_device *dev;
        char name[64];

        if (offset > d->size || size > d->size - offset || size > INT64_MAX)
                return -EINVAL;
        io = calloc(1, sizeof *io);
        if (!io)
                return -ENOMEM;
        *io = (NtfsIo) { .disk = d, .offset = offset, .size = size };
        /* The name only shows in the library's messages. */
        snprintf(name, sizeof name, "vdisk@0x%llx", (unsigned long long) offset);
        dev = ntfs_device_alloc(name, 0, &nio_ops, io);
        if (!dev)
                return -ENOMEM;
        *ret_io = TAKE_PTR(io);
        *ret_dev = dev;
        return 0;
}

void ntfs_io_free(NtfsIo *io) {
        free(io);
}

int ntfs_io_error(const NtfsIo *io) {
        return io->error;
}

unsigned ntfs_io_writes_refused(const NtfsIo *io) {
        return io->writes_refused;
}
