/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdisk.h"

/* Where the file systems of a virtual disk are: an MBR (primary, extended and
 * logical partitions), a GPT (headers and entry array CRC-checked, backup
 * header used when the primary is damaged), or neither, in which case the
 * caller treats the whole disk as one file system. */

typedef enum PartitionTableKind {
        PARTITION_TABLE_NONE,
        PARTITION_TABLE_MBR,
        PARTITION_TABLE_GPT,
        _PARTITION_TABLE_KIND_MAX,
} PartitionTableKind;

typedef struct Partition {
        int index;              /* as Linux numbers them: MBR primaries 1-4 by slot, logicals
                                 * from 5 in chain order; GPT entry slot + 1 */
        uint64_t offset;        /* bytes from the start of the virtual disk */
        uint64_t size;          /* bytes */
        uint8_t mbr_type;       /* MBR system id; 0 on GPT */
        uint8_t gpt_type[16];   /* GPT type GUID as stored (Windows byte order); zero on MBR */
} Partition;

typedef struct PartitionTable {
        PartitionTableKind kind;
        bool gpt_backup_used;   /* the primary GPT header or entry array was damaged */
        Partition *parts;       /* sorted by offset, non-overlapping, inside the disk */
        size_t n_parts;
        char error[256];        /* why partition_table_read() failed */
} PartitionTable;

/* Reads the partition table. Returns 0, -EBADMSG for a table that is damaged
 * or inconsistent (overlapping or out-of-disk partitions, both GPT copies
 * bad, a broken EBR chain), or the negative errno of a failed read. On
 * failure *ret holds no partitions and ret->error says why. */
int partition_table_read(VDisk *d, PartitionTable *ret);
void partition_table_done(PartitionTable *t);

const char *partition_table_kind_to_string(PartitionTableKind k);
