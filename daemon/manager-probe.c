/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "log.h"
#include "manager.h"
#include "watch.h"

/* Reading an image's format and virtual size, for status before its first pass. */

void disk_probe(Disk *d) {
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        int fd, r;

        /* Never while a pass holds its lease: our open would break it. */
        if (d->job && d->job->running)
                return;
        fd = open(d->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                d->missing = errno == ENOENT;
                if (errno != ENOENT)
                        log_debug_errno(errno, "%s: cannot open to read its format: %m", d->path);
                return;
        }
        d->missing = false;
        free(d->real_path);
        d->real_path = realpath(d->path, NULL);
        r = image_open(fd, d->path, d->settings.format, &img, &error);
        if (r >= 0) {
                d->record.format = (int) img->format;
                d->record.virtual_size = img->virtual_size;
                image_free(img);
        } else
                log_debug("%s: cannot read the image: %s", d->path, error ? error : strerror(-r));
        close(fd);
        watch_flush_self(d->manager, d);
}
