/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "beneath.h"
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

int guard_open_image_beneath(const char *path, size_t beneath, int flags) {
        int fd = open_beneath(path, beneath, flags | O_NOATIME);

        /* EPERM: neither our file nor CAP_FOWNER; the read then moves atime. */
        if (fd == -EPERM)
                fd = open_beneath(path, beneath, flags);
        return fd;
}

int guard_open_image(const char *path, int flags) {
        return guard_open_image_beneath(path, 0, flags);
}

static int open_nonblocking(const char *path, size_t beneath, int flags) {
        /* Symlinks refused only below a watched folder (beneath): configured
         * images are often reached through symlinks. The lease is what
         * guarantees exclusivity. O_NONBLOCK: an open that would wait for
         * someone else's lease to break fails instead. */
        int fd = guard_open_image_beneath(path, beneath, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

        return fd == -EWOULDBLOCK ? -EBUSY : fd;
}

#define BTRFS_SUPER_MAGIC 0x9123683E

/* One line of /proc/locks, such as
 *     "1: LEASE  ACTIVE    WRITE 17190 fe:00:10952723 0 EOF"
 *     "2: -> LEASE  BREAKER   READ 2211 08:01:4711 0 EOF"
 * A lease, or an NFS delegation (DELEG, which is a lease nfsd holds), on
 * the file with this device and inode? */
static bool locks_line_is_lease_on(char *line, dev_t dev, ino_t ino, bool match_dev) {
        char *save = NULL;
        bool lease = false;

        for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
                unsigned maj, min;
                unsigned long long i;
                int n = 0;

                if (strcmp(w, "LEASE") == 0 || strcmp(w, "DELEG") == 0)
                        lease = true;
                else if (sscanf(w, "%x:%x:%llu%n", &maj, &min, &i, &n) == 3 && w[n] == '\0')
                        return lease && (ino_t) i == ino && (!match_dev || makedev(maj, min) == dev);
        }
        return false;
}

int guard_lease_listed(FILE *locks, dev_t dev, ino_t ino, bool match_dev) {
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        while (getline(&line, &size, locks) >= 0)
                if (locks_line_is_lease_on(line, dev, ino, match_dev))
                        return 1;
        return ferror(locks) ? -EIO : 0;
}

int guard_file_leased(const char *path) {
        _cleanup_fclose_ FILE *f = NULL;
        struct statfs sfs;
        struct stat st;

        if (stat(path, &st) < 0 || statfs(path, &sfs) < 0)
                return -errno;
        f = fopen("/proc/locks", "re");
        if (!f)
                return -errno;
        /* /proc/locks names the superblock's device; on btrfs st_dev is a
         * subvolume's instead, so only the inode can be compared there (an
         * inode of another btrfs file system that happens to match only
         * makes us skip this time). */
        return guard_lease_listed(f, st.st_dev, st.st_ino, (uint64_t) sfs.f_type != BTRFS_SUPER_MAGIC);
}

static bool same_file(int a, int b) {
        struct stat sa, sb;

        return fstat(a, &sa) >= 0 && fstat(b, &sb) >= 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the image and takes the write lease without disturbing anyone.
 *
 * Any open, even a non-blocking read-only one that then fails with
 * EWOULDBLOCK, starts breaking a conflicting lease, and its holder loses
 * what the lease stood for. smbd holds leases for its clients' oplocks:
 * with `kernel oplocks = yes` a write lease while a client has an exclusive
 * or batch oplock (which a read-only open breaks), and read leases for
 * level II oplocks (which a read-write open breaks). So first, opening
 * nothing, /proc/locks is asked whether anyone holds a lease on the file:
 * if so it is in use. Then whether anyone else has it open is asked through
 * a read-only descriptor, whose lease request fails harmlessly when anyone
 * does. Only then, with nobody there, is it reopened read-write. What
 * remains is the instant between the look at /proc/locks and the first
 * open, and between the two opens. */
int guard_open_leased(const char *path, bool writable, size_t beneath, int *ret) {
        _cleanup_close_ int probe = -1, fd = -1;
        int r;

        /* Not being able to read /proc/locks is no reason to skip: the probe
         * below still finds every opener, only less gently. */
        if (guard_file_leased(path) > 0)
                return -EBUSY;
        probe = open_nonblocking(path, beneath, O_RDONLY);
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
        fd = open_nonblocking(path, beneath, O_RDWR);
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
