/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsaware.h"
#include "fsbackend.h"
#include "log.h"
#include "macro.h"
#include "unaligned.h"

/* fs_kind_to_string() for messages: never NULL. */
static const char *kind_name(FsKind k) {
        const char *s = fs_kind_to_string(k);
        return s ? s : "unknown";
}

static bool has_signature(const uint8_t *buf, size_t len, size_t offset, const char *sig, size_t n) {
        return offset + n <= len && memcmp(buf + offset, sig, n) == 0;
}

static bool probe_vfat(const uint8_t *b, size_t len) {
        if (len < 512 || (b[0] != 0xEB && b[0] != 0xE9) || get_le16(b + 510) != 0xAA55)
                return false;
        return has_signature(b, len, 54, "FAT1", 4) || has_signature(b, len, 82, "FAT32   ", 8);
}

static bool probe_lvm2(const uint8_t *b, size_t len) {
        /* The label may sit in any of the first four 512-byte sectors. */
        for (size_t s = 0; s < 4; s++)
                if (has_signature(b, len, s * 512, "LABELONE", 8) &&
                    has_signature(b, len, s * 512 + 24, "LVM2 001", 8))
                        return true;
        return false;
}

static bool probe_swap(const uint8_t *b, size_t len) {
        static const size_t page_sizes[] = { 4096, 8192, 16384, 65536 };

        for (size_t i = 0; i < ELEMENTSOF(page_sizes); i++) {
                size_t at = page_sizes[i] - 10;
                if (has_signature(b, len, at, "SWAPSPACE2", 10) ||
                    has_signature(b, len, at, "SWAP-SPACE", 10) ||
                    has_signature(b, len, at, "S1SUSPEND", 9))
                        return true;
        }
        return false;
}

static const FsBackend *const backends[] = {
        &fs_backend_ext,
        &fs_backend_ntfs,
};

/* Names what the first bytes of a partition hold, and finds the backend that
 * processes it (NULL for a kind that is only named, for the report). */
static FsKind probe_kind(const uint8_t *b, size_t len, const FsBackend **ret_backend) {
        FsKind k;

        *ret_backend = NULL;
        for (size_t i = 0; i < ELEMENTSOF(backends); i++) {
                k = backends[i]->recognise(b, len);
                if (k != FS_UNKNOWN) {
                        *ret_backend = backends[i];
                        return k;
                }
        }
        k = fs_ext_probe(b, len);
        if (k != FS_UNKNOWN)
                return k;
        if (has_signature(b, len, 0, "LUKS\xba\xbe", 6))
                return FS_LUKS;
        if (probe_lvm2(b, len))
                return FS_LVM2;
        if (has_signature(b, len, 0, "XFSB", 4))
                return FS_XFS;
        if (has_signature(b, len, 3, "NTFS    ", 8))
                return FS_NTFS;         /* without the boot sector's end mark */
        if (has_signature(b, len, 3, "-FVE-FS-", 8))
                return FS_BITLOCKER;
        if (has_signature(b, len, 3, "ReFS\0\0\0\0", 8))
                return FS_REFS;
        if (has_signature(b, len, 3, "EXFAT   ", 8))
                return FS_EXFAT;
        if (probe_vfat(b, len))
                return FS_VFAT;
        if (has_signature(b, len, 64 * KiB + 64, "_BHRfS_M", 8))
                return FS_BTRFS;
        if (probe_swap(b, len))
                return FS_SWAP;
        return FS_UNKNOWN;
}

static int probe_partition(VDisk *d, FsPartition *p, const FsBackend **ret_backend) {
        size_t len = (size_t) MIN(p->size, (uint64_t) FSAWARE_PROBE_SIZE);
        _cleanup_free_ uint8_t *buf = malloc(MAX(len, (size_t) 1));
        int r;

        if (!buf)
                return -ENOMEM;
        r = vdisk_read(d, buf, len, p->offset);
        if (r < 0)
                return r;
        p->kind = probe_kind(buf, len, ret_backend);
        return 0;
}

typedef struct Where {
        char s[32];
} Where;

/* "partition 2" or "the whole disk", for messages. */
static Where where(const FsPartition *p) {
        Where w;

        if (p->index > 0)
                snprintf(w.s, sizeof w.s, "partition %d", p->index);
        else
                snprintf(w.s, sizeof w.s, "the whole disk");
        return w;
}

/* Marks the file system unclean; returns -EUCLEAN for the caller to pass up. */
int fs_mark_unclean(FsPartition *p, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vsnprintf(p->reason, sizeof p->reason, format, ap);
        va_end(ap);
        p->clean = false;
        return -EUCLEAN;
}

/* Reads one volume through its backend. Returns 0 whether or not it is clean
 * (see p->clean), or a negative errno when the scan must stop. */
static int backend_scan(const FsBackend *b, VDisk *d, FsPartition *p, ExtentList *free_out) {
        _cleanup_(extent_list_done) ExtentList found = {};
        void *volume = NULL;
        uint64_t total = 0;
        int r, e;

        r = b->open(d, p, &volume);
        if (r >= 0)
                r = b->check_clean(volume, p);
        if (r >= 0)
                r = b->list_free(volume, p, &found);
        /* A disk read that failed anywhere, even where the library carried
         * on without it, voids the result. */
        if (volume) {
                e = b->disk_error(volume);
                if (e < 0 && (r >= 0 || r == -EUCLEAN))
                        r = e;
                b->close(volume);
        }
        if (r == -EUCLEAN) {
                p->clean = false;
                p->free_bytes = 0;
                log_debug("%s (%s): not clean: %s", where(p).s, kind_name(p->kind), p->reason);
                return 0;
        }
        if (r < 0)
                return r;

        /* What a library answers is checked like any input. */
        for (size_t i = 0; i < found.n; i++) {
                const Extent *x = &found.items[i];

                if (x->offset > p->size || x->length > p->size - x->offset) {
                        (void) fs_mark_unclean(p, "free range 0x%" PRIx64 "+0x%" PRIx64 " lies outside the volume",
                                               x->offset, x->length);
                        p->free_bytes = 0;
                        return 0;
                }
        }
        for (size_t i = 0; i < found.n; i++) {
                r = extent_list_add(free_out, p->offset + found.items[i].offset, found.items[i].length);
                if (r < 0)
                        return r;
                total += found.items[i].length;
        }
        p->clean = true;
        p->free_bytes = total;
        log_debug("%s (%s): clean, %" PRIu64 " bytes free in %zu runs",
                  where(p).s, kind_name(p->kind), p->free_bytes, found.n);
        return 0;
}

_printf_(3, 4)
static int scan_fail(FsScan *s, int r, const char *format, ...) {
        char error[sizeof s->error];
        va_list ap;

        va_start(ap, format);
        vsnprintf(error, sizeof error, format, ap);
        va_end(ap);
        fsaware_scan_done(s);
        memcpy(s->error, error, sizeof error);
        return r;
}

/* fdisk's names for the partition types found on disks we meet. */
static const char *partition_type_name(const Partition *part) {
        static const struct {
                const char *guid;
                const char *name;
        } gpt_types[] = {
                { "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System" },
                { "e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved" },
                { "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "Microsoft basic data" },
                { "de94bba4-06d1-4d40-a16a-bfd50179d6ac", "Windows recovery environment" },
                { "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3", "Microsoft LDM metadata" },
                { "af9b60a0-1431-4f62-bc68-3311714a69ad", "Microsoft LDM data" },
                { "21686148-6449-6e6f-744e-656564454649", "BIOS boot" },
                { "0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem" },
                { "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap" },
                { "e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM" },
        };
        static const struct {
                uint8_t type;
                const char *name;
        } mbr_types[] = {
                { 0x07, "HPFS/NTFS/exFAT" }, { 0x0b, "W95 FAT32" }, { 0x0c, "W95 FAT32 (LBA)" },
                { 0x27, "Hidden NTFS WinRE" }, { 0x82, "Linux swap" }, { 0x83, "Linux" },
                { 0x8e, "Linux LVM" }, { 0xef, "EFI (FAT-12/16/32)" },
        };
        const uint8_t *g = part->gpt_type;
        char guid[37];

        for (size_t i = 0; i < ELEMENTSOF(mbr_types); i++)
                if (part->mbr_type != 0 && part->mbr_type == mbr_types[i].type)
                        return mbr_types[i].name;
        /* Windows byte order: the first three fields are little-endian. */
        snprintf(guid, sizeof guid,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6],
                 g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        for (size_t i = 0; i < ELEMENTSOF(gpt_types); i++)
                if (strcmp(guid, gpt_types[i].guid) == 0)
                        return gpt_types[i].name;
        return NULL;
}

static int scan_add_partitions(VDisk *d, FsScan *s, const PartitionTable *t) {
        size_t n = t->kind == PARTITION_TABLE_NONE ? 1 : t->n_parts;

        s->parts = calloc(MAX(n, (size_t) 1), sizeof *s->parts);
        if (!s->parts)
                return -ENOMEM;
        s->n_parts = n;
        if (t->kind == PARTITION_TABLE_NONE) {
                s->parts[0] = (FsPartition) { .index = 0, .offset = 0, .size = d->size };
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                s->parts[i] = (FsPartition) {
                        .index = t->parts[i].index,
                        .offset = t->parts[i].offset,
                        .size = t->parts[i].size,
                        .type_name = partition_type_name(&t->parts[i]),
                };
        return 0;
}

/* A file system at offset 0 and a partition table describe two different
 * disks: a whole-disk mkfs leaves the old table's sector 0 to any writer that
 * puts it back, and sfdisk in script mode leaves an old whole-disk superblock
 * at 1024 under a new MBR. Whichever is stale, the other's free space may be
 * its data, and nothing on the disk says which is live: what is not
 * understood is refused. Only the bytes before the first partition are
 * probed: with a live table they are the table's and the boot code's, and a
 * signature inside partition 1 belongs to partition 1. */
static int scan_check_ambiguous(VDisk *d, FsScan *s, const PartitionTable *t) {
        FsPartition whole = { .index = 0, .offset = 0, .size = d->size };
        const Partition *first;
        const FsBackend *b;
        int r;

        if (t->kind == PARTITION_TABLE_NONE || t->n_parts == 0)
                return 0;
        first = &t->parts[0];   /* sorted by offset */
        whole.size = first->offset;
        r = probe_partition(d, &whole, &b);
        if (r < 0)
                return r;
        if (whole.kind == FS_UNKNOWN)
                return 0;
        snprintf(s->ambiguous, sizeof s->ambiguous,
                 "ambiguous layout: %s %s file system at offset 0 and %s %s partition table with partition %d "
                 "at offset 0x%" PRIx64 ": the free tier cannot tell which is live",
                 strchr("aeioxnlAEIOXNL", kind_name(whole.kind)[0]) ? "an" : "a", kind_name(whole.kind),
                 t->kind == PARTITION_TABLE_MBR ? "an" : "a",
                 t->kind == PARTITION_TABLE_MBR ? "MBR" : "GPT", first->index, first->offset);
        log_debug("%s", s->ambiguous);
        return 0;
}

int fsaware_scan(VDisk *d, FsScan *ret) {
        _cleanup_(partition_table_done) PartitionTable t = {};
        int r;

        *ret = (FsScan) {};
        r = partition_table_read(d, &t);
        if (r < 0)
                return scan_fail(ret, r, "partition table: %s", t.error);
        ret->table = t.kind;
        ret->gpt_backup_used = t.gpt_backup_used;

        r = scan_check_ambiguous(d, ret, &t);
        if (r < 0)
                return scan_fail(ret, r, "reading the start of the disk: %s", strerror(-r));

        r = scan_add_partitions(d, ret, &t);
        if (r < 0)
                return scan_fail(ret, r, "out of memory");

        for (size_t i = 0; i < ret->n_parts; i++) {
                FsPartition *p = &ret->parts[i];

                const FsBackend *b;

                r = probe_partition(d, p, &b);
                if (r < 0)
                        return scan_fail(ret, r, "reading %s: %s", where(p).s, strerror(-r));
                if (!b || ret->ambiguous[0])
                        continue;
                p->supported = true;
                r = backend_scan(b, d, p, &ret->free);
                if (r < 0)
                        return scan_fail(ret, r, "reading the %s file system on %s: %s",
                                         kind_name(p->kind), where(p).s, strerror(-r));
        }
        extent_list_normalize(&ret->free);
        return 0;
}

void fsaware_scan_done(FsScan *s) {
        free(s->parts);
        extent_list_done(&s->free);
        *s = (FsScan) {};
}

const char *fs_kind_to_string(FsKind k) {
        /* libblkid's names, which is what an administrator has seen. */
        static const char *const table[_FS_KIND_MAX] = {
                [FS_UNKNOWN] = "unknown",
                [FS_EXT2] = "ext2",
                [FS_EXT3] = "ext3",
                [FS_EXT4] = "ext4",
                [FS_EXT_JOURNAL] = "jbd",
                [FS_SWAP] = "swap",
                [FS_NTFS] = "ntfs",
                [FS_VFAT] = "vfat",
                [FS_EXFAT] = "exfat",
                [FS_XFS] = "xfs",
                [FS_BTRFS] = "btrfs",
                [FS_LUKS] = "crypto_LUKS",
                [FS_LVM2] = "LVM2_member",
                [FS_BITLOCKER] = "BitLocker",
                [FS_REFS] = "ReFS",
        };

        if (k < 0 || k >= _FS_KIND_MAX)
                return NULL;
        return table[k];
}

bool fs_kind_is_ext(FsKind k) {
        return k == FS_EXT2 || k == FS_EXT3 || k == FS_EXT4;
}

const FsPartition *fsaware_first_unclean(const FsScan *s) {
        for (size_t i = 0; i < s->n_parts; i++)
                if (s->parts[i].supported && !s->parts[i].clean)
                        return &s->parts[i];
        return NULL;
}

int fsaware_summary(const FsScan *s, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (s->table == PARTITION_TABLE_NONE)
                fputs(s->n_parts > 0 ? kind_name(s->parts[0].kind) : "unknown", f);
        else {
                fprintf(f, "%s: ", partition_table_kind_to_string(s->table));
                if (s->n_parts == 0)
                        fputs("empty", f);
                for (size_t i = 0; i < s->n_parts; i++) {
                        const FsPartition *p = &s->parts[i];
                        fprintf(f, "%s%s", i > 0 ? ", " : "",
                                p->kind == FS_UNKNOWN && p->type_name ? p->type_name : kind_name(p->kind));
                }
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

void fsaware_describe(const FsPartition *p, char *buf, size_t size) {
        int n = snprintf(buf, size, "%s %-3d %-8s offset 0x%" PRIx64 " size %" PRIu64,
                         p->index > 0 ? "partition" : "whole disk", p->index, kind_name(p->kind),
                         p->offset, p->size);

        if (n < 0 || (size_t) n >= size)
                return;
        buf += n, size -= n;
        if (p->type_name)
                n = snprintf(buf, size, " (%s)", p->type_name);
        else
                n = 0;
        if (n < 0 || (size_t) n >= size || !p->supported)
                return;
        buf += n, size -= n;
        if (!p->clean)
                snprintf(buf, size, ", NOT clean: %s", p->reason);
        else
                snprintf(buf, size, ", clean, %s %" PRIu32 ", free %" PRIu64,
                         p->kind == FS_NTFS ? "cluster size" : "block size", p->unit_size, p->free_bytes);
}
