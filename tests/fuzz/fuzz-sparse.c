/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-sparse.h"
#include "macro.h"

#define HEAD_SIZE 9
#define PATCH_HEAD_SIZE 6

static uint64_t load_le64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return le64toh(v);
}

static uint32_t load_le32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return le32toh(v);
}

static uint16_t load_le16(const uint8_t *p) {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        return le16toh(v);
}

int sparse_image_patch(SparseImage *img, uint64_t offset, const void *bytes, size_t len) {
        SparsePatch *n;
        uint8_t *copy;

        if (len == 0)
                return 0;
        copy = malloc(len);
        if (!copy)
                return -ENOMEM;
        n = reallocarray(img->patches, img->n_patches + 1, sizeof *n);
        if (!n) {
                free(copy);
                return -ENOMEM;
        }
        memcpy(copy, bytes, len);
        img->patches = n;
        img->patches[img->n_patches++] = (SparsePatch) { offset, len, copy };
        return 0;
}

int sparse_image_decode(const uint8_t *data, size_t len, uint64_t max_size, SparseImage *ret) {
        size_t pos = HEAD_SIZE;
        int r;

        *ret = (SparseImage) {};
        if (len < HEAD_SIZE)
                return -EINVAL;
        ret->size = MIN(load_le64(data), max_size);
        ret->flags = data[8];

        while (len - pos >= PATCH_HEAD_SIZE) {
                uint64_t offset = load_le32(data + pos);
                size_t n = MIN((size_t) load_le16(data + pos + 4), len - pos - PATCH_HEAD_SIZE);

                r = sparse_image_patch(ret, offset, data + pos + PATCH_HEAD_SIZE, n);
                if (r < 0) {
                        sparse_image_done(ret);
                        return r;
                }
                pos += PATCH_HEAD_SIZE + n;
        }
        return 0;
}

void sparse_image_done(SparseImage *img) {
        for (size_t i = 0; i < img->n_patches; i++)
                free(img->patches[i].bytes);
        free(img->patches);
        *img = (SparseImage) {};
}

int sparse_image_read(const SparseImage *img, void *buf, size_t len, uint64_t offset) {
        uint64_t end = offset + len;

        if (offset > img->size || len > img->size - offset)
                return -EIO;
        memset(buf, 0, len);
        for (size_t i = 0; i < img->n_patches; i++) {
                const SparsePatch *p = &img->patches[i];
                uint64_t from = MAX(offset, p->offset), to = MIN(end, p->offset + p->length);

                if (from < to)
                        memcpy((uint8_t *) buf + (from - offset), p->bytes + (from - p->offset), to - from);
        }
        return 0;
}

int sparse_image_pread(void *userdata, void *buf, size_t len, uint64_t offset) {
        return sparse_image_read(userdata, buf, len, offset);
}
