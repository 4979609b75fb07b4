/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "extent.h"
#include "guid.h"

/* A reader for the MS-VHDX format that validates everything a reclamation pass
 * relies on and refuses (with the field and offset named) what it does not
 * understand. It never writes, except vhdx_renew_write_guids(). */

#define VHDX_HEADER_AREA_SIZE   (UINT64_C(1) << 20)
#define VHDX_HEADER_SIZE        4096
#define VHDX_REGION_TABLE_SIZE  (64 * 1024)
#define VHDX_METADATA_TABLE_SIZE (64 * 1024)
#define VHDX_MAX_TABLE_ENTRIES  2047

enum {
        VHDX_PAYLOAD_NOT_PRESENT = 0,
        VHDX_PAYLOAD_UNDEFINED = 1,
        VHDX_PAYLOAD_ZERO = 2,
        VHDX_PAYLOAD_UNMAPPED = 3,
        VHDX_PAYLOAD_FULLY_PRESENT = 6,
        VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
        VHDX_SB_NOT_PRESENT = 0,
        VHDX_SB_PRESENT = 6,
};

typedef struct VhdxHeader {
        bool valid;
        char problem[160];              /* why it is not valid */
        uint64_t sequence;
        Guid file_write_guid;
        Guid data_write_guid;
        Guid log_guid;
        uint16_t log_version;
        uint16_t version;
        uint32_t log_length;
        uint64_t log_offset;
        uint8_t raw[VHDX_HEADER_SIZE];
} VhdxHeader;

typedef struct VhdxRegion {
        Guid guid;
        uint64_t offset;
        uint32_t length;
        bool required;
        const char *name;               /* "BAT", "metadata" or "unknown" */
} VhdxRegion;

typedef struct VhdxMetadataItem {
        Guid id;
        uint32_t offset;                /* relative to the metadata region */
        uint32_t length;
        bool is_user;
        bool is_virtual_disk;
        bool is_required;
        const char *name;
} VhdxMetadataItem;

/* Where the parser reads from: a file descriptor in production, a memory
 * buffer in the fuzzer. */
typedef struct VhdxSource {
        uint64_t size;
        /* Reads exactly len bytes at offset (within size): 0 or negative errno. */
        int (*pread)(void *userdata, void *buf, size_t len, uint64_t offset);
        void *userdata;
} VhdxSource;

typedef struct VhdxBatEntry {
        uint64_t index;                 /* in the BAT */
        uint64_t entry;                 /* the entry, host byte order */
} VhdxBatEntry;

typedef struct Vhdx {
        uint64_t file_size;
        char creator[256];

        VhdxHeader headers[2];
        unsigned current;               /* index of the current header */
        bool headers_identical;
        bool log_dirty;                 /* LogGuid not zero: the log must be replayed */

        bool region_table_valid[2];
        char region_table_problem[2][160];
        unsigned region_table_used;
        VhdxRegion *regions;
        size_t n_regions;
        uint64_t bat_offset, bat_length;
        uint64_t metadata_offset, metadata_length;

        VhdxMetadataItem *items;
        size_t n_items;
        uint32_t block_size;
        bool leave_block_allocated;
        bool has_parent;
        uint64_t virtual_size;
        uint32_t logical_sector_size;
        uint32_t physical_sector_size;
        Guid virtual_disk_id;
        char *parent_locator;           /* "key=value; ..." of the parent locator, if any */

        uint64_t chunk_ratio;
        uint64_t data_blocks;
        uint64_t bitmap_blocks;
        uint64_t bat_entries;
        /* The present entries only (payload FULLY/PARTIALLY_PRESENT, sector
         * bitmap PRESENT), by index: at most one per MiB of the file, where
         * the whole BAT can be far larger than the file. The other states
         * hold no file space and read as zeros: only their counts are kept. */
        VhdxBatEntry *present;
        size_t n_present, present_allocated;

        uint64_t payload_state_count[8];
        uint64_t bitmap_present_count;
} Vhdx;

/* Whether the first bytes of a file carry the VHDX file type identifier. */
bool vhdx_has_signature(const void *first8);

/* Parses and validates. On a format error returns -EBADMSG (or -EOPNOTSUPP for
 * unknown required items) and sets *ret_error to a message naming the field
 * and its file offset. A dirty log is not an error: check v->log_dirty. */
int vhdx_open(const VhdxSource *src, Vhdx **ret, char **ret_error);
Vhdx *vhdx_free(Vhdx *v);

static inline uint64_t vhdx_bat_index(const Vhdx *v, uint64_t block) {
        return block + block / v->chunk_ratio;
}
/* The BAT entry at index when it is present, else 0 (NOT_PRESENT). */
uint64_t vhdx_bat_entry(const Vhdx *v, uint64_t index);
/* Its state when present, else VHDX_PAYLOAD_NOT_PRESENT (see Vhdx.present). */
static inline unsigned vhdx_block_state(const Vhdx *v, uint64_t block) {
        return (unsigned) (vhdx_bat_entry(v, vhdx_bat_index(v, block)) & 7);
}
static inline uint64_t vhdx_block_file_offset(const Vhdx *v, uint64_t block) {
        return (vhdx_bat_entry(v, vhdx_bat_index(v, block)) >> 20) * (UINT64_C(1) << 20);
}

/* File ranges by role (all normalized, clipped to the file size):
 *  structures: header area, log, regions, present sector-bitmap blocks —
 *              only all-zero runs may be punched there;
 *  data:       FULLY_PRESENT payload blocks;
 *  stale:      file space past 1 MiB that no live structure or block uses. */
int vhdx_file_ranges(const Vhdx *v, ExtentList *structures, ExtentList *data, ExtentList *stale);

/* Maps virtual disk ranges to the file ranges of FULLY_PRESENT blocks that
 * back them (other states are skipped); appended to out, unnormalized. */
int vhdx_map_virtual_ranges(const Vhdx *v, const ExtentList *virt, ExtentList *out);

/* Reads virtual disk bytes; blocks in any state but FULLY_PRESENT read as
 * zeros. Fails with -EOPNOTSUPP on differencing disks. */
int vhdx_read_virtual(const Vhdx *v, const VhdxSource *src, void *buf, size_t len, uint64_t offset);

/* New FileWriteGuid and DataWriteGuid with the specification's two-step
 * header update: the non-current header is written with sequence + 1 and
 * flushed, then the other with sequence + 2 and flushed. */
int vhdx_renew_write_guids(Vhdx *v, int fd);
/* The same update renewing FileWriteGuid only: for changes to the file that
 * leave every guest-visible byte as it was (compaction). */
int vhdx_renew_file_write_guid(Vhdx *v, int fd);
/* Rewrites one present payload entry in place (not flushed) and keeps the
 * kept entries and the state counts in step; -EINVAL for any other entry. */
int vhdx_write_bat_entry(Vhdx *v, int fd, uint64_t index, uint64_t entry);
bool vhdx_bat_index_is_bitmap(const Vhdx *v, uint64_t index);

void vhdx_print_inspect(const Vhdx *v, FILE *f);
const char *vhdx_payload_state_to_string(unsigned state);
