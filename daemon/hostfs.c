/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>

#include "hostfs.h"
#include "macro.h"

#define FUSE_SUPER_MAGIC UINT64_C(0x65735546)

/* File systems whose files other hosts (or a hypervisor's host) can open
 * without this kernel's leases ever seeing it. Magic numbers from
 * linux/magic.h and the file systems' own sources (out-of-tree ones too,
 * since statfs reports whatever the module says). */
static const struct {
        uint64_t magic;
        const char *kind;
} unsafe_magics[] = {
        { 0x6969,     "NFS" },
        { 0xFF534D42, "CIFS/SMB" },     /* cifs */
        { 0xFE534D42, "CIFS/SMB" },     /* smb3 */
        { 0x517B,     "CIFS/SMB" },     /* the old smbfs */
        { 0x00C36400, "CephFS" },
        { 0x7461636F, "OCFS2" },
        { 0x01161970, "GFS2" },
        { 0x0BD00BD0, "Lustre" },
        { 0x01021997, "9p" },
        { 0x5346414F, "AFS" },
        { 0x6B414653, "AFS" },
        { 0x73757245, "Coda" },
        { 0x564C,     "NCP" },
        { 0x20030528, "OrangeFS" },
        { 0x47504653, "GPFS" },
        { 0x19830326, "BeeGFS" },
        { 0xAAD7AAEA, "PanFS" },
        { 0x786F4256, "VirtualBox shared folder" },
};

/* FUSE types whose every access goes through this mount: a block device
 * that only this kernel has mounted (ntfs-3g, exfat-fuse). Every other FUSE
 * file system may be a network client (sshfs, glusterfs, ceph-fuse, s3fs,
 * virtiofs) or a view of another directory (mergerfs, bindfs) whose files
 * can be opened around this mount: a lease here would not see those opens. */
static const char *const local_fuse_types[] = { "fuseblk" };

const char *hostfs_unsafe_kind(uint64_t magic, const char *type) {
        magic &= UINT32_MAX;    /* f_type is signed on some ABIs */
        for (size_t i = 0; i < ELEMENTSOF(unsafe_magics); i++)
                if (unsafe_magics[i].magic == magic)
                        return unsafe_magics[i].kind;
        if (magic != FUSE_SUPER_MAGIC)
                return NULL;
        for (size_t i = 0; type && i < ELEMENTSOF(local_fuse_types); i++)
                if (strcmp(type, local_fuse_types[i]) == 0)
                        return NULL;
        return "FUSE";
}

/* mountinfo escapes blanks, tabs, newlines and backslashes as \ooo. */
static char *unescape_octal(const char *s) {
        char *out = malloc(strlen(s) + 1), *o = out;

        if (!out)
                return NULL;
        while (*s) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *o++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
                        s += 4;
                } else
                        *o++ = *s++;
        }
        *o = '\0';
        return out;
}

/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTS" */
static int parse_mountinfo_line(char *line, dev_t dev, char **ret_type, char **ret_mount_point) {
        char *save = NULL, *field, *mount_point = NULL, *type = NULL;
        unsigned maj, min;

        for (int i = 0; (field = strtok_r(i == 0 ? line : NULL, " \n", &save)); i++) {
                if (i == 2) {
                        if (sscanf(field, "%u:%u", &maj, &min) != 2 || makedev(maj, min) != dev)
                                return -ENOENT;
                } else if (i == 4)
                        mount_point = field;
                else if (i > 5 && strcmp(field, "-") == 0) {
                        type = strtok_r(NULL, " \n", &save);
                        break;
                }
        }
        if (!mount_point || !type)
                return -ENOENT;
        *ret_type = unescape_octal(type);
        *ret_mount_point = unescape_octal(mount_point);
        if (!*ret_type || !*ret_mount_point) {
                free(*ret_type);
                free(*ret_mount_point);
                return -ENOMEM;
        }
        return 0;
}

int hostfs_mountinfo_lookup(FILE *mountinfo, dev_t dev, char **ret_type, char **ret_mount_point) {
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        while (getline(&line, &size, mountinfo) >= 0) {
                int r = parse_mountinfo_line(line, dev, ret_type, ret_mount_point);
                if (r != -ENOENT)
                        return r;
        }
        return -ENOENT;
}

int hostfs_identify(const char *path, HostFs *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        struct statfs sfs;
        struct stat st;
        int r;

        *ret = (HostFs) {};
        if (stat(path, &st) < 0 || statfs(path, &sfs) < 0)
                return -errno;
        ret->dev = st.st_dev;
        ret->magic = (uint64_t) sfs.f_type & UINT32_MAX;

        /* Not finding the mount is no error: the magic number decides for
         * every type but FUSE, and an unknown FUSE type counts as unsafe. */
        f = fopen("/proc/self/mountinfo", "re");
        if (f) {
                r = hostfs_mountinfo_lookup(f, st.st_dev, &ret->type, &ret->mount_point);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

void hostfs_done(HostFs *fs) {
        free(fs->type);
        free(fs->mount_point);
        *fs = (HostFs) {};
}

bool hostfs_declared_local(dev_t dev, char *const *paths, size_t n_paths) {
        for (size_t i = 0; i < n_paths; i++) {
                struct stat st;

                if (stat(paths[i], &st) >= 0 && st.st_dev == dev)
                        return true;
        }
        return false;
}

int hostfs_check(const char *path, char *const *local_mounts, size_t n_local_mounts,
                 dev_t *ret_dev, char **ret_message) {
        _cleanup_(hostfs_done) HostFs fs = {};
        const char *kind;
        int r;

        *ret_message = NULL;
        r = hostfs_identify(path, &fs);
        if (r < 0)
                return r;
        *ret_dev = fs.dev;
        kind = hostfs_unsafe_kind(fs.magic, fs.type);
        if (!kind || hostfs_declared_local(fs.dev, local_mounts, n_local_mounts))
                return 0;
        if (asprintf(ret_message,
                     "the image is on a %s file system (type %s, mounted on %s), where a lease does not see "
                     "opens by other hosts or around this mount; if only this host uses that mount, "
                     "declare it in [reclaim] localMounts=%s",
                     kind, fs.type ?: "unknown", fs.mount_point ?: "an unknown mount point",
                     fs.mount_point ?: "MOUNTPOINT") < 0)
                *ret_message = NULL;    /* still unsafe, only less explained */
        return 1;
}
