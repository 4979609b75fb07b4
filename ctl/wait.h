/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* --wait: follows jobs through the JobProgress and JobFinished signals
 * until each has ended, showing progress as it goes. */

#include <stdbool.h>
#include <stdint.h>

#include "client.h"

typedef enum WaitOutput {
        WAIT_OUTPUT_BAR,        /* a terminal: one bar redrawn in place */
        WAIT_OUTPUT_LINES,      /* a pipe or file: a line per update, at most one per job and second */
        WAIT_OUTPUT_JSON,       /* nothing while waiting, then a JSON array of the results */
} WaitOutput;

typedef struct Waiter Waiter;

/* Subscribes to the job signals. Call it before the method that starts the
 * jobs, so that none that ends quickly is missed. Returns 0 or a negative
 * errno (logged). */
int waiter_new(Waiter **ret, Ctl *c);
Waiter *waiter_free(Waiter *w);

/* Waits until every job in ids has ended. dry_run words the results as
 * estimates. Returns CTL_EXIT_OK when each ended in success, nothing to do
 * or a skip, CTL_EXIT_FAILED when any did not, CTL_EXIT_UNREACHABLE when
 * the connection was lost. */
int waiter_run(Waiter *w, const uint64_t *ids, size_t n_ids, WaitOutput output, bool dry_run);

static inline void waiter_freep(Waiter **w) {
        waiter_free(*w);
}
#define _cleanup_waiter_ __attribute__((cleanup(waiter_freep)))
