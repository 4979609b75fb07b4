/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <cmocka.h>

#include "hostfs.h"
#include "macro.h"
#include "scratch-dir.h"

/* Magic numbers as the kernel reports them (linux/magic.h and the file
 * systems' sources), written out here rather than taken from the table. */
static void test_unsafe_magics(void **state) {
        static const struct {
                uint64_t magic;
                const char *type;
        } unsafe[] = {
                { 0x6969, "nfs" },
                { 0x6969, "nfs4" },
                { 0xFF534D42, "cifs" },
                { 0xFE534D42, "smb3" },
                { 0x00C36400, "ceph" },
                { 0x7461636F, "ocfs2" },
                { 0x01161970, "gfs2" },
                { 0x0BD00BD0, "lustre" },
                { 0x01021997, "9p" },
                { 0x6B414653, "afs" },
                { 0x5346414F, "afs" },
                { 0x47504653, "gpfs" },
                { 0x19830326, "beegfs" },
                { 0x786F4256, "vboxsf" },
                /* f_type sign-extended from a 32-bit ABI */
                { UINT64_C(0xFFFFFFFFFF534D42), "cifs" },
        };
        (void) state;

        for (size_t i = 0; i < ELEMENTSOF(unsafe); i++) {
                const char *kind = hostfs_unsafe_kind(unsafe[i].magic, unsafe[i].type);
                if (!kind)
                        fail_msg("%s (0x%llx) counted as safe", unsafe[i].type, (unsigned long long) unsafe[i].magic);
        }
        assert_string_equal(hostfs_unsafe_kind(0x6969, "nfs4"), "NFS");
        assert_string_equal(hostfs_unsafe_kind(0xFF534D42, NULL), "CIFS/SMB");
}

static void test_local_magics(void **state) {
        static const struct {
                uint64_t magic;
                const char *type;
        } local[] = {
                { 0xEF53, "ext4" },
                { 0x58465342, "xfs" },
                { 0x9123683E, "btrfs" },
                { 0x01021994, "tmpfs" },
                { 0x794C7630, "overlay" },
                { 0x2FC12FC1, "zfs" },
                { 0xF2F52010, "f2fs" },
        };
        (void) state;

        for (size_t i = 0; i < ELEMENTSOF(local); i++)
                assert_null(hostfs_unsafe_kind(local[i].magic, local[i].type));
}

/* FUSE shares one magic number; only a block-backed FUSE file system
 * (fuseblk: ntfs-3g, exfat-fuse) has every access go through this mount. */
static void test_fuse_subtypes(void **state) {
        (void) state;

        assert_null(hostfs_unsafe_kind(0x65735546, "fuseblk"));
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "fuse.sshfs"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "fuse.glusterfs"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "fuse.ceph-fuse"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "fuse.mergerfs"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "virtiofs"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, "fuse"), "FUSE");
        assert_string_equal(hostfs_unsafe_kind(0x65735546, NULL), "FUSE");
}

static const char mountinfo_text[] =
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:45 / /srv/my\\040share rw,relatime shared:20 master:3 - nfs4 host:/export rw,vers=4.2\n"
        "41 22 0:46 / /mnt/ssh rw,nosuid,nodev shared:21 - fuse.sshfs user@host:/ rw,user_id=0\n"
        "42 22 0:47 / /mnt/no-optional rw - cifs //host/share rw\n";

static void lookup(dev_t dev, int expect_r, const char *type, const char *mount_point) {
        _cleanup_fclose_ FILE *f = fmemopen((void *) mountinfo_text, sizeof mountinfo_text - 1, "r");
        char *t = NULL, *m = NULL;

        assert_non_null(f);
        assert_int_equal(hostfs_mountinfo_lookup(f, dev, &t, &m), expect_r);
        if (expect_r == 0) {
                assert_string_equal(t, type);
                assert_string_equal(m, mount_point);
        }
        free(t);
        free(m);
}

static void test_mountinfo_lookup(void **state) {
        (void) state;

        lookup(makedev(8, 1), 0, "ext4", "/");
        lookup(makedev(0, 45), 0, "nfs4", "/srv/my share");     /* optional fields, \040 */
        lookup(makedev(0, 46), 0, "fuse.sshfs", "/mnt/ssh");
        lookup(makedev(0, 47), 0, "cifs", "/mnt/no-optional");
        lookup(makedev(0, 4), -ENOENT, NULL, NULL);
}

/* The real file system of the scratch directory: local here (the test
 * machines build on ext4 or a similar local file system), so allowed. */
static void test_check_local_dir(void **state) {
        const char *dir = *state;
        _cleanup_(hostfs_done) HostFs fs = {};
        _cleanup_free_ char *why = NULL;
        struct statfs sfs;
        struct stat st;
        dev_t dev = 0;

        assert_int_equal(statfs(dir, &sfs), 0);
        if (hostfs_unsafe_kind((uint64_t) sfs.f_type, NULL) || (uint64_t) sfs.f_type == 0x65735546)
                skip();
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(hostfs_identify(dir, &fs), 0);
        assert_true(fs.dev == st.st_dev);
        assert_non_null(fs.type);
        assert_non_null(fs.mount_point);
        assert_int_equal(hostfs_check(dir, NULL, 0, &dev, &why), 0);
        assert_true(dev == st.st_dev);
        assert_null(why);
}

static void test_declared_local_by_device(void **state) {
        const char *dir = *state;
        struct stat st;
        char *same[] = { (char *) dir }, *other[] = { (char *) "/proc", (char *) "/does/not/exist" };

        assert_int_equal(stat(dir, &st), 0);
        assert_true(hostfs_declared_local(st.st_dev, same, 1));
        assert_false(hostfs_declared_local(st.st_dev, other, 2));
        assert_false(hostfs_declared_local(st.st_dev, NULL, 0));
}

static void test_check_missing_path(void **state) {
        _cleanup_free_ char *why = NULL, *path = NULL;
        dev_t dev = 7;

        assert_true(asprintf(&path, "%s/missing", (const char *) *state) > 0);
        assert_int_equal(hostfs_check(path, NULL, 0, &dev, &why), -ENOENT);
        assert_true(dev == 7);
        assert_null(why);
}

static int group_setup(void **state) {
        return scratch_dir_setup(state, "test-hostfs");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unsafe_magics),
                cmocka_unit_test(test_local_magics),
                cmocka_unit_test(test_fuse_subtypes),
                cmocka_unit_test(test_mountinfo_lookup),
                cmocka_unit_test(test_check_local_dir),
                cmocka_unit_test(test_declared_local_by_device),
                cmocka_unit_test(test_check_missing_path),
        };
        return cmocka_run_group_tests(tests, group_setup, scratch_dir_teardown);
}
