/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>

/* The in-use guard (DESIGN.md safety item 4): an exclusive write lease on the
 * one descriptor a pass uses for all access to an image.
 *
 * guard_acquire() takes F_SETLEASE F_WRLCK on fd: 0 on success, -EBUSY when
 * someone else has the file open (the pass is skipped as in-use), another
 * negative errno when leases are unavailable. It makes sure the lease-break
 * signal cannot kill the process; breaks are detected by polling
 * guard_lease_broken() between I/O steps, which the scanners do at least
 * every 50 ms of work. guard_release() drops the lease (idempotent). */
int guard_acquire(int fd);
/* Opens path (read-write when writable) and takes the lease, disturbing
 * nobody: whether anyone else has the file open is asked through a
 * read-only descriptor first, because even a non-blocking read-write open
 * breaks other processes' read leases (Samba's oplocks). -EBUSY when the
 * image is in use, -ESTALE when the path was replaced between the two opens. */
int guard_open_leased(const char *path, bool writable, int *ret_fd);
bool guard_lease_broken(int fd);
void guard_release(int fd);
