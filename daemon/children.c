/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "children.h"
#include "guard.h"
#include "image.h"
#include "log.h"
#include "macro.h"
#include "vhdx.h"

/* Where a child's parent locator may name its parent (MS-VHDX 2.6.2.6.2). */
static const char *const path_keys[] = { "relative_path", "volume_path", "absolute_win32_path" };
static const char *const linkage_keys[] = { "parent_linkage", "parent_linkage2" };

static bool name_is_vhdx(const char *name) {
        size_t n = strlen(name);

        return (n > 5 && strcasecmp(name + n - 5, ".vhdx") == 0) ||
               (n > 6 && strcasecmp(name + n - 6, ".avhdx") == 0);
}

/* The last component of a Windows or POSIX path. */
static const char *path_base(const char *p) {
        const char *b = p;

        for (const char *c = p; *c; c++)
                if (*c == '\\' || *c == '/')
                        b = c + 1;
        return b;
}

/* "{6B1F...}" or "6b1f...": the 32 hex digits, lower case. */
static void guid_digits(const char *s, size_t n, char out[33]) {
        size_t k = 0;

        for (size_t i = 0; i < n && k < 32; i++)
                if ((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F'))
                        out[k++] = (char) (s[i] | 0x20);
        out[k] = 0;
}

static bool key_in(const char *key, size_t klen, const char *const *keys, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strlen(keys[i]) == klen && strncasecmp(key, keys[i], klen) == 0)
                        return true;
        return false;
}

/* Whether a parent locator ("key=value; key=value") names the image, by
 * DataWriteGuid linkage or by the file name its paths end in (Windows names
 * are case-insensitive; a name that merely matches errs on the safe side). */
static const char *locator_names(const char *locator, const char *image_base, const char *image_guid) {
        const char *p = locator;

        while (p && *p) {
                const char *end = strstr(p, "; "), *eq = strchr(p, '=');
                size_t len = end ? (size_t) (end - p) : strlen(p);

                if (eq && eq < p + len) {
                        size_t klen = (size_t) (eq - p), vlen = len - klen - 1;
                        _cleanup_free_ char *value = strndup(eq + 1, vlen);

                        if (!value)
                                return NULL;
                        if (key_in(p, klen, linkage_keys, ELEMENTSOF(linkage_keys))) {
                                char digits[33];

                                guid_digits(value, vlen, digits);
                                if (strcmp(digits, image_guid) == 0)
                                        return "its parent_linkage is this image's DataWriteGuid";
                        } else if (key_in(p, klen, path_keys, ELEMENTSOF(path_keys)) &&
                                   strcasecmp(path_base(value), image_base) == 0)
                                return "its parent locator names this image's file";
                }
                p = end ? end + 2 : NULL;
        }
        return NULL;
}

/* Whether someone holds a write lease on the file: opening it, even read
 * only, would break that lease and stop its holder (another pass). */
static bool write_leased(const struct stat *st) {
        _cleanup_fclose_ FILE *f = fopen("/proc/locks", "re");
        char line[256], dev[64];

        if (!f)
                return false;
        /* By inode alone: /proc/locks and stat() may disagree on the device
         * (btrfs subvolumes, overlayfs), and a false match only errs on the
         * safe side. */
        snprintf(dev, sizeof dev, ":%llu ", (unsigned long long) st->st_ino);
        while (fgets(line, sizeof line, f))
                if (strstr(line, "LEASE") && strstr(line, "WRITE") && strstr(line, dev))
                        return true;
        return false;
}

typedef enum Verdict {
        NOT_A_CHILD,
        CHILD,
        UNREADABLE_IN_USE,
} Verdict;

static Verdict examine(const char *candidate, const struct stat *image_st, const char *image_base,
                       const char *image_guid, const char **why) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *error = NULL;
        uint8_t sig[8];
        struct stat st;
        Image *img = NULL;
        Verdict v = NOT_A_CHILD;

        if (stat(candidate, &st) < 0 || !S_ISREG(st.st_mode) ||
            (st.st_dev == image_st->st_dev && st.st_ino == image_st->st_ino))
                return NOT_A_CHILD;
        if (write_leased(&st)) {
                *why = "it is in use, so whether it names this image cannot be read";
                return UNREADABLE_IN_USE;
        }
        /* O_NONBLOCK: a lease taken since is not waited for. */
        fd = guard_open_image(candidate, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                if (fd != -EWOULDBLOCK)
                        return NOT_A_CHILD;
                *why = "it is in use, so whether it names this image cannot be read";
                return UNREADABLE_IN_USE;
        }
        if (pread(fd, sig, sizeof sig, 0) != (ssize_t) sizeof sig || !vhdx_has_signature(sig))
                return NOT_A_CHILD;
        if (image_open(fd, candidate, DISK_FORMAT_VHDX, &img, &error) < 0) {
                /* Nothing can read through an invalid child, this pass included. */
                log_debug("%s: not examined as a differencing child: %s", candidate, error ? error : "invalid");
                return NOT_A_CHILD;
        }
        if (img->vhdx && img->vhdx->has_parent && img->vhdx->parent_locator &&
            (*why = locator_names(img->vhdx->parent_locator, image_base, image_guid)))
                v = CHILD;
        image_free(img);
        return v;
}

static int found(const char *child, const char *why, char **ret_child, char **ret_why) {
        *ret_child = strdup(child);
        *ret_why = strdup(why);
        if (!*ret_child || !*ret_why) {
                free(*ret_child);
                free(*ret_why);
                return -ENOMEM;
        }
        return 1;
}

static int search_folder(const char *path, const struct stat *image_st, const char *base, const char *guid,
                         char **ret_child, char **ret_why) {
        _cleanup_free_ char *dir = strdup(path);
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (!dir)
                return -ENOMEM;
        if (strrchr(dir, '/'))
                *strrchr(dir, '/') = 0;
        else
                strcpy(dir, ".");
        d = opendir(*dir ? dir : "/");
        if (!d)
                return -errno;
        while (r == 0 && (de = readdir(d))) {
                _cleanup_free_ char *candidate = NULL;
                const char *why = NULL;

                if (!name_is_vhdx(de->d_name))
                        continue;
                if (asprintf(&candidate, "%s/%s", dir, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (examine(candidate, image_st, base, guid, &why) != NOT_A_CHILD)
                        r = found(candidate, why, ret_child, ret_why);
        }
        closedir(d);
        return r;
}

int children_find(const ChildSearch *q, char **ret_child, char **ret_why) {
        char guid[GUID_STRING_MAX], digits[33];
        struct stat st;
        int r;

        *ret_child = *ret_why = NULL;
        if (stat(q->path, &st) < 0)
                return -errno;
        guid_to_string(q->data_write_guid, guid);
        guid_digits(guid, strlen(guid), digits);

        r = search_folder(q->path, &st, path_base(q->path), digits, ret_child, ret_why);
        if (r != 0)
                return r;
        for (char *const *p = q->also; p && *p; p++) {
                const char *why = NULL;

                if (examine(*p, &st, path_base(q->path), digits, &why) != NOT_A_CHILD)
                        return found(*p, why, ret_child, ret_why);
        }
        return 0;
}
