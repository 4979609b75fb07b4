/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hashmap.h"

struct HashmapEntry {
        HashmapEntry *next;
        const char *key;
        void *value;
        size_t hash;
        bool case_insensitive;  /* the table's: the iterator compares without it */
};

#define HASHMAP_MIN_BUCKETS 64

static unsigned char fold(unsigned char c, bool ci) {
        return ci && c >= 'A' && c <= 'Z' ? (unsigned char) (c - 'A' + 'a') : c;
}

/* FNV-1a: short keys, no adversary who gains from collisions beyond making
 * their own lookups slower. */
static size_t hash_key(const char *key, bool ci) {
        uint64_t h = UINT64_C(14695981039346656037);

        for (const unsigned char *p = (const unsigned char *) key; *p; p++) {
                h ^= fold(*p, ci);
                h *= UINT64_C(1099511628211);
        }
        return (size_t) h;
}

static bool key_equal(const char *a, const char *b, bool ci) {
        return ci ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

void hashmap_init(Hashmap *h, bool case_insensitive) {
        *h = (Hashmap) { .case_insensitive = case_insensitive };
}

void hashmap_done(Hashmap *h) {
        for (size_t i = 0; i < h->n_buckets; i++)
                for (HashmapEntry *e = h->buckets[i], *next; e; e = next) {
                        next = e->next;
                        free(e);
                }
        free(h->buckets);
        hashmap_init(h, h->case_insensitive);
}

/* Appends e to the end of its chain, keeping the chain's order of insertion. */
static void chain_append(HashmapEntry **buckets, size_t n_buckets, HashmapEntry *e) {
        HashmapEntry **p = &buckets[e->hash % n_buckets];

        while (*p)
                p = &(*p)->next;
        e->next = NULL;
        *p = e;
}

static int grow(Hashmap *h) {
        size_t n = h->n_buckets ? h->n_buckets * 2 : HASHMAP_MIN_BUCKETS;
        HashmapEntry **b = calloc(n, sizeof *b);

        if (!b)
                return -ENOMEM;
        /* Doubling splits each chain in two, in its order: entries of one
         * key stay in the order they were put. */
        for (size_t i = 0; i < h->n_buckets; i++)
                for (HashmapEntry *e = h->buckets[i], *next; e; e = next) {
                        next = e->next;
                        chain_append(b, n, e);
                }
        free(h->buckets);
        h->buckets = b;
        h->n_buckets = n;
        return 0;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        HashmapEntry *e;
        int r;

        if (h->n_entries >= h->n_buckets) {
                r = grow(h);
                if (r < 0)
                        return r;
        }
        e = malloc(sizeof *e);
        if (!e)
                return -ENOMEM;
        *e = (HashmapEntry) { .key = key, .value = value, .hash = hash_key(key, h->case_insensitive),
                              .case_insensitive = h->case_insensitive };
        chain_append(h->buckets, h->n_buckets, e);
        h->n_entries++;
        return 0;
}

bool hashmap_remove(Hashmap *h, const char *key, const void *value) {
        if (h->n_buckets == 0)
                return false;
        for (HashmapEntry **p = &h->buckets[hash_key(key, h->case_insensitive) % h->n_buckets]; *p; p = &(*p)->next)
                if ((*p)->value == value && key_equal((*p)->key, key, h->case_insensitive)) {
                        HashmapEntry *e = *p;

                        *p = e->next;
                        free(e);
                        h->n_entries--;
                        return true;
                }
        return false;
}

static const HashmapEntry *match_from(const HashmapEntry *e, const char *key, size_t hash) {
        for (; e; e = e->next)
                if (e->hash == hash && key_equal(e->key, key, e->case_insensitive))
                        return e;
        return NULL;
}

void *hashmap_first(const Hashmap *h, const char *key, const HashmapEntry **iter) {
        size_t hash;

        *iter = NULL;
        if (h->n_buckets == 0)
                return NULL;
        hash = hash_key(key, h->case_insensitive);
        *iter = match_from(h->buckets[hash % h->n_buckets], key, hash);
        return *iter ? (*iter)->value : NULL;
}

void *hashmap_next(const HashmapEntry **iter, const char *key) {
        if (!*iter)
                return NULL;
        *iter = match_from((*iter)->next, key, (*iter)->hash);
        return *iter ? (*iter)->value : NULL;
}

void *hashmap_get(const Hashmap *h, const char *key) {
        const HashmapEntry *it;

        return hashmap_first(h, key, &it);
}
