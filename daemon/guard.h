/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

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
 * nobody: a file someone holds a lease on (smbd does for its clients'
 * oplocks with `kernel oplocks = yes`) is not opened at all, since even a
 * failing non-blocking open breaks the lease; whether anyone else has the
 * file open is then asked through a read-only descriptor, because a
 * read-write open would break other processes' read leases. -EBUSY when the
 * image is in use, -ESTALE when the path was replaced between the two opens.
 * beneath: as open_beneath()'s (beneath.h): for images found in a [watch]
 * folder, which its users may write to, no symbolic link below the folder
 * is followed (-ELOOP). */
int guard_open_leased(const char *path, bool writable, size_t beneath, int *ret_fd);
/* open(path, flags) without moving the file's atime (O_NOATIME, where we own
 * the file or hold CAP_FOWNER; else a plain open). Every descriptor that
 * reads an image comes from here: smbd refuses to reconnect a client's
 * durable handle when any of the file's times changed while the client was
 * away, atime included, and a read under relatime moves it. Returns the
 * descriptor or -errno. */
int guard_open_image(const char *path, int flags);
/* The same, opened as open_beneath() does (beneath 0: as guard_open_image()). */
int guard_open_image_beneath(const char *path, size_t beneath, int flags);
bool guard_lease_broken(int fd);
/* Whether anyone holds a lease (or NFS delegation) on path, from
 * /proc/locks; opens nothing but /proc/locks. 1 yes, 0 no, negative errno.
 * Only leases of processes in our PID namespace are listed there. */
int guard_file_leased(const char *path);
/* The same over /proc/locks-formatted text (for tests). */
int guard_lease_listed(FILE *locks, dev_t dev, ino_t ino, bool match_dev);
void guard_release(int fd);
