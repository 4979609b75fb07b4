/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "manager.h"

/* The control interface of include/vhdreclaim-bus.h: D-Bus peer to peer on
 * the daemon's Unix socket, one sd-bus server connection per client. */

/* Takes the socket from systemd (sd_listen_fds) or binds it: a stale socket
 * file is replaced, a socket a running daemon answers on is an error
 * (-EADDRINUSE). */
int control_setup(Manager *m);
void control_done(Manager *m);
/* Gives the socket we bound to root and adminGroup (after a reload changed it). */
void control_socket_apply_group(Manager *m);

void control_emit_job_progress(Manager *m, const Job *j, double rate);
void control_emit_job_finished(Manager *m, const Job *j, const char *result, const char *message,
                               uint64_t reclaimed);
