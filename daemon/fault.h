/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Fault injection for the test suite, off unless its environment variable is
 * set. Where device-mapper is missing (containers, CI), a dm-error device
 * cannot be put under an image's file system; this stands in for it:
 *
 *   VHDRECLAIM_FAULT_READ_AFTER=N   every scan read that reaches past byte N
 *                                   of the image file fails with EIO, as a
 *                                   disk with bad sectors from N on would.
 *
 * It keeps no state: the variable is looked up on each call (one lookup per
 * scan chunk of up to 8 MiB, so the cost is nil), which also makes it follow
 * each daemon worker without any set-up. */

#define FAULT_READ_AFTER_ENV "VHDRECLAIM_FAULT_READ_AFTER"

/* 0, or -EIO when the read of [offset, offset+len) is to fail. */
int fault_check_read(uint64_t offset, size_t len);
