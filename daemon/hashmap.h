/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A table from strings to pointers, for finding a disk by name or path
 * among thousands without comparing against each. Chained; a key may map to
 * several values, which a lookup meets in the order they were put. The key
 * strings are the caller's (usually a field of the value) and must live and
 * stay unchanged while in the table. Case-insensitive tables hash and
 * compare keys with ASCII case folded, as strcasecmp() does. */

typedef struct HashmapEntry HashmapEntry;

typedef struct Hashmap {
        HashmapEntry **buckets;
        size_t n_buckets;
        size_t n_entries;
        bool case_insensitive;
} Hashmap;

void hashmap_init(Hashmap *h, bool case_insensitive);
void hashmap_done(Hashmap *h);

/* Adds key → value after any entries of the same key. -ENOMEM. */
int hashmap_put(Hashmap *h, const char *key, void *value);
/* Removes the entry of key and value; false if there is none. */
bool hashmap_remove(Hashmap *h, const char *key, const void *value);
/* The first value put under key (NULL: none). */
void *hashmap_get(const Hashmap *h, const char *key);

/* The values of key one after the other, in the order they were put:
 *     for (void *v = hashmap_first(h, key, &it); v; v = hashmap_next(&it, key)) */
void *hashmap_first(const Hashmap *h, const char *key, const HashmapEntry **iter);
void *hashmap_next(const HashmapEntry **iter, const char *key);
