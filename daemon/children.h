/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "guid.h"

/* Differencing children of an image (DESIGN.md safety model item 1): a VHDX
 * whose parent locator names the image reads the image's blocks through its
 * own, and links to the image's DataWriteGuid. The free tier must not run
 * while one exists. */

typedef struct ChildSearch {
        const char *path;               /* the image: its folder is searched */
        const Guid *data_write_guid;    /* the image's current DataWriteGuid */
        char *const *also;              /* other images to look at (managed, watched); NULL-terminated, may be NULL */
} ChildSearch;

/* 1 with *ret_child (the child's path) and *ret_why (how it names the image)
 * when a child was found or a file that may be one could not be read without
 * disturbing its user; 0 when there is none; negative errno on failure. */
int children_find(const ChildSearch *q, char **ret_child, char **ret_why);
