/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The connection to vhdreclaimd: D-Bus peer to peer over its Unix socket,
 * and the translation of its errors into messages and exit codes. */

#include <stdbool.h>
#include <systemd/sd-bus.h>

typedef struct Ctl {
        sd_bus *bus;
        const char *socket_path;
        bool json;
} Ctl;

/* --socket, else $VHDRECLAIM_SOCKET, else the built-in default. */
const char *ctl_socket_path(const char *option);

/* Connects and authenticates. Returns 0, or CTL_EXIT_UNREACHABLE after
 * printing why. */
int ctl_connect(Ctl *c);
void ctl_disconnect(Ctl *c);

/* A method call on the manager object, to fill with arguments. Returns 0
 * or a negative errno (logged). */
int ctl_new_call(Ctl *c, const char *method, sd_bus_message **ret);

/* Sends m and waits for the answer. Returns 0 with *ret_reply set, or an
 * exit code after printing the error in words (see ctl_report_error()). */
int ctl_call(Ctl *c, sd_bus_message *m, sd_bus_message **ret_reply);

/* Prints a failed call in words, returns its exit code: the connection
 * lost or timed out -> CTL_EXIT_UNREACHABLE, anything the daemon refused
 * -> CTL_EXIT_FAILED. */
int ctl_report_error(Ctl *c, const sd_bus_error *error, int r);

/* For replies that do not parse: logs and returns CTL_EXIT_FAILED. */
int ctl_bad_reply(int r);
