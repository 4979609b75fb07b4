/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "manager.h"

/* The service manager's side channel (sd_notify): READY=1 once the
 * configuration and the socket are ready, STATUS= saying what the daemon
 * does, RELOADING=1 + MONOTONIC_USEC= in one datagram before a reload, then
 * READY=1 again, STOPPING=1 on the way out. Outside systemd (no
 * NOTIFY_SOCKET) every call does nothing. */

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
/* Recomputes the status line from the manager and sends it when it changed. */
void notify_update_status(Manager *m);
/* The status line: "idle; 12 images, next pass in 3h", "reclaiming ubuntu: 41%". */
int notify_format_status(Manager *m, char **ret);
