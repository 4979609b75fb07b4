/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>

#include "fault.h"

/* The byte offset from which reads fail, when the variable holds a plain
 * decimal number; anything else leaves fault injection off. */
static int read_limit(uint64_t *ret) {
        const char *e = secure_getenv(FAULT_READ_AFTER_ENV);
        unsigned long long v;
        char *end;

        if (!e || *e < '0' || *e > '9')
                return -ENOENT;
        errno = 0;
        v = strtoull(e, &end, 10);
        if (errno != 0 || *end != 0)
                return -ENOENT;
        *ret = (uint64_t) v;
        return 0;
}

int fault_check_read(uint64_t offset, size_t len) {
        uint64_t limit;

        if (read_limit(&limit) < 0)
                return 0;
        return offset + len > limit ? -EIO : 0;
}
