/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>

#include "guard.h"

/* When someone opens a leased file, the kernel sends the lease holder SIGIO
 * (F_SETSIG 0 keeps it at SIGIO), whose default action terminates the
 * process. We do not want a signal at all: the daemon is multi-threaded, so
 * a handler could run on any thread and could not tell which pass to stop.
 * Instead the scanners poll guard_lease_broken() at least every 50 ms, and
 * F_GETLEASE reports the type the lease is being broken to (F_UNLCK or
 * F_RDLCK) from the moment an opener blocks. So SIGIO is ignored, once and
 * process-wide (dispositions are per process anyway), unless somebody already
 * installed a handler of their own, which we leave alone. */
static int sigio_make_harmless(void) {
        struct sigaction old, ign = { .sa_handler = SIG_IGN };

        if (sigaction(SIGIO, NULL, &old) < 0)
                return -errno;
        if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO))
                return 0;
        if (sigaction(SIGIO, &ign, NULL) < 0)
                return -errno;
        return 0;
}

int guard_acquire(int fd) {
        int r;

        r = sigio_make_harmless();
        if (r < 0)
                return r;
        if (fcntl(fd, F_SETSIG, 0) < 0)
                return -errno;
        if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0)
                /* EAGAIN: another open file description of the file exists. */
                return errno == EAGAIN ? -EBUSY : -errno;
        return 0;
}

bool guard_lease_broken(int fd) {
        /* An error also counts as broken: then we cannot prove we are alone. */
        return fcntl(fd, F_GETLEASE) != F_WRLCK;
}

void guard_release(int fd) {
        /* Fails harmlessly when no lease is held, which makes it idempotent. */
        (void) fcntl(fd, F_SETLEASE, F_UNLCK);
}
