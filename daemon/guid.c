/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "guid.h"

/* Byte permutation between RFC 4122 order and Windows' mixed-endian order;
 * it is its own inverse. */
static const uint8_t guid_swap[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };

void guid_from_uuid(const uuid_t in, Guid *out) {
        for (unsigned i = 0; i < 16; i++)
                out->bytes[i] = in[guid_swap[i]];
}

void guid_to_uuid(const Guid *in, uuid_t out) {
        for (unsigned i = 0; i < 16; i++)
                out[i] = in->bytes[guid_swap[i]];
}

int guid_from_string(const char *s, Guid *out) {
        uuid_t u;

        if (uuid_parse(s, u) < 0)
                return -EINVAL;
        guid_from_uuid(u, out);
        return 0;
}

void guid_to_string(const Guid *g, char out[GUID_STRING_MAX]) {
        uuid_t u;

        guid_to_uuid(g, u);
        uuid_unparse_lower(u, out);
}

bool guid_is_null(const Guid *g) {
        static const Guid null;
        return memcmp(g, &null, sizeof null) == 0;
}

bool guid_equal(const Guid *a, const Guid *b) {
        return memcmp(a->bytes, b->bytes, 16) == 0;
}

void guid_generate(Guid *out) {
        uuid_t u;

        uuid_generate(u);
        guid_from_uuid(u, out);
}
