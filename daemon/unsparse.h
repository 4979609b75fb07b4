/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

/* `set-sparse DISK false`: re-allocates every hole of an image (fallocate
 * mode 0: the bytes read back the same), under the write lease. All or
 * nothing: when the host runs out of space, the lease breaks or cancel is
 * set, the holes filled so far are punched again and the image is as it was.
 * Returns 0, -ENOSPC, -EBUSY (in use, or opened meanwhile), -ECANCELED, or
 * another negative errno (-ELOOP: a symlink below the folder at beneath, as
 * guard_open_leased()'s). */
int unsparse_file(const char *path, size_t beneath, const atomic_bool *cancel);
