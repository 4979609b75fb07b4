/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "macro.h"

static int fd_pread_full(void *userdata, void *buf, size_t len, uint64_t offset) {
        int fd = *(int *) userdata;
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = pread(fd, p, len, (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;    /* the file shrank under us */
                p += n;
                len -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

static int image_check(const Image *img) {
        return img->check ? img->check(img->check_userdata) : 0;
}

static int raw_vdisk_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        Image *img = d->userdata;
        int r = image_check(img);

        if (r < 0)
                return r;

        if (offset > img->file_size || len > img->file_size - offset)
                return -EIO;
        return fd_pread_full(&img->fd, buf, len, offset);
}

static int vhdx_vdisk_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        Image *img = d->userdata;
        int r = image_check(img);

        if (r < 0)
                return r;
        return vhdx_read_virtual(img->vhdx, &img->source, buf, len, offset);
}

/* Formats that hold a virtual disk we do not parse: treating them as raw
 * would let the free tier misread them, so they are refused by name. */
static const char *foreign_format(const uint8_t *head, size_t n, const uint8_t *tail512,
                                  uint64_t file_size, uint64_t *ret_offset) {
        *ret_offset = 0;
        if (n >= 4 && memcmp(head, "QFI\xfb", 4) == 0)
                return "qcow2";
        if (n >= 4 && memcmp(head, "KDMV", 4) == 0)
                return "VMDK";
        if (n >= 8 && memcmp(head, "conectix", 8) == 0)
                return "VHD";
        if (n >= 0x44 && head[0x40] == 0x7f && head[0x41] == 0x10 && head[0x42] == 0xda && head[0x43] == 0xbe) {
                *ret_offset = 0x40;
                return "VDI";
        }
        /* A fixed VHD is raw data with its footer in the last 512 bytes. */
        if (tail512 && memcmp(tail512, "conectix", 8) == 0) {
                *ret_offset = file_size - 512;
                return "VHD";
        }
        return NULL;
}

/* A VHDX whose first bytes were damaged must not pass for a raw image: the
 * free tier would then look for file systems in its metadata. */
static bool looks_like_damaged_vhdx(Image *img) {
        uint8_t sig[4];

        if (img->file_size < 192 * 1024 + 4)
                return false;
        if (fd_pread_full(&img->fd, sig, 4, 64 * 1024) < 0 || memcmp(sig, "head", 4) != 0)
                return false;
        return fd_pread_full(&img->fd, sig, 4, 192 * 1024) >= 0 && memcmp(sig, "regi", 4) == 0;
}

static int refuse(char **ret_error, const char *message) {
        if (ret_error)
                *ret_error = strdup(message);
        return -EBADMSG;
}

static const char *file_type_name(mode_t m) {
        return S_ISDIR(m) ? "a directory" : S_ISBLK(m) ? "a block device" : S_ISCHR(m) ? "a character device" :
               S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : S_ISLNK(m) ? "a symbolic link" : "of unknown type";
}

static int refuse_not_regular(mode_t m, char **ret_error) {
        char msg[64];

        snprintf(msg, sizeof msg, "not a regular file: %s", file_type_name(m));
        return refuse(ret_error, msg);
}

int image_check_regular(const char *path, char **ret_error) {
        struct stat st;

        if (stat(path, &st) < 0)
                return -errno;
        return S_ISREG(st.st_mode) ? 0 : refuse_not_regular(st.st_mode, ret_error);
}

static bool has_suffix(const char *s, const char *suffix) {
        size_t n = strlen(s), m = strlen(suffix);

        return n > m && strcasecmp(s + n - m, suffix) == 0;
}

DiskFormat image_format_from_name(const char *path) {
        const char *name = strrchr(path, '/');

        name = name ? name + 1 : path;
        if (has_suffix(name, ".vhdx") || has_suffix(name, ".avhdx"))
                return DISK_FORMAT_VHDX;
        if (has_suffix(name, ".img") || has_suffix(name, ".raw"))
                return DISK_FORMAT_RAW;
        return DISK_FORMAT_AUTO;
}

/* A file without the VHDX signature: why it is not taken as raw, or NULL
 * when it may be. */
static const char *why_not_raw(Image *img, DiskFormat format, DiskFormat by_name) {
        /* Whatever its name or configuration says: the free tier would look
         * for file systems in its metadata. */
        if (looks_like_damaged_vhdx(img))
                return "file type identifier at offset 0x0: signature is not \"vhdxfile\", "
                       "but a VHDX header and region table follow: a damaged VHDX";
        if (format == DISK_FORMAT_VHDX || (format == DISK_FORMAT_AUTO && by_name == DISK_FORMAT_VHDX)) {
                if (img->file_size == 0)
                        return "empty file: a VHDX starts with its file type identifier (\"vhdxfile\" at offset 0x0)";
                return format == DISK_FORMAT_VHDX ?
                        "file type identifier at offset 0x0: signature is not \"vhdxfile\" (format=vhdx)" :
                        "file type identifier at offset 0x0: signature is not \"vhdxfile\": a file named "
                        ".vhdx or .avhdx must be a VHDX (format=raw or --format=raw if it is a raw image)";
        }
        if (format == DISK_FORMAT_AUTO && by_name != DISK_FORMAT_RAW)
                return "not a VHDX (no \"vhdxfile\" signature at offset 0x0), and not named as a raw image: "
                       "an image is raw by its name (.img, .raw) or by format=raw or --format=raw";
        return NULL;
}

int image_open(int fd, const char *path, DiskFormat format, Image **ret, char **ret_error) {
        _cleanup_free_ Image *img = NULL;
        uint8_t head[512] = {}, tail[512] = {};
        struct stat st;
        const char *foreign, *why;
        DiskFormat by_name = image_format_from_name(path);
        size_t n_head;
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return refuse_not_regular(st.st_mode, ret_error);

        img = calloc(1, sizeof *img);
        if (!img)
                return -ENOMEM;
        img->fd = fd;
        img->file_size = (uint64_t) st.st_size;
        img->source = (VhdxSource) { .size = img->file_size, .pread = fd_pread_full, .userdata = &img->fd };

        n_head = (size_t) MIN((uint64_t) sizeof head, img->file_size);
        r = fd_pread_full(&img->fd, head, n_head, 0);
        if (r < 0)
                return r;
        if (img->file_size >= sizeof tail) {
                r = fd_pread_full(&img->fd, tail, sizeof tail, img->file_size - sizeof tail);
                if (r < 0)
                        return r;
        }

        if (n_head >= 8 && vhdx_has_signature(head)) {
                if (format == DISK_FORMAT_RAW)
                        return refuse(ret_error, "format=raw, but the file is a VHDX (signature \"vhdxfile\" at offset 0x0)");
                img->format = IMAGE_FORMAT_VHDX;
                r = vhdx_open(&img->source, &img->vhdx, ret_error);
                if (r < 0)
                        return r;
                img->virtual_size = img->vhdx->virtual_size;
                img->vdisk = (VDisk) { img->virtual_size, img->vhdx->logical_sector_size, vhdx_vdisk_read, NULL };
        } else {
                uint64_t at;

                foreign = foreign_format(head, n_head, img->file_size >= sizeof tail ? tail : NULL,
                                         img->file_size, &at);
                if (foreign) {
                        char m[128];
                        snprintf(m, sizeof m, "%s image (signature at offset 0x%" PRIx64 "): format not supported",
                                 foreign, at);
                        return refuse(ret_error, m);
                }
                why = why_not_raw(img, format, by_name);
                if (why)
                        return refuse(ret_error, why);
                img->format = IMAGE_FORMAT_RAW;
                img->virtual_size = img->file_size;
                img->vdisk = (VDisk) { img->virtual_size, 512, raw_vdisk_read, NULL };
        }

        *ret = TAKE_PTR(img);
        /* The VDisk must point at the Image where it finally lives. */
        (*ret)->vdisk.userdata = *ret;
        (*ret)->source.userdata = &(*ret)->fd;
        return 0;
}

Image *image_free(Image *img) {
        if (!img)
                return NULL;
        vhdx_free(img->vhdx);
        free(img);
        return NULL;
}

int image_file_ranges(const Image *img, ExtentList *structures, ExtentList *data, ExtentList *stale) {
        if (img->format == IMAGE_FORMAT_VHDX)
                return vhdx_file_ranges(img->vhdx, structures, data, stale);
        return extent_list_add(data, 0, img->file_size);
}

int image_map_virtual_ranges(const Image *img, const ExtentList *virt, ExtentList *out) {
        if (img->format == IMAGE_FORMAT_VHDX)
                return vhdx_map_virtual_ranges(img->vhdx, virt, out);
        for (size_t i = 0; i < virt->n; i++) {
                uint64_t off = virt->items[i].offset;
                if (off >= img->file_size)
                        continue;
                int r = extent_list_add(out, off, MIN(virt->items[i].length, img->file_size - off));
                if (r < 0)
                        return r;
        }
        return 0;
}

const char *image_format_to_string(ImageFormat f) {
        return f == IMAGE_FORMAT_VHDX ? "vhdx" : "raw";
}
