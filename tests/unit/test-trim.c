/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "trim.h"

/* A host as /proc/self/mountinfo shows it: the root and /home on two
 * partitions, /home bind-mounted a second time, a path with a space, btrfs
 * (anonymous device number), and everything fstrim must skip. */
static const char mountinfo[] =
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
        "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
        "24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
        "25 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4006204k,mode=755\n"
        "26 22 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=804820k,mode=755\n"
        "27 22 8:2 / /home rw,relatime shared:30 - ext4 /dev/sda2 rw\n"
        "28 22 8:2 /alice /srv/alice rw,relatime shared:30 - ext4 /dev/sda2 rw\n"
        "29 22 8:3 / /mnt/read\\040only ro,relatime shared:31 - ext4 /dev/sda3 ro\n"
        "30 22 8:17 / /mnt/space\\040dir rw,relatime shared:32 - xfs /dev/sdb1 rw\n"
        "31 22 0:45 / /mnt/nfs rw,relatime shared:33 - nfs4 server:/export rw,vers=4.2\n"
        "32 22 0:46 /@data /data rw,relatime shared:34 - btrfs /dev/sdc1 rw,ssd,space_cache=v2\n"
        "33 22 0:47 / /var/lib/docker/overlay2/x/merged rw,relatime - overlay overlay rw,lowerdir=/a\n"
        "34 22 8:33 / /mnt/stack rw,relatime shared:35 - ext4 /dev/sdc2 rw\n"
        "35 34 8:49 / /mnt/stack rw,relatime shared:36 - ext4 /dev/sdd1 rw\n"
        "garbage line\n";

static const char fstab[] =
        "# /etc/fstab: static file system information.\n"
        "UUID=8c4e-1 /            ext4 errors=remount-ro 0 1\n"
        "/dev/sda2    /home        ext4 defaults 0 2\n"
        "/dev/sda9    /not/mounted ext4 defaults 0 2\n"
        "tmpfs        /run         tmpfs defaults 0 0\n"
        "/dev/sdz1    none         swap sw 0 0\n"
        "/dev/sdb1    /mnt/space\\040dir xfs defaults,X-fstrim.notrim 0 0\n"
        "server:/export /mnt/nfs   nfs4 defaults 0 0\n"
        "\n";

static void free_list(TrimMount *m, size_t n) {
        trim_mounts_free(m, n);
}

static void test_all_from_fstab(void **state) {
        TrimMount *m = NULL;
        size_t n = 0;

        assert_int_equal(trim_select_all(fstab, mountinfo, &m, &n), 0);
        /* Not mounted, tmpfs, swap, notrim and nfs are skipped. */
        assert_int_equal(n, 2);
        assert_string_equal(m[0].path, "/");
        assert_string_equal(m[1].path, "/home");
        assert_int_equal(m[1].major, 8);
        assert_int_equal(m[1].minor, 2);
        free_list(m, n);
}

static void test_all_from_mountinfo(void **state) {
        TrimMount *m = NULL;
        size_t n = 0;

        /* An fstab with nothing in it (or none at all): every mount counts. */
        assert_int_equal(trim_select_all("# empty\n\n", mountinfo, &m, &n), 0);
        /* /, /home (its bind mount on /srv/alice is the same file system),
         * "/mnt/space dir" (unescaped), btrfs, and the top one of the two
         * mounts stacked on /mnt/stack. */
        assert_int_equal(n, 5);
        assert_string_equal(m[0].path, "/");
        assert_string_equal(m[1].path, "/home");
        assert_string_equal(m[2].path, "/mnt/space dir");
        assert_string_equal(m[3].path, "/data");
        assert_string_equal(m[4].path, "/mnt/stack");
        assert_int_equal(m[4].major, 8);
        assert_int_equal(m[4].minor, 49);
        free_list(m, n);

        assert_int_equal(trim_select_all(NULL, mountinfo, &m, &n), 0);
        assert_int_equal(n, 5);
        free_list(m, n);
}

static void test_listed_mounts_dedup(void **state) {
        char *paths[] = { "/home", "/srv/alice/", "/", "/home//" };
        TrimMount *m = NULL;
        size_t n = 0;
        char *why = NULL;

        assert_int_equal(trim_select_listed(paths, 4, mountinfo, &m, &n, &why), 0);
        assert_null(why);
        /* /srv/alice is /home's file system bind-mounted (a mount point all
         * the same); a trailing slash names the same mount point. */
        assert_int_equal(n, 2);
        assert_string_equal(m[0].path, "/home");
        assert_string_equal(m[1].path, "/");
        free_list(m, n);
}

static void test_listed_mount_resolution(void **state) {
        char *stacked[] = { "/mnt/stack" };
        char *spaced[] = { "/mnt/space dir" };
        TrimMount *m = NULL;
        size_t n = 0;
        char *why = NULL;
        static const char no_root[] = "27 22 8:2 / /home rw,relatime shared:30 - ext4 /dev/sda2 rw\n";
        char *outside[] = { "/home", "/var" };

        assert_int_equal(trim_select_listed(stacked, 1, mountinfo, &m, &n, &why), 0);
        assert_int_equal(n, 1);
        /* The mount on top wins. */
        assert_int_equal(m[0].minor, 49);
        assert_string_equal(m[0].path, "/mnt/stack");
        free_list(m, n);

        assert_int_equal(trim_select_listed(spaced, 1, mountinfo, &m, &n, &why), 0);
        assert_int_equal(m[0].minor, 17);
        free_list(m, n);

        assert_int_equal(trim_select_listed(outside, 2, no_root, &m, &n, &why), -ENOENT);
        assert_non_null(why);
        assert_non_null(strstr(why, "/var is on no mounted file system"));
        free(why);
}

/* FITRIM trims the whole file system whatever directory it is given: a
 * directory that is not a mount point is refused, naming its mount
 * (issue 10, item 9: `trim DIR` trimmed the whole root file system). */
static void test_listed_not_a_mount_point(void **state) {
        char *cases[][2] = {
                { "/etc", "/" },
                { "/home/alice/images", "/home" },
                { "/homeless", "/" },          /* "/home" is no prefix of it */
                { "/mnt/stack/x", "/mnt/stack" },
        };
        TrimMount *m = NULL;
        size_t n = 0;
        char *why = NULL;

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *paths[] = { "/home", cases[i][0] };
                char want[256];

                m = NULL;
                n = 0;
                assert_int_equal(trim_select_listed(paths, 2, mountinfo, &m, &n, &why), -EINVAL);
                assert_null(m);
                assert_non_null(why);
                snprintf(want, sizeof want, "%s is not a mount point: it is on the file system mounted at %s,",
                         cases[i][0], cases[i][1]);
                assert_non_null(strstr(why, want));
                free(why);
                why = NULL;
        }
}

static void test_empty_and_malformed(void **state) {
        TrimMount *m = NULL;
        size_t n = 7;

        assert_int_equal(trim_select_all(NULL, "", &m, &n), 0);
        assert_int_equal(n, 0);
        free_list(m, n);
        assert_int_equal(trim_select_all("/dev/sda1\n", "1 2 3\n- - -\n 1 1 x:y / / rw - ext4 /dev/a rw\n", &m, &n), 0);
        assert_int_equal(n, 0);
        free_list(m, n);
}

static void test_trim_run_errors(void **state) {
        uint64_t trimmed = 1;

        /* Not a directory, and nothing there: errors, no bytes. */
        assert_int_equal(trim_run("/nonexistent/vhdreclaim", 1 << 20, 0, NULL, NULL, NULL, &trimmed), -ENOENT);
        assert_int_equal(trimmed, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_all_from_fstab),
                cmocka_unit_test(test_all_from_mountinfo),
                cmocka_unit_test(test_listed_mounts_dedup),
                cmocka_unit_test(test_listed_mount_resolution),
                cmocka_unit_test(test_listed_not_a_mount_point),
                cmocka_unit_test(test_empty_and_malformed),
                cmocka_unit_test(test_trim_run_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
