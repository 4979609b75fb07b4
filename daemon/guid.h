/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uuid/uuid.h>

/* GUIDs as stored on disk by Windows: the first three fields little-endian.
 * libuuid's uuid_t is big-endian throughout; these convert between the two. */

typedef struct Guid {
        uint8_t bytes[16];      /* on-disk (Windows) order */
} Guid;

#define GUID_STRING_MAX 37

void guid_from_uuid(const uuid_t in, Guid *out);
void guid_to_uuid(const Guid *in, uuid_t out);
/* Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; 0 or -EINVAL. */
int guid_from_string(const char *s, Guid *out);
/* Lower-case canonical text, as Windows prints it (without braces). */
void guid_to_string(const Guid *g, char out[GUID_STRING_MAX]);
bool guid_is_null(const Guid *g);
bool guid_equal(const Guid *a, const Guid *b);
/* A new random GUID (uuid_generate), in on-disk order. */
void guid_generate(Guid *out);
