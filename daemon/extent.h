/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte range [offset, offset + length). */
typedef struct Extent {
        uint64_t offset;
        uint64_t length;
} Extent;

/* A growable list of extents. After extent_list_normalize() it is sorted
 * by offset, without empty, overlapping or touching neighbours. */
typedef struct ExtentList {
        Extent *items;
        size_t n;
        size_t allocated;
} ExtentList;

int extent_list_add(ExtentList *l, uint64_t offset, uint64_t length);
void extent_list_normalize(ExtentList *l);
uint64_t extent_list_total(const ExtentList *l);
void extent_list_clear(ExtentList *l);
void extent_list_done(ExtentList *l);

/* out = a minus b; both must be normalized. */
int extent_list_subtract(const ExtentList *a, const ExtentList *b, ExtentList *out);
/* out = a intersected with b; both must be normalized. */
int extent_list_intersect(const ExtentList *a, const ExtentList *b, ExtentList *out);
/* Whether [offset, offset+length) lies entirely inside one extent of a normalized list. */
bool extent_list_covers(const ExtentList *l, uint64_t offset, uint64_t length);

static inline uint64_t extent_end(const Extent *e) {
        return e->offset + e->length;
}
