/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Discard passes on mounted file systems ([trim]): FITRIM, as fstrim does,
 * in chunk-sized ranges with a pause between them. */

typedef struct TrimMount {
        char *path;             /* mount point to issue FITRIM on */
        unsigned major, minor;  /* the file system's device, one pass per device */
} TrimMount;

typedef struct TrimResult {
        uint64_t trimmed;       /* bytes the kernel reported as discarded */
        int error;              /* 0 or a negative errno */
} TrimResult;

void trim_mounts_free(TrimMount *m, size_t n);

/* What `mounts=all` selects, as `fstrim --listed-in fstab:mountinfo` does:
 * the file systems of fstab (or, when fstab lists none, of mountinfo) that
 * are mounted now, skipping swap, pseudo and network file systems, read-only
 * mounts, sources that are not block devices and X-fstrim.notrim entries;
 * one entry per device even when it is mounted several times. Pure: works
 * on the files' text (fstab may be NULL). */
int trim_select_all(const char *fstab, const char *mountinfo, TrimMount **ret, size_t *ret_n);

/* The listed mount points, each of which must be a mount point as mountinfo
 * spells it (trailing slashes aside): FITRIM trims the whole file system
 * whatever directory it is issued on, so a directory inside a mount is
 * refused (-EINVAL) and a path on no mount too (-ENOENT); *ret_error then
 * says which path and the mount it belongs to. Duplicates of one device
 * dropped. */
int trim_select_listed(char *const *paths, size_t n_paths, const char *mountinfo, TrimMount **ret,
                       size_t *ret_n, char **ret_error);

/* Reads /etc/fstab and /proc/self/mountinfo and calls the above. */
int trim_list_all(TrimMount **ret, size_t *ret_n);
/* Resolves the paths first (realpath): a missing one is -ENOENT. */
int trim_list_mounts(char *const *paths, size_t n_paths, TrimMount **ret, size_t *ret_n, char **ret_error);

/* FITRIM over the whole file system at path, chunk bytes per call (the last
 * call open-ended, up to the file system's real end), sleeping pause_usec
 * between calls; stops with -ECANCELED when *cancel is set, and with -ENOENT
 * when path is gone or no longer a mount point. progress(done, total) is
 * called after every chunk (total is the statvfs size, an estimate). *ret_trimmed gets the
 * bytes trimmed, also on failure. */
int trim_run(const char *path, uint64_t chunk, uint64_t pause_usec, const atomic_bool *cancel,
             void (*progress)(uint64_t done, uint64_t total, void *userdata), void *userdata,
             uint64_t *ret_trimmed);
