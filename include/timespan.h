/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* How long, in one word, as both vhdreclaimd's service status ("next pass in
 * 12m") and vhdreclaimctl's tables ("in 12m", "2d ago") print it: one
 * spelling for the daemon and its client. The code is in daemon/timespan.c,
 * part of the core library that vhdreclaimctl links too. */

#include <stdint.h>

/* usec in its largest whole unit, rounded down: "3d", "5h", "12m", "40s"
 * (and "0s" below a second). */
#define TIMESPAN_UNIT_MAX 24
const char *format_timespan_unit(char buf[static TIMESPAN_UNIT_MAX], uint64_t usec);
