/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* vhdreclaimctl's commands, on a connected Ctl. */

#include "args.h"
#include "client.h"

/* Runs a->command (any but help) and returns the process exit code
 * (CTL_EXIT_* of vhdreclaim-bus.h), having printed the output or the
 * error. */
int ctl_run(Ctl *c, const CtlArgs *a);
