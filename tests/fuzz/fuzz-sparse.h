/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* A disk image described compactly, so that fuzz inputs and seed corpora
 * stay a few KB although the images they stand for are megabytes (a VHDX
 * has its structures spread over at least 3 MiB, mostly zeros):
 *
 *   bytes 0-7   image size, little-endian (each target clamps it)
 *   byte  8     flags, meaning chosen by the target (e.g. "fix checksums")
 *   then        patches until the input ends, each
 *                 4 bytes  offset, little-endian
 *                 2 bytes  length n, little-endian
 *                 n bytes  the bytes at that offset (cut short at the end
 *                          of the input)
 *
 * Everything not patched reads as zero; later patches win over earlier ones,
 * and bytes past the image size are ignored. The image is never
 * materialised: reads compose the patches, so a huge size costs nothing.
 * tests/fuzz/sparse-encode.py turns a real image file into this form. */

typedef struct SparsePatch {
        uint64_t offset;
        size_t length;
        uint8_t *bytes;         /* owned */
} SparsePatch;

typedef struct SparseImage {
        uint64_t size;
        uint8_t flags;
        SparsePatch *patches;
        size_t n_patches;
} SparseImage;

/* Decodes; size is clamped to max_size. Returns 0, -EINVAL when the input
 * is shorter than its 9-byte head, or -ENOMEM. */
int sparse_image_decode(const uint8_t *data, size_t len, uint64_t max_size, SparseImage *ret);
void sparse_image_done(SparseImage *img);

/* Reads [offset, offset+len), which must lie inside the image: -EIO if not. */
int sparse_image_read(const SparseImage *img, void *buf, size_t len, uint64_t offset);

/* Appends a patch (used to repair checksums after decoding). */
int sparse_image_patch(SparseImage *img, uint64_t offset, const void *bytes, size_t len);

/* For VhdxSource.pread and VDisk.read: userdata is a SparseImage. */
int sparse_image_pread(void *userdata, void *buf, size_t len, uint64_t offset);
