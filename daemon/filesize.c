/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filesize.h"
#include "macro.h"
#include "thread.h"

/* Below this many paths one thread is quicker than starting two. */
#define FILESIZE_SPLIT_MIN 512
#define FILESIZE_THREADS_MAX 2

typedef struct FileSizeSlice {
        FileSizeQuery *query;
        size_t begin, end;
        pthread_t thread;
        bool started;
} FileSizeSlice;

struct FileSizeQuery {
        char *const *paths;
        size_t n;
        FileSize *sizes;
        FileSizeSlice slices[FILESIZE_THREADS_MAX];
        size_t n_slices;
        atomic_size_t slices_left;
        int efd;
        sd_event_source *source;
        filesize_done_t done;
        void *userdata;
};

static void *filesize_thread(void *userdata) {
        FileSizeSlice *s = userdata;
        FileSizeQuery *q = s->query;

        for (size_t i = s->begin; i < s->end; i++) {
                struct stat st;

                if (stat(q->paths[i], &st) < 0)
                        q->sizes[i].error = -errno;
                else {
                        q->sizes[i].size = (uint64_t) st.st_size;
                        q->sizes[i].allocated = (uint64_t) st.st_blocks * 512;
                }
        }
        /* The last slice to end wakes the loop; its write publishes every
         * slice's results (the atomic orders them before it). */
        if (atomic_fetch_sub(&q->slices_left, 1) == 1)
                (void) eventfd_write(q->efd, 1);
        return NULL;
}

static void filesize_join(FileSizeQuery *q) {
        for (size_t i = 0; i < q->n_slices; i++)
                if (q->slices[i].started) {
                        (void) pthread_join(q->slices[i].thread, NULL);
                        q->slices[i].started = false;
                }
}

static int on_filesize_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        FileSizeQuery *q = userdata;
        eventfd_t v;

        (void) s;
        (void) revents;
        (void) eventfd_read(fd, &v);
        filesize_join(q);
        q->source = sd_event_source_disable_unref(q->source);
        q->done(q, q->sizes, q->n, q->userdata);
        return 0;
}

FileSizeQuery *filesize_query_free(FileSizeQuery *q) {
        if (!q)
                return NULL;
        filesize_join(q);
        sd_event_source_disable_unref(q->source);
        if (q->efd >= 0)
                close(q->efd);
        free(q->sizes);
        free(q);
        return NULL;
}

int filesize_query_start(sd_event *event, char *const *paths, size_t n, filesize_done_t done, void *userdata,
                         FileSizeQuery **ret) {
        FileSizeQuery *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->paths = paths;
        q->n = n;
        q->efd = -1;
        q->done = done;
        q->userdata = userdata;
        q->sizes = calloc(MAX(n, (size_t) 1), sizeof(FileSize));
        if (!q->sizes) {
                filesize_query_free(q);
                return -ENOMEM;
        }
        q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->efd < 0) {
                r = -errno;
                filesize_query_free(q);
                return r;
        }
        r = sd_event_add_io(event, &q->source, q->efd, EPOLLIN, on_filesize_done, q);
        if (r < 0) {
                filesize_query_free(q);
                return r;
        }
        q->n_slices = n >= FILESIZE_SPLIT_MIN ? FILESIZE_THREADS_MAX : 1;
        atomic_store(&q->slices_left, q->n_slices);
        for (size_t i = 0; i < q->n_slices; i++)
                q->slices[i] = (FileSizeSlice) { .query = q, .begin = n * i / q->n_slices,
                                                 .end = n * (i + 1) / q->n_slices };
        for (size_t i = 0; i < q->n_slices; i++) {
                r = thread_spawn(&q->slices[i].thread, filesize_thread, &q->slices[i]);
                q->slices[i].started = r >= 0;
                if (r < 0) {
                        /* The slices that started still end and count down;
                         * this one never will: stat its part here instead. */
                        filesize_thread(&q->slices[i]);
                }
        }
        *ret = q;
        return 0;
}
