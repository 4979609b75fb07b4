/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

/* The sizes of many files as stat() gives them now, read on worker threads
 * and handed back on the event loop. A status of 10,000 images is 10,000
 * path walks: on the loop they held every other client and the watchdog for
 * ~35 ms (more on a slow file system), and on one core they were the biggest
 * part of the answer's latency. */

typedef struct FileSize {
        uint64_t size;
        uint64_t allocated;     /* st_blocks * 512 */
        int error;              /* -errno of stat(), or 0 */
} FileSize;

typedef struct FileSizeQuery FileSizeQuery;

/* Called on the loop once every path has been stat()ed; sizes[i] belongs to
 * paths[i]. The query is freed by the caller (from the callback is fine). */
typedef void (*filesize_done_t)(FileSizeQuery *q, const FileSize *sizes, size_t n, void *userdata);

/* paths must stay valid until the query is freed. */
int filesize_query_start(sd_event *event, char *const *paths, size_t n, filesize_done_t done, void *userdata,
                         FileSizeQuery **ret);
/* Waits for the threads still running: stat() of a local file does not hang. */
FileSizeQuery *filesize_query_free(FileSizeQuery *q);
