/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the partition table reader (MBR with its EBR chain, GPT
 * with its backup) on a virtual disk held in memory.
 *
 * The input is a sparse image (fuzz-sparse.h); the disk may be of any size,
 * since nothing is materialised. Flag bits:
 *   0x01 4096-byte logical sectors (else 512)
 *   0x02 recompute the primary GPT's entry array and header CRC32s
 *   0x04 recompute the backup GPT's (at the primary's AlternateLBA, or the
 *        last sector) so mutations reach past the checksums.
 *
 * Invariant on success: every partition is non-empty, lies inside the disk
 * past sector 0, and the list is sorted and non-overlapping, which is what
 * lets fsaware.c treat each partition's free space as its own. On failure:
 * no partitions and a reason. */

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz-sparse.h"
#include "log.h"
#include "macro.h"
#include "partition.h"

#define GPT_ARRAY_MAX (4 * MiB)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

static uint32_t load_le32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return le32toh(v);
}

static uint64_t load_le64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return le64toh(v);
}

static void patch_le32(SparseImage *img, uint64_t offset, uint32_t value) {
        value = htole32(value);
        (void) sparse_image_patch(img, offset, &value, sizeof value);
}

/* Makes the GPT header at lba (if there is one) carry correct CRCs; returns
 * its AlternateLBA, or 0. */
static uint64_t fix_gpt(SparseImage *img, uint32_t ss, uint64_t lba) {
        uint8_t *sector = malloc(ss), *array = NULL;
        uint64_t base = lba * ss, alternate = 0;
        uint32_t header_size, n, entry_size;

        if (!sector || lba > img->size / ss - 1 || sparse_image_read(img, sector, ss, base) < 0 ||
            memcmp(sector, "EFI PART", 8) != 0)
                goto finish;
        alternate = load_le64(sector + 32);
        n = load_le32(sector + 80);
        entry_size = load_le32(sector + 84);
        uint64_t array_offset = load_le64(sector + 72) * ss, array_size = (uint64_t) n * entry_size;
        if (array_size <= GPT_ARRAY_MAX && array_offset / ss == load_le64(sector + 72) &&
            array_offset <= img->size && array_size <= img->size - array_offset &&
            (array = malloc(MAX(array_size, UINT64_C(1)))) &&
            sparse_image_read(img, array, array_size, array_offset) >= 0) {
                uint32_t crc = (uint32_t) crc32(0, array, (uInt) array_size);
                memcpy(sector + 88, &(uint32_t) { htole32(crc) }, 4);
                patch_le32(img, base + 88, crc);
        }
        header_size = load_le32(sector + 12);
        if (header_size >= 92 && header_size <= ss) {
                memset(sector + 16, 0, 4);
                patch_le32(img, base + 16, (uint32_t) crc32(0, sector, header_size));
        }
finish:
        free(sector);
        free(array);
        return alternate;
}

static int vdisk_sparse_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        return sparse_image_read(d->userdata, buf, len, offset);
}

static void check_table(const PartitionTable *t, const VDisk *d, uint32_t ss) {
        for (size_t i = 0; i < t->n_parts; i++) {
                const Partition *p = &t->parts[i];

                check(p->size > 0);
                check(p->offset >= ss);
                check(p->offset <= d->size && p->size <= d->size - p->offset);
                if (i > 0)
                        check(t->parts[i - 1].offset + t->parts[i - 1].size <= p->offset);
                if (t->kind == PARTITION_TABLE_MBR)
                        check(p->mbr_type != 0);
        }
        if (t->kind == PARTITION_TABLE_NONE)
                check(t->n_parts == 0);
        check(partition_table_kind_to_string(t->kind) != NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_CRIT);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        SparseImage img;
        PartitionTable t;
        uint32_t ss;
        VDisk d;
        int r;

        if (sparse_image_decode(data, size, UINT64_MAX, &img) < 0)
                return 0;
        ss = img.flags & 1 ? 4096 : 512;
        if (img.size / ss >= 2) {
                uint64_t alternate = 0;
                if (img.flags & 2)
                        alternate = fix_gpt(&img, ss, 1);
                if (img.flags & 4)
                        fix_gpt(&img, ss, alternate > 1 && alternate < img.size / ss ? alternate : img.size / ss - 1);
        }

        d = (VDisk) { .size = img.size, .logical_sector_size = ss, .read = vdisk_sparse_read, .userdata = &img };
        r = partition_table_read(&d, &t);
        if (r < 0) {
                check(t.n_parts == 0 && t.parts == NULL);
                check(t.error[0] != 0);
        } else
                check_table(&t, &d, ss);
        partition_table_done(&t);
        sparse_image_done(&img);
        return 0;
}
