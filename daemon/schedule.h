/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdint.h>

#include "manager.h"

/* Periodic passes: `interval` after the last pass, plus a random delay of
 * up to `randomizedDelay`, on CLOCK_REALTIME timers. A pass that should have
 * run while the daemon was down runs right after the start (plus the random
 * delay), like a systemd timer with Persistent=true. */

/* The next periodic pass (realtime usec) of an image whose last pass started
 * at last (0 = never), seen at now; delay is the random part, already drawn.
 * 0 when interval is 0 (no periodic passes). Overdue or never: now + delay. */
uint64_t schedule_next(uint64_t last, uint64_t interval, uint64_t delay, uint64_t now);

/* Uniform in [0, max]. */
uint64_t schedule_random_delay(uint64_t max);

/* (Re)arms the disk's periodic timer from its record and settings; disarms
 * it for missing images and when interval is 0. */
int schedule_disk(Disk *d);
void schedule_disk_cancel(Disk *d);
/* The same for [trim], when it names mounts. */
int schedule_trim(Manager *m);
