/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* What watch.c (the inotify watches on folders, their events, the idle
 * trigger) and watch-tree.c (the images of [watch] sections, and the
 * folder trees of recursive ones) share. No other module includes it. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "watch.h"

struct WatchDir {
        WatchDir *next;
        char *path;
        int wd;
        char wd_key[16];        /* wd in decimal: the key of m->watch_dirs_by_wd */
        bool marked;            /* kept by the sync that runs */
        /* A [watch] folder, or a subfolder of a recursive one reached
         * without a symlink and on its file system: what appears in it may
         * be an image of the watch. Otherwise only a [disk]'s folder. */
        bool tree;
        /* The folder the watch was put on: a path that now leads to another
         * (a file system mounted on it or off it) is watched afresh. */
        dev_t dev;
        ino_t ino;
};

/* ---- watch.c ---- */

WatchDir *watch_dir_by_wd(Manager *m, int wd);
/* Watches the folder open at fd, whose path is path (a folder of a tree,
 * reached without a symlink: no path is looked up again). 0, or a negative
 * errno, not logged: -ENOSPC when the limit of inotify watches is reached
 * (watch_log_failure() says so). */
int watch_dir_add_fd(Manager *m, int fd, const char *path);
/* Removes the inotify watch and forgets the folder. */
void watch_dir_remove(Manager *m, WatchDir *w);
/* Why a folder could not be watched, with what to do about the limit of
 * inotify watches when that is the reason. */
void watch_log_failure(int level, int error, const char *path);
/* The image's file went away: a running pass stops, a [watch] image is
 * dropped (and its state file removed), a [disk] is missing. */
void watch_image_gone(Manager *m, Disk *d);
/* A full rescan shortly, once for a burst of reasons. */
void watch_schedule_resync(Manager *m);
/* Whether dir (a [watch]'s folder) does not exist: the watch waits for it. */
bool watch_folder_missing(Manager *m, const char *dir);

/* "dir/name", or "/name" when dir is "/". NULL when out of memory. */
char *path_join(const char *dir, const char *name);
/* The part of path below the folder dir ("a/b.vhdx" for "/srv/x/a/b.vhdx"
 * below "/srv/x"), or NULL when path is not below it. */
const char *path_below(const char *dir, const char *path);

/* ---- watch-tree.c ---- */

/* The [disk] that names the file at path, if any, whatever the spelling. */
Disk *watch_configured_disk_naming(Manager *m, const char *path);
/* Drops the [watch] images whose section is gone or no longer takes them
 * (another name, pattern or folder, recursive turned off, a [disk] naming
 * them, the file gone or replaced by a symlink); the others take their
 * section's settings. */
void watch_refresh_images(Manager *m);
/* Scans every [watch] folder whose folder exists (and, for recursive ones,
 * every folder below it, watching each): adds the images found, and drops
 * those no scan found (a subfolder now a symlink or a mount point, say).
 * loud: at start and reload. */
void watch_scan_all(Manager *m, bool loud);
/* A file, symlink or other non-folder entry created or moved into w. */
void watch_tree_file_appeared(Manager *m, const WatchDir *w, const char *path, bool complete);
/* A folder created or moved into w: scanned and watched, with everything
 * below it, when a recursive [watch] covers it. */
void watch_tree_folder_appeared(Manager *m, const WatchDir *w, const char *path);
/* The folder at path was removed or moved away: its images at any depth
 * are gone and the folders below it are no longer watched. */
void watch_tree_folder_gone(Manager *m, const char *path);
/* Whether a file system mounted inside a recursive tree, which the scan
 * did not descend into, was unmounted (or replaced) since. */
bool watch_tree_mounts_changed(Manager *m);
void watch_tree_done(Manager *m);
