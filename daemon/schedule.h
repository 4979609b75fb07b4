/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
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

/* Spreading: each image has a stable phase within the interval, hashed
 * from its name, and its periodic passes fall on the times t with
 * t mod interval == phase, the first at least interval/2 after the last
 * pass: steadily one interval apart, and many images spread over the whole
 * interval instead of starting at the same minute. Never passed, or overdue
 * by a whole interval (the daemon was down): now, as schedule_next(). A
 * slot already past (a restart in between): now. Plus delay. */
uint64_t schedule_phase(const char *name, uint64_t interval);
uint64_t schedule_next_spread(uint64_t last, uint64_t interval, uint64_t phase, uint64_t delay, uint64_t now);

/* Durable handles (Samba): a client that lost its connection may reconnect
 * to the file within smbd's window, and is refused if the file changed.
 * A pass that may modify the image therefore waits until idle_delay after
 * its last change (ctime, which no writer can avoid setting) and its last
 * close seen by the daemon: the realtime usec it may start at (<= now:
 * now). last_close_ago: how long ago the last close was (UINT64_MAX: none). */
uint64_t schedule_quiet_until(int64_t ctime_nsec, uint64_t last_close_ago, uint64_t idle_delay, uint64_t now);

/* maxParallel per host file system: whether a pass of an image on dev may
 * start while the passes on running_devs[0..n) run. */
bool schedule_device_has_room(const uint64_t *running_devs, size_t n, uint64_t dev, unsigned max_parallel);

/* Uniform in [0, max]. */
uint64_t schedule_random_delay(uint64_t max);

/* (Re)arms the disk's periodic timer from its record and settings; disarms
 * it for missing images and when interval is 0. */
int schedule_disk(Disk *d);
void schedule_disk_cancel(Disk *d);
/* The same for [trim], when it names mounts. */
int schedule_trim(Manager *m);
