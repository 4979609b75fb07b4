/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the file-system-aware scan (partition table, probes and
 * the NTFS backend through libntfs-3g) on a virtual disk held in memory.
 * libntfs-3g is not ours; what we hand it (ntfsio.c's reads) and what we do
 * with its answers (the checks, $Bitmap's runs) is.
 *
 * The input is a sparse image (fuzz-sparse.h). Flag bits:
 *   0x01 4096-byte logical sectors (else 512)
 *   0x02 a patch of exactly 3 bytes is a run: bytes[0] repeated over
 *        le16(bytes[1..2]) pages of 4 KiB (an NTFS $LogFile is mostly 0xff,
 *        which keeps the seeds a few KB; see make-corpus.sh)
 *
 * Invariants: on success every free range lies inside a partition that a
 * backend read and found clean, each partition's free_bytes adds up to the
 * list's total, and the list is normalized; an ambiguous layout (a file
 * system at offset 0 and a partition table) reads no volume and lists nothing
 * free; on failure no partitions and a reason. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsaware.h"
#include "fuzz-sparse.h"
#include "log.h"
#include "macro.h"

/* Runs expand to at most this much in all. */
#define RUNS_MAX (16 * MiB)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);

/* libntfs-3g 2022.10.3 leaks a runlist (4 KiB) when ntfs_device_mount()
 * gives up on a damaged $MFT inside ntfs_volume_startup(): the library's own
 * failure path, which hands us nothing to free. Only that frame is excused;
 * the slow unwinder lets the suppression see it (the library has no frame
 * pointers), so a leak of ours through any other path still fails the run. */
const char *__asan_default_options(void) {
        return "fast_unwind_on_malloc=0";
}

const char *__lsan_default_suppressions(void) {
        return "leak:ntfs_volume_startup\n";
}

#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

static void expand_runs(SparseImage *img) {
        uint64_t budget = RUNS_MAX;

        for (size_t i = 0; i < img->n_patches; i++) {
                SparsePatch *p = &img->patches[i];
                uint64_t len;
                uint8_t *bytes;

                if (p->length != 3)
                        continue;
                len = (uint64_t) (p->bytes[1] | p->bytes[2] << 8) * 4096;
                if (len == 0 || len > budget)
                        continue;
                bytes = malloc(len);
                if (!bytes)
                        continue;
                memset(bytes, p->bytes[0], len);
                free(p->bytes);
                p->bytes = bytes;
                p->length = len;
                budget -= len;
        }
}

static int vdisk_sparse_read(VDisk *d, void *buf, size_t len, uint64_t offset) {
        return sparse_image_read(d->userdata, buf, len, offset);
}

static void check_scan(const FsScan *s, const VDisk *d) {
        uint64_t sum = 0, total = 0;

        for (size_t i = 0; i < s->n_parts; i++) {
                const FsPartition *p = &s->parts[i];

                check(p->offset <= d->size && p->size <= d->size - p->offset);
                check(fs_kind_to_string(p->kind) != NULL);
                if (!p->supported || !p->clean)
                        check(p->free_bytes == 0);
                if (p->supported && !p->clean)
                        check(p->reason[0] != 0);
                sum += p->free_bytes;
                /* An ambiguous layout reads no volume. */
                if (s->ambiguous[0])
                        check(!p->supported);
        }
        if (s->ambiguous[0])
                check(s->free.n == 0);
        for (size_t i = 0; i < s->free.n; i++) {
                const Extent *x = &s->free.items[i];
                bool inside = false;

                check(x->length > 0);
                if (i > 0)
                        check(s->free.items[i - 1].offset + s->free.items[i - 1].length < x->offset);
                for (size_t j = 0; j < s->n_parts; j++) {
                        const FsPartition *p = &s->parts[j];
                        if (p->supported && p->clean && x->offset >= p->offset &&
                            x->offset + x->length <= p->offset + p->size)
                                inside = true;
                }
                check(inside);
                total += x->length;
        }
        check(sum == total);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_CRIT);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        SparseImage img;
        FsScan s;
        VDisk d;
        int r;

        /* Volumes up to 1 GiB: $Bitmap is read whole, 32 KiB per GiB. */
        if (sparse_image_decode(data, size, 1 << 30, &img) < 0)
                return 0;
        if (img.flags & 2)
                expand_runs(&img);
        d = (VDisk) {
                .size = img.size,
                .logical_sector_size = img.flags & 1 ? 4096 : 512,
                .read = vdisk_sparse_read,
                .userdata = &img,
        };
        r = fsaware_scan(&d, &s);
        if (r < 0) {
                check(s.n_parts == 0 && s.parts == NULL);
                check(s.error[0] != 0);
        } else
                check_scan(&s, &d);
        fsaware_scan_done(&s);
        sparse_image_done(&img);
        return 0;
}
