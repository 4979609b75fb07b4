/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <inttypes.h>
#include <stdio.h>

#include "timespan.h"

#define SEC_PER_MINUTE UINT64_C(60)
#define SEC_PER_HOUR (UINT64_C(60) * SEC_PER_MINUTE)
#define SEC_PER_DAY (UINT64_C(24) * SEC_PER_HOUR)

const char *format_timespan_unit(char buf[static TIMESPAN_UNIT_MAX], uint64_t usec) {
        uint64_t sec = usec / UINT64_C(1000000);

        if (sec >= SEC_PER_DAY)
                snprintf(buf, TIMESPAN_UNIT_MAX, "%" PRIu64 "d", sec / SEC_PER_DAY);
        else if (sec >= SEC_PER_HOUR)
                snprintf(buf, TIMESPAN_UNIT_MAX, "%" PRIu64 "h", sec / SEC_PER_HOUR);
        else if (sec >= SEC_PER_MINUTE)
                snprintf(buf, TIMESPAN_UNIT_MAX, "%" PRIu64 "m", sec / SEC_PER_MINUTE);
        else
                snprintf(buf, TIMESPAN_UNIT_MAX, "%" PRIu64 "s", sec);
        return buf;
}
