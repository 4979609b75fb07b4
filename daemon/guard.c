/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard.h"
#include "macro.h"

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

static int open_nonblocking(const char *path, int flags) {
        /* O_NOFOLLOW is not used: images are often reached through symlinks.
         * The lease is what guarantees exclusivity. O_NONBLOCK: an open that
         * would wait for someone else's lease to break fails instead. */
        int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

        if (fd < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        return fd;
}

static bool same_file(int a, int b) {
        struct stat sa, sb;

        return fstat(a, &sa) >= 0 && fstat(b, &sb) >= 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the image and takes the write lease without disturbing anyone.
 * A read-write open breaks other processes' read leases (Samba's oplocks)
 * even when it is non-blocking, so whether the file is free is first asked
 * through a read-only descriptor, whose lease request fails harmlessly when
 * anyone else has the file open. Only then, with nobody there, is it reopened
 * read-write; what remains is the instant between the two opens. */
int guard_open_leased(const char *path, bool writable, int *ret) {
        _cleanup_close_ int probe = -1, fd = -1;
        int r;

        probe = open_nonblocking(path, O_RDONLY);
        if (probe < 0)
                return probe;
        r = guard_acquire(probe);
        if (r < 0)
                return r;
        if (!writable) {
                *ret = TAKE_FD(probe);
                return 0;
        }
        /* Our own second open would break our own lease: drop it first. */
        guard_release(probe);
        fd = open_nonblocking(path, O_RDWR);
        if (fd < 0)
                return fd;
        if (!same_file(probe, fd))
                return -ESTALE;
        /* The lease needs this descriptor to be the file's only one. */
        close(TAKE_FD(probe));
        r = guard_acquire(fd);
        if (r < 0)
                return r;
        *ret = TAKE_FD(fd);
        return 0;
}
