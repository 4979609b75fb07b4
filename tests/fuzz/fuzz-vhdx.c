/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the VHDX reader on a whole file held in memory.
 *
 * The input is a sparse image (fuzz-sparse.h) of at most 512 MiB: the BAT is
 * read into memory whole, so the size bounds what one input may allocate.
 * Flag bits ask the harness to recompute checksums after decoding, so that
 * mutations get past the CRC-32C checks into the deeper parsing; with a bit
 * clear the stored checksum is used as it is:
 *   0x01 header 1    0x02 header 2    0x04 region table 1    0x08 region table 2
 *
 * Beyond "no crash, no sanitizer report", an image the reader accepts must
 * give a layout in which punching is safe: every range vhdx_file_ranges()
 * returns lies inside the file; data ranges lie inside FULLY_PRESENT payload
 * blocks; stale ranges lie past the header area and touch no structure and no
 * present block; structures and data are disjoint (structures are only ever
 * zero-scanned, so anything the engine punches is dead space, an all-zero run,
 * or inside a payload block). */

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "extent.h"
#include "fuzz-sparse.h"
#include "log.h"
#include "macro.h"
#include "vhdx.h"

#define MAX_IMAGE_SIZE (512 * MiB)
#define CHECKSUMMED_HEADER_OFFSETS { 64 * KiB, 128 * KiB }
#define CHECKSUMMED_TABLE_OFFSETS { 192 * KiB, 256 * KiB }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a finding: abort so that libFuzzer saves the input. */
#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

static void fix_checksum(SparseImage *img, uint64_t offset, size_t len) {
        uint8_t *buf;
        uint32_t crc;

        if (offset + len > img->size)
                return;
        buf = malloc(len);
        if (!buf)
                return;
        if (sparse_image_read(img, buf, len, offset) >= 0) {
                memset(buf + 4, 0, 4);
                crc = htole32(crc32c(buf, len));
                (void) sparse_image_patch(img, offset + 4, &crc, sizeof crc);
        }
        free(buf);
}

static void fix_checksums(SparseImage *img) {
        const uint64_t headers[] = CHECKSUMMED_HEADER_OFFSETS, tables[] = CHECKSUMMED_TABLE_OFFSETS;

        for (unsigned i = 0; i < 2; i++) {
                if (img->flags & (1u << i))
                        fix_checksum(img, headers[i], VHDX_HEADER_SIZE);
                if (img->flags & (4u << i))
                        fix_checksum(img, tables[i], VHDX_REGION_TABLE_SIZE);
        }
}

static void add_clipped(ExtentList *l, uint64_t offset, uint64_t length, uint64_t file_size) {
        if (offset < file_size)
                check(extent_list_add(l, offset, MIN(length, file_size - offset)) >= 0);
}

/* Payload blocks the BAT says are present, computed here from the BAT
 * entries directly rather than through vhdx_file_ranges(). */
static void present_payload(const Vhdx *v, unsigned state, ExtentList *out) {
        for (uint64_t b = 0; b < v->data_blocks; b++)
                if (vhdx_block_state(v, b) == state)
                        add_clipped(out, vhdx_block_file_offset(v, b), v->block_size, v->file_size);
}

/* Everything live: header area, log, regions, present bitmap and payload blocks. */
static void live_ranges(const Vhdx *v, ExtentList *out) {
        const VhdxHeader *h = &v->headers[v->current];

        add_clipped(out, 0, VHDX_HEADER_AREA_SIZE, v->file_size);
        if (h->log_length > 0)
                add_clipped(out, h->log_offset, h->log_length, v->file_size);
        for (size_t i = 0; i < v->n_regions; i++)
                add_clipped(out, v->regions[i].offset, v->regions[i].length, v->file_size);
        for (uint64_t i = 0; i < v->bat_entries; i++) {
                bool bitmap = (i + 1) % (v->chunk_ratio + 1) == 0;
                uint64_t e = vhdx_bat_entry(v, i);
                if ((e & 7) >= VHDX_PAYLOAD_FULLY_PRESENT)
                        add_clipped(out, (e >> 20) * MiB, bitmap ? MiB : v->block_size, v->file_size);
        }
        extent_list_normalize(out);
}

static void check_inside_file(const ExtentList *l, uint64_t file_size) {
        for (size_t i = 0; i < l->n; i++) {
                check(l->items[i].length > 0);
                check(l->items[i].offset <= file_size);
                check(l->items[i].length <= file_size - l->items[i].offset);
        }
}

static void check_disjoint(const ExtentList *a, const ExtentList *b) {
        ExtentList both = {};

        check(extent_list_intersect(a, b, &both) >= 0);
        check(both.n == 0);
        extent_list_done(&both);
}

static void check_covered(const ExtentList *inner, const ExtentList *outer) {
        for (size_t i = 0; i < inner->n; i++)
                check(extent_list_covers(outer, inner->items[i].offset, inner->items[i].length));
}

static void check_layout(const Vhdx *v) {
        ExtentList structures = {}, data = {}, stale = {}, present = {}, live = {};

        check(vhdx_file_ranges(v, &structures, &data, &stale) >= 0);
        check_inside_file(&structures, v->file_size);
        check_inside_file(&data, v->file_size);
        check_inside_file(&stale, v->file_size);

        present_payload(v, VHDX_PAYLOAD_FULLY_PRESENT, &present);
        extent_list_normalize(&present);
        check_covered(&data, &present);
        check_disjoint(&structures, &data);

        live_ranges(v, &live);
        check_disjoint(&stale, &live);
        for (size_t i = 0; i < stale.n; i++)
                check(stale.items[i].offset >= VHDX_HEADER_AREA_SIZE);

        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
        extent_list_done(&present);
        extent_list_done(&live);
}

/* The free tier maps guest ranges to file ranges: they must be present data. */
static void check_virtual_mapping(const Vhdx *v) {
        ExtentList structures = {}, data = {}, stale = {}, virt = {}, mapped = {};

        check(vhdx_file_ranges(v, &structures, &data, &stale) >= 0);
        check(extent_list_add(&virt, 0, v->virtual_size) >= 0);
        check(vhdx_map_virtual_ranges(v, &virt, &mapped) >= 0);
        extent_list_normalize(&mapped);
        check_covered(&mapped, &data);

        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
        extent_list_done(&virt);
        extent_list_done(&mapped);
}

static void read_some_virtual(const Vhdx *v, const VhdxSource *src) {
        uint8_t buf[4096];
        const uint64_t at[] = { 0, v->virtual_size / 2, v->virtual_size - MIN(v->virtual_size, sizeof buf) };

        for (size_t i = 0; i < ELEMENTSOF(at); i++) {
                size_t n = (size_t) MIN((uint64_t) sizeof buf, v->virtual_size - at[i]);
                int r = vhdx_read_virtual(v, src, buf, n, at[i]);
                check(r >= 0 || (v->has_parent && r == -EOPNOTSUPP));
        }
}

static void print_inspect(const Vhdx *v) {
        FILE *f = fopen("/dev/null", "we");

        if (f) {
                vhdx_print_inspect(v, f);
                fclose(f);
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_CRIT);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        SparseImage img;
        VhdxSource src;
        Vhdx *v = NULL;
        char *error = NULL;
        int r;

        if (sparse_image_decode(data, size, MAX_IMAGE_SIZE, &img) < 0)
                return 0;
        fix_checksums(&img);
        src = (VhdxSource) { .size = img.size, .pread = sparse_image_pread, .userdata = &img };

        r = vhdx_open(&src, &v, &error);
        if (r < 0) {
                /* A refusal names what it refuses. */
                check(r == -ENOMEM || (error && error[0]));
        } else {
                check(v->chunk_ratio > 0 && v->block_size > 0);
                check(v->bat_entries <= v->bat_length / 8);
                check_layout(v);
                check_virtual_mapping(v);
                read_some_virtual(v, &src);
                print_inspect(v);
                vhdx_free(v);
        }
        free(error);
        sparse_image_done(&img);
        return 0;
}
