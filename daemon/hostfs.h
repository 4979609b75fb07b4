/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The host file system under an image, as far as safety rule 6 (DESIGN.md)
 * cares: a lease only sees the opens made through this kernel's view of the
 * file. On network and cluster file systems another host's open, and on most
 * FUSE file systems an open through the backing store, never reaches it.
 *
 * Decided from the file system type (statfs f_type, plus mountinfo's type
 * for FUSE, whose magic number is shared by every FUSE file system), never
 * from the path. */

typedef struct HostFs {
        dev_t dev;              /* st_dev of the image */
        uint64_t magic;         /* statfs f_type */
        char *type;             /* mountinfo's type ("nfs4", "fuse.sshfs"), NULL if not found */
        char *mount_point;      /* mountinfo's mount point, NULL if not found */
} HostFs;

/* stat()s and statfs()s path (opening nothing) and looks its device up in
 * /proc/self/mountinfo. Negative errno when path cannot be examined. */
int hostfs_identify(const char *path, HostFs *ret);
void hostfs_done(HostFs *fs);

/* Finds the mount whose major:minor is dev in mountinfo-formatted text.
 * 0 and both strings (unescaped) when found, -ENOENT when not. */
int hostfs_mountinfo_lookup(FILE *mountinfo, dev_t dev, char **ret_type, char **ret_mount_point);

/* NULL when leases on this file system see every opener; otherwise a short
 * name of the kind of file system that makes it unsafe ("NFS", "CIFS/SMB",
 * "FUSE"...). type may be NULL (not found in mountinfo). */
const char *hostfs_unsafe_kind(uint64_t magic, const char *type);

/* Whether one of paths (the admin's localMounts) is on the file system
 * with device dev. Paths that cannot be stat()ed count as nothing. */
bool hostfs_declared_local(dev_t dev, char *const *paths, size_t n_paths);

/* The whole rule: 0 when the image may be leased and punched, 1 when it must
 * be skipped (*ret_message, NULL when out of memory, says why and how to declare
 * the mount local),
 * negative errno when path cannot be examined. ret_dev gets the device the
 * decision was made for, so the caller can check the file it opens is on it. */
int hostfs_check(const char *path, char *const *local_mounts, size_t n_local_mounts,
                 dev_t *ret_dev, char **ret_message);
