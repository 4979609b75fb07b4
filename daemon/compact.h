/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "extent.h"
#include "vhdx.h"

/* Compaction shrinks a dynamic VHDX file in place: payload blocks that read
 * as zeros become PAYLOAD_BLOCK_ZERO, live blocks from the end of the file
 * move into the lowest free slots, and the file is cut after the last
 * structure or block.
 *
 * Crash safety comes from ordering alone, so that the file on disk is a valid
 * image that reads as before at every instant:
 *   1. FileWriteGuid is renewed (two-step header update) before anything else
 *      is written; DataWriteGuid stays, since no guest-visible byte changes;
 *   2. a moved block's data is copied into a slot nothing refers to and made
 *      durable before the BAT entry that points to it is written;
 *   3. that BAT entry is durable before the old location is punched or cut.
 * A single BAT entry is 8 aligned bytes inside one sector, so it is written
 * whole or not at all. */

typedef struct CompactControl {
        bool dry_run;
        /* Polled between copies (at least every MiB): a negative errno stops
         * the compaction there, leaving a valid, partly compacted image. */
        int (*check)(void *userdata);
        void *userdata;
        /* File ranges the caller knows to read as zeros for the guest (the
         * free tier's ranges in a dry run, when nothing was punched yet). */
        const ExtentList *known_zero;
} CompactControl;

typedef struct CompactResult {
        uint64_t blocks_zeroed;         /* FULLY_PRESENT blocks now PAYLOAD_BLOCK_ZERO */
        uint64_t blocks_moved;
        uint64_t bytes_moved;           /* data bytes copied */
        uint64_t file_size_before;
        uint64_t file_size_after;       /* what it is (or would be, dry run) */
        uint64_t stop_block;            /* the block being handled when it stopped */
} CompactResult;

/* Fixed and differencing disks are not compacted (-EOPNOTSUPP, *ret_why says
 * why): a fixed disk must keep its blocks allocated, and a differencing disk's
 * unallocated blocks mean "read the parent". Returns 0 when done, or when
 * nothing would shrink (then nothing was written, and *ret_why says why when
 * something stands at the end of the file), or the negative errno of the stop
 * (check()'s, or an I/O error such as -ENOSPC) with the image valid. */
int compact_vhdx(Vhdx *v, int fd, const CompactControl *c, CompactResult *res, const char **ret_why);
