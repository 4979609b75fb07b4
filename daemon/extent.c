/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>

#include "extent.h"
#include "macro.h"

int extent_list_add(ExtentList *l, uint64_t offset, uint64_t length) {
        if (length == 0)
                return 0;
        if (offset + length < offset)
                return -ERANGE;

        /* Appending in order is the common case: extend the last item. */
        if (l->n > 0 && extent_end(&l->items[l->n - 1]) == offset) {
                l->items[l->n - 1].length += length;
                return 0;
        }
        if (l->n == l->allocated) {
                size_t na = l->allocated ? l->allocated * 2 : 16;
                Extent *ni = realloc(l->items, na * sizeof *ni);
                if (!ni)
                        return -ENOMEM;
                l->items = ni;
                l->allocated = na;
        }
        l->items[l->n++] = (Extent) { offset, length };
        return 0;
}

static int extent_cmp(const void *a, const void *b) {
        const Extent *x = a, *y = b;
        if (x->offset != y->offset)
                return x->offset < y->offset ? -1 : 1;
        return x->length < y->length ? -1 : x->length > y->length;
}

void extent_list_normalize(ExtentList *l) {
        size_t w = 0;

        if (l->n == 0)
                return;
        qsort(l->items, l->n, sizeof *l->items, extent_cmp);
        for (size_t r = 1; r < l->n; r++) {
                Extent *cur = &l->items[w];
                if (l->items[r].offset <= extent_end(cur)) {
                        uint64_t end = MAX(extent_end(cur), extent_end(&l->items[r]));
                        cur->length = end - cur->offset;
                } else
                        l->items[++w] = l->items[r];
        }
        l->n = w + 1;
}

uint64_t extent_list_total(const ExtentList *l) {
        uint64_t t = 0;
        for (size_t i = 0; i < l->n; i++)
                t += l->items[i].length;
        return t;
}

void extent_list_clear(ExtentList *l) {
        l->n = 0;
}

void extent_list_done(ExtentList *l) {
        free(l->items);
        *l = (ExtentList) {};
}

int extent_list_subtract(const ExtentList *a, const ExtentList *b, ExtentList *out) {
        size_t j = 0;
        int r;

        for (size_t i = 0; i < a->n; i++) {
                uint64_t pos = a->items[i].offset, end = extent_end(&a->items[i]);

                while (j < b->n && extent_end(&b->items[j]) <= pos)
                        j++;
                for (size_t k = j; k < b->n && b->items[k].offset < end; k++) {
                        if (b->items[k].offset > pos) {
                                r = extent_list_add(out, pos, b->items[k].offset - pos);
                                if (r < 0)
                                        return r;
                        }
                        pos = MAX(pos, extent_end(&b->items[k]));
                }
                if (pos < end) {
                        r = extent_list_add(out, pos, end - pos);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int extent_list_intersect(const ExtentList *a, const ExtentList *b, ExtentList *out) {
        size_t i = 0, j = 0;

        while (i < a->n && j < b->n) {
                uint64_t s = MAX(a->items[i].offset, b->items[j].offset);
                uint64_t e = MIN(extent_end(&a->items[i]), extent_end(&b->items[j]));
                if (s < e) {
                        int r = extent_list_add(out, s, e - s);
                        if (r < 0)
                                return r;
                }
                if (extent_end(&a->items[i]) < extent_end(&b->items[j]))
                        i++;
                else
                        j++;
        }
        return 0;
}

bool extent_list_covers(const ExtentList *l, uint64_t offset, uint64_t length) {
        size_t lo = 0, hi = l->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (extent_end(&l->items[mid]) <= offset)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < l->n && l->items[lo].offset <= offset &&
               extent_end(&l->items[lo]) >= offset + length;
}
