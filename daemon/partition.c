/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"
#include "macro.h"
#include "partition.h"
#include "unaligned.h"

#define MBR_SIGNATURE_OFFSET 510
#define MBR_ENTRIES_OFFSET 446
#define MBR_ENTRY_SIZE 16
#define MBR_TYPE_GPT_PROTECTIVE 0xEE
/* An EBR chain longer than this is a loop or garbage. */
#define MBR_MAX_LOGICAL 256

#define GPT_SIGNATURE "EFI PART"
#define GPT_HEADER_MIN_SIZE 92
#define GPT_ENTRY_MIN_SIZE 128
/* The spec's minimum is 16 KiB; nothing sane comes near this. */
#define GPT_ENTRY_ARRAY_MAX (4 * MiB)

_printf_(3, 4)
static int table_fail(PartitionTable *t, int r, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vsnprintf(t->error, sizeof t->error, format, ap);
        va_end(ap);
        return r;
}

typedef struct Disk {
        VDisk *vdisk;
        uint32_t sector_size;
        uint64_t n_sectors;
} Disk;

static int read_sectors(const Disk *disk, uint64_t lba, uint64_t count, void *buf) {
        if (lba > disk->n_sectors || count > disk->n_sectors - lba)
                return -ERANGE;
        return vdisk_read(disk->vdisk, buf, count * disk->sector_size, lba * disk->sector_size);
}

static int table_add(PartitionTable *t, const Partition *p) {
        Partition *n = reallocarray(t->parts, t->n_parts + 1, sizeof *n);
        if (!n)
                return -ENOMEM;
        t->parts = n;
        t->parts[t->n_parts++] = *p;
        return 0;
}

static int partition_cmp(const void *a, const void *b) {
        const Partition *x = a, *y = b;

        if (x->offset != y->offset)
                return x->offset < y->offset ? -1 : 1;
        return x->index - y->index;
}

/* The file systems found in the partitions are read, and their free space
 * punched, independently: partitions that overlap or leave the disk would let
 * one file system's free space be another's data, so such a table is refused. */
static int table_check_layout(PartitionTable *t, const Disk *disk) {
        uint64_t disk_size = disk->n_sectors * disk->sector_size;

        if (t->n_parts > 1)     /* parts is NULL when there are none: qsort() wants non-NULL */
                qsort(t->parts, t->n_parts, sizeof *t->parts, partition_cmp);
        for (size_t i = 0; i < t->n_parts; i++) {
                const Partition *p = &t->parts[i];

                if (p->offset < disk->sector_size)
                        return table_fail(t, -EBADMSG, "partition %d starts in the partition table's own sector", p->index);
                if (p->size == 0 || p->offset > disk_size || p->size > disk_size - p->offset)
                        return table_fail(t, -EBADMSG, "partition %d (%" PRIu64 " bytes at %" PRIu64
                                          ") extends past the end of the disk (%" PRIu64 " bytes)",
                                          p->index, p->size, p->offset, disk_size);
                if (i > 0 && t->parts[i - 1].offset + t->parts[i - 1].size > p->offset)
                        return table_fail(t, -EBADMSG, "partitions %d and %d overlap",
                                          t->parts[i - 1].index, p->index);
        }
        return 0;
}

/* A FAT, exFAT, NTFS, BitLocker or ReFS volume boot record also ends in 55 AA; it is a file
 * system on the whole disk, not an MBR. */
static bool sector_is_volume_boot_record(const uint8_t *s) {
        if (memcmp(s + 3, "NTFS    ", 8) == 0 || memcmp(s + 3, "EXFAT   ", 8) == 0 ||
            memcmp(s + 3, "-FVE-FS-", 8) == 0 || memcmp(s + 3, "ReFS\0\0\0\0", 8) == 0)
                return true;
        if (s[0] != 0xEB && s[0] != 0xE9)
                return false;
        return memcmp(s + 54, "FAT1", 4) == 0 || memcmp(s + 82, "FAT32   ", 8) == 0;
}

typedef struct MbrEntry {
        uint8_t boot;
        uint8_t type;
        uint32_t start;
        uint32_t count;
} MbrEntry;

static MbrEntry mbr_entry(const uint8_t *sector, unsigned slot) {
        const uint8_t *e = sector + MBR_ENTRIES_OFFSET + slot * MBR_ENTRY_SIZE;

        return (MbrEntry) {
                .boot = e[0],
                .type = e[4],
                .start = get_le32(e + 8),
                .count = get_le32(e + 12),
        };
}

static bool mbr_entry_used(const MbrEntry *e) {
        return e->type != 0 && e->count != 0;
}

static bool mbr_type_is_extended(uint8_t type) {
        return type == 0x05 || type == 0x0F || type == 0x85;
}

static bool sector_is_mbr(const uint8_t *s) {
        if (get_le16(s + MBR_SIGNATURE_OFFSET) != 0xAA55)
                return false;
        if (sector_is_volume_boot_record(s))
                return false;
        for (unsigned i = 0; i < 4; i++) {
                MbrEntry e = mbr_entry(s, i);
                if (e.boot != 0x00 && e.boot != 0x80)
                        return false;
        }
        return true;
}

static bool sector_has_protective_entry(const uint8_t *s) {
        if (get_le16(s + MBR_SIGNATURE_OFFSET) != 0xAA55)
                return false;
        for (unsigned i = 0; i < 4; i++)
                if (mbr_entry(s, i).type == MBR_TYPE_GPT_PROTECTIVE)
                        return true;
        return false;
}

static int mbr_add(PartitionTable *t, const Disk *disk, int index, uint8_t type, uint64_t lba, uint64_t count) {
        Partition p = {
                .index = index,
                .offset = lba * disk->sector_size,
                .size = count * disk->sector_size,
                .mbr_type = type,
        };
        return table_add(t, &p);
}

/* Logical partitions: a chain of EBRs inside the extended partition; each
 * holds one logical partition (start relative to that EBR) and a link to the
 * next EBR (start relative to the extended partition). */
static int mbr_read_logical(PartitionTable *t, const Disk *disk, uint64_t ext_start, uint64_t ext_count,
                            uint64_t ebrs[static MBR_MAX_LOGICAL], size_t *n_ebrs) {
        _cleanup_free_ uint8_t *s = malloc(disk->sector_size);
        uint64_t ebr = ext_start, ext_end = ext_start + ext_count;
        int index = 5, r;

        if (!s)
                return -ENOMEM;
        for (unsigned n = 0;; n++) {
                if (n >= MBR_MAX_LOGICAL)
                        return table_fail(t, -EBADMSG, "more than %d logical partitions: EBR chain loops",
                                          MBR_MAX_LOGICAL);
                if (ebr < ext_start || ebr >= ext_end)
                        return table_fail(t, -EBADMSG, "EBR at sector %" PRIu64 " is outside the extended partition", ebr);
                ebrs[(*n_ebrs)++] = ebr;
                r = read_sectors(disk, ebr, 1, s);
                if (r < 0)
                        return table_fail(t, r, "reading EBR at sector %" PRIu64 ": %s", ebr, strerror(-r));
                if (get_le16(s + MBR_SIGNATURE_OFFSET) != 0xAA55)
                        return table_fail(t, -EBADMSG, "EBR at sector %" PRIu64 " has no 55 AA signature", ebr);

                MbrEntry logical = mbr_entry(s, 0), link = mbr_entry(s, 1);
                if (mbr_entry_used(&logical)) {
                        uint64_t start = ebr + logical.start;
                        if (logical.start == 0 || start + logical.count > ext_end)
                                return table_fail(t, -EBADMSG, "logical partition %d overlaps its EBR or leaves the extended partition", index);
                        r = mbr_add(t, disk, index++, logical.type, start, logical.count);
                        if (r < 0)
                                return table_fail(t, r, "out of memory");
                }
                if (!mbr_entry_used(&link) || !mbr_type_is_extended(link.type))
                        return 0;
                ebr = ext_start + link.start;
        }
}

/* A file system's free space must never include a sector of the table. */
static int mbr_check_ebrs_uncovered(PartitionTable *t, const Disk *disk, const uint64_t *ebrs, size_t n_ebrs) {
        for (size_t i = 0; i < t->n_parts; i++)
                for (size_t j = 0; j < n_ebrs; j++) {
                        uint64_t at = ebrs[j] * disk->sector_size;
                        if (at >= t->parts[i].offset && at - t->parts[i].offset < t->parts[i].size)
                                return table_fail(t, -EBADMSG, "partition %d covers the EBR at sector %" PRIu64,
                                                  t->parts[i].index, ebrs[j]);
                }
        return 0;
}

static int mbr_read(PartitionTable *t, const Disk *disk, const uint8_t *mbr) {
        _cleanup_free_ uint64_t *ebrs = calloc(MBR_MAX_LOGICAL, sizeof *ebrs);
        size_t n_ebrs = 0;
        bool have_extended = false;
        int r;

        if (!ebrs)
                return table_fail(t, -ENOMEM, "out of memory");

        t->kind = PARTITION_TABLE_MBR;
        for (unsigned i = 0; i < 4; i++) {
                MbrEntry e = mbr_entry(mbr, i);

                if (!mbr_entry_used(&e))
                        continue;
                if (!mbr_type_is_extended(e.type)) {
                        r = mbr_add(t, disk, i + 1, e.type, e.start, e.count);
                        if (r < 0)
                                return table_fail(t, r, "out of memory");
                        continue;
                }
                if (have_extended)
                        return table_fail(t, -EBADMSG, "more than one extended partition");
                have_extended = true;
                if ((uint64_t) e.start + e.count > disk->n_sectors)
                        return table_fail(t, -EBADMSG, "extended partition %u extends past the end of the disk", i + 1);
                r = mbr_read_logical(t, disk, e.start, e.count, ebrs, &n_ebrs);
                if (r < 0)
                        return r;
        }
        r = table_check_layout(t, disk);
        if (r < 0)
                return r;
        return mbr_check_ebrs_uncovered(t, disk, ebrs, n_ebrs);
}

typedef struct GptHeader {
        uint64_t my_lba;
        uint64_t alternate_lba;
        uint64_t first_usable;
        uint64_t last_usable;
        uint64_t entries_lba;
        uint32_t n_entries;
        uint32_t entry_size;
        uint32_t entries_crc;
} GptHeader;

static bool range_contains(uint64_t first, uint64_t last, uint64_t x) {
        return x >= first && x <= last;
}

/* Partitions live in [first_usable, last_usable]: that range must leave out
 * the MBR, this header, its entry array and the other header, or a file
 * system's free space could include them. */
static bool gpt_usable_range_spares_structures(const Disk *disk, const GptHeader *h) {
        uint64_t entry_sectors = ((uint64_t) h->n_entries * h->entry_size + disk->sector_size - 1) / disk->sector_size;
        uint64_t entries_last = h->entries_lba + MAX(entry_sectors, UINT64_C(1)) - 1;

        if (h->first_usable < 2)
                return false;
        if (range_contains(h->first_usable, h->last_usable, h->my_lba) ||
            range_contains(h->first_usable, h->last_usable, h->alternate_lba))
                return false;
        /* Disjoint from the entry array. */
        return entries_last < h->first_usable || h->entries_lba > h->last_usable;
}

/* Parses and validates the header in sector lba; on failure writes the
 * reason to why. */
static int gpt_header_read(const Disk *disk, uint64_t lba, GptHeader *ret, char *why, size_t why_size) {
        _cleanup_free_ uint8_t *s = malloc(disk->sector_size);
        int r;

        if (!s)
                return -ENOMEM;
        r = read_sectors(disk, lba, 1, s);
        if (r < 0) {
                snprintf(why, why_size, "cannot read sector %" PRIu64 ": %s", lba, strerror(-r));
                return r == -ERANGE ? -EBADMSG : r;
        }
        if (memcmp(s, GPT_SIGNATURE, 8) != 0) {
                snprintf(why, why_size, "no GPT signature at sector %" PRIu64, lba);
                return -EBADMSG;
        }

        uint32_t header_size = get_le32(s + 12);
        if (header_size < GPT_HEADER_MIN_SIZE || header_size > disk->sector_size) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " has invalid size %" PRIu32, lba, header_size);
                return -EBADMSG;
        }
        uint32_t stored_crc = get_le32(s + 16);
        memset(s + 16, 0, 4);
        if ((uint32_t) crc32(0, s, header_size) != stored_crc) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " has a bad CRC32", lba);
                return -EBADMSG;
        }

        GptHeader h = {
                .my_lba = get_le64(s + 24),
                .alternate_lba = get_le64(s + 32),
                .first_usable = get_le64(s + 40),
                .last_usable = get_le64(s + 48),
                .entries_lba = get_le64(s + 72),
                .n_entries = get_le32(s + 80),
                .entry_size = get_le32(s + 84),
                .entries_crc = get_le32(s + 88),
        };
        if (h.my_lba != lba) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " says it is at sector %" PRIu64, lba, h.my_lba);
                return -EBADMSG;
        }
        if (h.first_usable > h.last_usable || h.last_usable >= disk->n_sectors) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " has an invalid usable range", lba);
                return -EBADMSG;
        }
        if (h.entry_size < GPT_ENTRY_MIN_SIZE || h.entry_size % 8 != 0 ||
            (uint64_t) h.n_entries * h.entry_size > GPT_ENTRY_ARRAY_MAX) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " has an invalid entry array (%" PRIu32
                         " entries of %" PRIu32 " bytes)", lba, h.n_entries, h.entry_size);
                return -EBADMSG;
        }
        if (!gpt_usable_range_spares_structures(disk, &h)) {
                snprintf(why, why_size, "GPT header at sector %" PRIu64 " lets partitions cover the partition table", lba);
                return -EBADMSG;
        }
        *ret = h;
        return 0;
}

static int gpt_entries_read(const Disk *disk, const GptHeader *h, uint8_t **ret, char *why, size_t why_size) {
        size_t bytes = (size_t) h->n_entries * h->entry_size;
        uint64_t n_sectors = (bytes + disk->sector_size - 1) / disk->sector_size;
        _cleanup_free_ uint8_t *a = NULL;
        int r;

        a = malloc(MAX(n_sectors, UINT64_C(1)) * disk->sector_size);
        if (!a)
                return -ENOMEM;
        r = read_sectors(disk, h->entries_lba, n_sectors, a);
        if (r < 0) {
                snprintf(why, why_size, "cannot read the GPT entry array at sector %" PRIu64 ": %s",
                         h->entries_lba, strerror(-r));
                return r == -ERANGE ? -EBADMSG : r;
        }
        if ((uint32_t) crc32(0, a, bytes) != h->entries_crc) {
                snprintf(why, why_size, "GPT entry array at sector %" PRIu64 " has a bad CRC32", h->entries_lba);
                return -EBADMSG;
        }
        *ret = TAKE_PTR(a);
        return 0;
}

static bool guid_is_null(const uint8_t *g) {
        for (unsigned i = 0; i < 16; i++)
                if (g[i] != 0)
                        return false;
        return true;
}

static int gpt_add_entries(PartitionTable *t, const Disk *disk, const GptHeader *h, const uint8_t *entries) {
        int r;

        for (uint32_t i = 0; i < h->n_entries; i++) {
                const uint8_t *e = entries + (size_t) i * h->entry_size;
                uint64_t first = get_le64(e + 32), last = get_le64(e + 40);
                Partition p = { .index = (int) i + 1 };

                if (guid_is_null(e))
                        continue;
                if (first > last || first < h->first_usable || last > h->last_usable)
                        return table_fail(t, -EBADMSG, "GPT partition %" PRIu32 " (sectors %" PRIu64 "-%" PRIu64
                                          ") lies outside the usable area", i + 1, first, last);
                memcpy(p.gpt_type, e, 16);
                p.offset = first * disk->sector_size;
                p.size = (last - first + 1) * disk->sector_size;
                r = table_add(t, &p);
                if (r < 0)
                        return table_fail(t, r, "out of memory");
        }
        return table_check_layout(t, disk);
}

/* Loads the header at lba and its entry array; 0 when both are intact. */
static int gpt_try_copy(const Disk *disk, uint64_t lba, GptHeader *h, uint8_t **entries, char *why, size_t why_size) {
        int r;

        r = gpt_header_read(disk, lba, h, why, why_size);
        if (r < 0)
                return r;
        return gpt_entries_read(disk, h, entries, why, why_size);
}

static int gpt_read(PartitionTable *t, const Disk *disk) {
        _cleanup_free_ uint8_t *entries = NULL;
        char why_primary[128] = "", why_backup[128] = "";
        GptHeader h;
        uint64_t backup_lba = disk->n_sectors - 1;
        int r;

        t->kind = PARTITION_TABLE_GPT;
        r = gpt_try_copy(disk, 1, &h, &entries, why_primary, sizeof why_primary);
        if (r == 0)
                return gpt_add_entries(t, disk, &h, entries);
        if (r != -EBADMSG)
                return table_fail(t, r, "%s", why_primary);

        /* A valid primary header names its backup; otherwise the backup is
         * where the spec puts it, in the last sector. */
        GptHeader primary;
        char ignored[128];
        if (gpt_header_read(disk, 1, &primary, ignored, sizeof ignored) == 0 &&
            primary.alternate_lba < disk->n_sectors)
                backup_lba = primary.alternate_lba;

        r = gpt_try_copy(disk, backup_lba, &h, &entries, why_backup, sizeof why_backup);
        if (r == -EBADMSG)
                return table_fail(t, r, "primary GPT damaged (%s) and backup GPT damaged (%s)", why_primary, why_backup);
        if (r < 0)
                return table_fail(t, r, "%s", why_backup);

        log_warning("Primary GPT damaged (%s), using the backup at sector %" PRIu64 ".", why_primary, backup_lba);
        t->gpt_backup_used = true;
        return gpt_add_entries(t, disk, &h, entries);
}

static int disk_init(Disk *disk, VDisk *d, PartitionTable *t) {
        uint32_t ss = d->logical_sector_size;

        if (ss < 512 || ss > 64 * KiB || (ss & (ss - 1)) != 0)
                return table_fail(t, -EINVAL, "unsupported logical sector size %" PRIu32, ss);
        *disk = (Disk) {
                .vdisk = d,
                .sector_size = ss,
                .n_sectors = d->size / ss,
        };
        return 0;
}

int partition_table_read(VDisk *d, PartitionTable *ret) {
        _cleanup_free_ uint8_t *s0 = NULL, *s1 = NULL;
        Disk disk = {};
        int r;

        *ret = (PartitionTable) {};
        r = disk_init(&disk, d, ret);
        if (r < 0)
                return r;
        if (disk.n_sectors < 2)
                return 0;

        s0 = malloc(disk.sector_size);
        s1 = malloc(disk.sector_size);
        if (!s0 || !s1)
                return table_fail(ret, -ENOMEM, "out of memory");
        r = read_sectors(&disk, 0, 1, s0);
        if (r >= 0)
                r = read_sectors(&disk, 1, 1, s1);
        if (r < 0)
                return table_fail(ret, r, "reading the first sectors: %s", strerror(-r));

        if (sector_has_protective_entry(s0) || memcmp(s1, GPT_SIGNATURE, 8) == 0)
                r = gpt_read(ret, &disk);
        else if (sector_is_mbr(s0))
                r = mbr_read(ret, &disk, s0);
        else
                return 0;
        if (r < 0) {
                char error[sizeof ret->error];

                memcpy(error, ret->error, sizeof error);
                partition_table_done(ret);
                memcpy(ret->error, error, sizeof error);
                return r;
        }
        return 0;
}

void partition_table_done(PartitionTable *t) {
        free(t->parts);
        *t = (PartitionTable) {};
}

const char *partition_table_kind_to_string(PartitionTableKind k) {
        static const char *const table[_PARTITION_TABLE_KIND_MAX] = {
                [PARTITION_TABLE_NONE] = "none",
                [PARTITION_TABLE_MBR] = "mbr",
                [PARTITION_TABLE_GPT] = "gpt",
        };

        if (k < 0 || k >= _PARTITION_TABLE_KIND_MAX)
                return NULL;
        return table[k];
}
