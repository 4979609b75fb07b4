/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "build-config.h"
#include "client.h"
#include "log.h"
#include "macro.h"
#include "vhdreclaim-bus.h"

const char *ctl_socket_path(const char *option) {
        const char *e;

        if (option)
                return option;
        e = getenv("VHDRECLAIM_SOCKET");
        if (e && *e)
                return e;
        return DEFAULT_SOCKET_PATH;
}

/* Connecting ourselves, rather than through an sd-bus address, gives the
 * exact reason a daemon cannot be reached, and needs no address escaping. */
static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        size_t len = strlen(path);

        if (len == 0)
                return -EINVAL;
        if (len >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, len);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1)) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* EACCES on connect: the daemon is there, but its socket (or a folder on
 * the way) is not open to us. Name the group that may connect. */
static void log_socket_restricted(const char *path) {
        struct stat st;
        struct group *g;
        char gid[32];

        if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
                log_error("cannot reach vhdreclaimd at %s: permission denied on a folder of the path", path);
                return;
        }
        g = getgrgid(st.st_gid);
        snprintf(gid, sizeof gid, "%u", (unsigned) st.st_gid);
        log_error("cannot connect to vhdreclaimd at %s: permission denied: the socket is restricted to "
                  "root and group \"%s\" (mode %04o); run as root or as a member of that group",
                  path, g ? g->gr_name : gid, (unsigned) (st.st_mode & 07777));
}

int ctl_connect(Ctl *c) {
        _cleanup_close_ int fd = -1;
        sd_bus *bus = NULL;
        int r;

        fd = connect_unix(c->socket_path);
        if (fd == -EACCES || fd == -EPERM) {
                log_socket_restricted(c->socket_path);
                return CTL_EXIT_UNREACHABLE;
        }
        if (fd < 0) {
                log_error_errno(fd, "cannot reach vhdreclaimd at %s: %m (is vhdreclaimd running?)", c->socket_path);
                return CTL_EXIT_UNREACHABLE;
        }

        r = sd_bus_new(&bus);
        if (r < 0) {
                log_error_errno(r, "cannot allocate a bus connection: %m");
                return CTL_EXIT_FAILED;
        }
        /* Peer to peer: no Hello, and no bus daemon to send AddMatch to. */
        r = sd_bus_set_bus_client(bus, false);
        if (r >= 0)
                r = sd_bus_set_fd(bus, fd, fd);
        if (r >= 0) {
                TAKE_FD(fd);    /* the bus owns it now */
                r = sd_bus_start(bus);
        }
        if (r < 0) {
                sd_bus_flush_close_unref(bus);
                log_error_errno(r, "cannot talk to vhdreclaimd at %s: %m", c->socket_path);
                return CTL_EXIT_UNREACHABLE;
        }
        c->bus = bus;
        return 0;
}

void ctl_disconnect(Ctl *c) {
        c->bus = sd_bus_flush_close_unref(c->bus);
}

int ctl_new_call(Ctl *c, const char *method, sd_bus_message **ret) {
        int r;

        r = sd_bus_message_new_method_call(c->bus, ret, NULL, VHDRECLAIM_BUS_PATH,
                                           VHDRECLAIM_BUS_INTERFACE, method);
        if (r < 0)
                return log_error_errno(r, "cannot create a %s call: %m", method);
        return 0;
}

int ctl_report_error(Ctl *c, const sd_bus_error *error, int r) {
        if (sd_bus_error_has_name(error, VHDRECLAIM_ERROR_ACCESS) ||
            sd_bus_error_has_name(error, SD_BUS_ERROR_ACCESS_DENIED)) {
                /* The daemon knows its adminGroup; we do not. */
                const char *why = error->message;

                if (why && strncasecmp(why, "permission denied: ", 19) == 0)
                        why += 19;
                log_error("permission denied: %s", why && *why ? why :
                          "changing state needs root or membership of the daemon's adminGroup");
                return CTL_EXIT_FAILED;
        }
        if (r == -ETIMEDOUT) {
                log_error("vhdreclaimd at %s did not answer in time", c->socket_path);
                return CTL_EXIT_UNREACHABLE;
        }
        if (sd_bus_is_open(c->bus) <= 0) {
                log_error_errno(r, "lost the connection to vhdreclaimd at %s: %m", c->socket_path);
                return CTL_EXIT_UNREACHABLE;
        }
        if (error && error->message && *error->message)
                log_error("%s", error->message);
        else
                log_error_errno(r, "the call failed: %m");
        return CTL_EXIT_FAILED;
}

int ctl_call(Ctl *c, sd_bus_message *m, sd_bus_message **ret_reply) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call(c->bus, m, 0, &error, ret_reply);
        if (r < 0)
                return ctl_report_error(c, &error, r);
        return 0;
}

int ctl_bad_reply(int r) {
        log_error_errno(r, "cannot parse the daemon's answer: %m");
        return CTL_EXIT_FAILED;
}
