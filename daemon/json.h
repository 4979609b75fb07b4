/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The daemon's one JSON module: what reports and the history need, no more.
 * Output: a string with RFC 8259 escaping. Input: one flat object (the kind
 * the history writes), each member a string, a non-negative integer, true,
 * false or null. */

void json_write_string(FILE *f, const char *s);

/* File names are bytes, but JSON, D-Bus and the journal's readers want
 * UTF-8. The one rule for all of them: a byte that is not part of
 * well-formed UTF-8 (RFC 3629) becomes U+FFFD. utf8_sanitize() returns a
 * new string (NULL only when out of memory; s NULL is ""). */
bool utf8_is_valid(const char *s);
char *utf8_sanitize(const char *s);

typedef enum JsonType {
        JSON_STRING,
        JSON_NUMBER,
        JSON_TRUE,
        JSON_FALSE,
        JSON_NULL,
} JsonType;

typedef struct JsonValue {
        JsonType type;
        char *string;           /* JSON_STRING: unescaped, NUL-free UTF-8; the callback may take it */
        uint64_t number;        /* JSON_NUMBER */
} JsonValue;

typedef int (*json_member_fn)(const char *key, JsonValue *value, void *userdata);

/* Parses text[0..len) as one object, whitespace around it allowed, calling
 * fn for every member in order. Anything else (nesting, arrays, negative or
 * fractional numbers, a NUL or a surrogate escaped or raw, trailing bytes)
 * is -EBADMSG; fn's negative return stops the parse and is returned. */
/* Digits only: no sign, no fraction, no overflow (JSON numbers and the state
 * files' counters alike). 0 or -EBADMSG. */
int json_parse_u64(const char *s, size_t len, uint64_t *ret);
int json_parse_flat_object(const char *text, size_t len, json_member_fn fn, void *userdata);
