/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "manager.h"

/* inotify on the folders that hold the managed images: the [disk] images'
 * folders and the [watch] folders, with recursive=true every folder below
 * them too (watch-tree.c: on the watch's file system, never through a
 * symlink). Images appearing, disappearing or renamed are picked up or
 * dropped, and so are subfolders of a recursive watch; an image deleted
 * mid-pass has its pass cancelled; a close after writing starts the idle
 * trigger (a pass idleDelay later unless the image is opened again in
 * between). */

int watch_setup(Manager *m);
void watch_done(Manager *m);

/* Brings the watches and the [watch] images in line with the configuration:
 * adds and removes inotify watches, scans the [watch] folders, adds the
 * images that match and drops those that no longer do. */
int watch_sync(Manager *m);
/* The [watch] sections whose folder does not exist (yet): inactive until it
 * appears, which is noticed (inotify on its nearest existing ancestor, and
 * the mount table for a file system mounted on a watched folder). */
size_t watch_inactive(Manager *m);

/* Reads the inotify events already queued, ignoring the open and close the
 * daemon itself just did on d (a probe). */
void watch_flush_self(Manager *m, Disk *d);

/* Starts (or restarts) the idle timer of d. */
int watch_arm_idle(Disk *d);
void watch_disarm_idle(Disk *d);
