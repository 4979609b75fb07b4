/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Fault injection for the test suite. Where device-mapper is missing
 * (containers, CI), a dm-error device cannot be put under an image's file
 * system; this stands in for it:
 *
 *   VHDRECLAIM_FAULT_READ_AFTER=N   every scan read that reaches past byte N
 *                                   of the image file fails with EIO, as a
 *                                   disk with bad sectors from N on would.
 *
 * Only the test daemon, vhdreclaimd-fault (built with the tests, never
 * installed), has it: it links fault.c, which looks the variable up on each
 * call (one lookup per scan chunk of up to 8 MiB), so it follows each worker
 * without set-up. The core library, and so the shipped vhdreclaimd, links
 * fault-off.c instead, which returns 0 and reads no environment: a stray
 * variable in a unit file cannot make a production pass fail. (An object
 * file given to the linker comes before the archive, so fault.c's
 * definition wins where it is linked, and fault-off.o is never pulled in.) */

#define FAULT_READ_AFTER_ENV "VHDRECLAIM_FAULT_READ_AFTER"

/* 0, or -EIO when the read of [offset, offset+len) is to fail. */
int fault_check_read(uint64_t offset, size_t len);
