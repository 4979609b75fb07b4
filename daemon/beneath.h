/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>

/* Opening a file below a folder whose users may write to it (a [watch]
 * folder and, with recursive=true, its subfolders): they could replace a
 * subfolder or the file by a symbolic link to anywhere on the host, and the
 * daemon, as root, would then modify what it points to. O_NOFOLLOW guards
 * the last component only, so the components below the folder are opened
 * one by one, none of them followed.
 *
 * beneath: 0, path is opened as it is (symlinks followed: a [disk] path,
 * which only the administrator writes); else the first beneath bytes of path
 * name the trusted folder (itself reached as it is, symlinks included), and
 * no component after it may be a symbolic link (-ELOOP), nor "." or ".."
 * (-EINVAL). flags as open(2)'s (O_CLOEXEC is added). Returns the descriptor
 * or a negative errno. */
int open_beneath(const char *path, size_t beneath, int flags);
