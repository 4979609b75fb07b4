/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "extent.h"

/* Scanning and punching over ranges of one image file descriptor.
 *
 * Everything here acts only on the ranges it is given; which ranges are safe
 * is decided by the caller (pass.c) from the image layout. */

typedef struct ScanControl {
        uint64_t min_hole;      /* smallest range worth punching (bytes) */
        uint64_t align;         /* host file system block size; punched ranges are aligned to it */
        uint64_t io_limit;      /* read bandwidth, bytes per second, 0 = unlimited */
        bool dry_run;           /* find and count, punch nothing */
        /* Called between I/O steps, at least every 50 ms of work (also while
         * pacing for io_limit). A negative errno stops the scan with that error:
         * -EINTR lease broken, -ECANCELED cancelled, -ETIME time limit. */
        int (*check)(void *userdata);
        /* Called after every step with bytes examined so far. May be NULL. */
        void (*progress)(uint64_t done, void *userdata);
        void *userdata;
        /* Zero tier under minReclaim: while the data bytes found stay below
         * hold_until, the runs found are remembered, not punched; once they
         * reach it, commit() runs (the caller punches its other tiers then),
         * the remembered runs are punched in file order, and the scan goes on
         * punching as it finds. So each byte is read once, and nothing is
         * punched by a pass that would win less. 0: punch as found. */
        uint64_t hold_until;
        int (*commit)(void *userdata);
} ScanControl;

typedef struct ScanResult {
        uint64_t punched;        /* bytes punched (or that would be, when dry_run) */
        uint64_t examined;       /* bytes of the ranges examined, holes included */
        uint64_t read;           /* bytes actually read */
        uint64_t stop_offset;    /* when stopped early: everything below was done */
        uint64_t held;           /* hold_until: data bytes found but not punched (never committed) */
        bool committed;          /* hold_until: reached, commit() succeeded */
} ScanResult;

/* Zero tier: inside ranges, skip existing holes (SEEK_DATA/SEEK_HOLE), read
 * the data in large chunks, find all-zero runs, trim them to align, keep those
 * of at least min_hole (neighbouring runs merged across chunk and range
 * boundaries when the ranges touch), and punch them with
 * FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE. Drops what it read from the page
 * cache behind itself. Returns 0, or a negative errno with r->stop_offset set. */
int scan_punch_zero_runs(int fd, const ExtentList *ranges, const ScanControl *c, ScanResult *r);

/* Stale tier: punch ranges without reading them. Only the allocated parts
 * count (existing holes are skipped with SEEK_DATA), trimmed to align; ranges
 * shorter than min_hole after trimming are left alone. */
int scan_punch_ranges(int fd, const ExtentList *ranges, const ScanControl *c, ScanResult *r);

/* Bytes of [offset, offset+length) that hold file data (not holes). */
/* The first data segment [*ret_data, *ret_hole) of [pos, end): 1 when there
 * is one, 0 when the rest is a hole, or a negative errno. */
int scan_next_data(int fd, uint64_t pos, uint64_t end, uint64_t *ret_data, uint64_t *ret_hole);
int scan_allocated_bytes(int fd, uint64_t offset, uint64_t length, uint64_t *ret);
