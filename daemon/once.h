/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>

#include "pass.h"

/* One-shot mode: `vhdreclaimd --once` and `vhdreclaimd --inspect`. */

typedef struct OnceOptions {
        PassOptions pass;
        bool json;
} OnceOptions;

/* Runs a pass on every image, prints a report per image; returns the exit
 * status of DESIGN.md (0, or 1 when any image was refused or failed). */
int once_run(const OnceOptions *o, char **images, int n_images);
/* Prints the layout of an image; exit status 0, or 1 when it cannot be read. */
int once_inspect(const char *path, DiskFormat format);
