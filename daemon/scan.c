/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "log.h"
#include "macro.h"
#include "scan.h"

/* Reads start at CHUNK_MAX and halve while one read takes longer than
 * STEP_SLOW_USEC (a slow or cold disk), so that check() still runs at least
 * every 50 ms of work; they grow back when reads are fast again. */
#define CHUNK_MAX (8 * MiB)
#define CHUNK_MIN (64 * KiB)
#define STEP_SLOW_USEC UINT64_C(25000)
#define STEP_FAST_USEC UINT64_C(5000)
/* Longest sleep between two check() calls while pacing for io_limit. */
#define PACE_SLICE_USEC UINT64_C(50000)
/* The stale tier punches big data pieces in slices, with check() between. */
#define PUNCH_SLICE (256 * MiB)
#define USEC_PER_SEC UINT64_C(1000000)
/* How far ahead of the zero check to prefetch. */
#define PREFETCH_AHEAD (64 * KiB)
#define DIV_ROUND_UP_SIZE(x, y) (((x) + (y) - 1) / (y))

/* A zero run is a stretch of the scanned ranges that reads as zeros: zero
 * data blocks and existing holes alike. Counting holes in makes a small zero
 * piece next to an existing hole worth punching (it only widens that hole,
 * which is what `fallocate --dig-holes` does too); only data bytes that
 * become holes are counted as punched. */
typedef struct ZeroRun {
        bool open;
        bool committed;         /* its head is already punched: the rest goes regardless of min_hole */
        uint64_t start, end;
} ZeroRun;

/* One step's bytes. Mapped straight from the page cache when the file can be
 * mapped: no copy, and a data block almost always shows in its first 16
 * bytes that it is not zero, so most data is never even touched (measured:
 * half the CPU time of 8 MiB preads on a warm cache). Read into a buffer
 * otherwise. */
typedef struct Chunk {
        const uint8_t *data;    /* bytes of [pos, end) */
        uint8_t *map;
        size_t map_len;
        uint64_t map_off;
} Chunk;

/* Punches are handed to a second thread, so that punching (the kernel
 * dropping the punched pages from the cache and freeing the blocks) overlaps
 * with scanning the next chunk: on a warm cache the two cost about the same.
 * Jobs run in file order. On an error the worker drops what is queued; when
 * the scan stops, queued jobs are dropped and only the one in flight is
 * waited for. `undone` is the lowest offset of a job that was dropped or
 * failed, so the stop offset can stay below it. */
#define PUNCH_QUEUE_MAX 32
/* hold_until: the most runs remembered before the commit (16 MiB of them).
 * Each is at least min_hole, so only a minReclaim above min_hole times a
 * million gets there; runs past it are neither remembered nor counted, and
 * are found again the next round. */
#define HOLD_MAX_RANGES (1u << 20)

typedef struct PunchQueue {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        Extent jobs[PUNCH_QUEUE_MAX];   /* ring: [head, head + n) */
        size_t head, n;
        bool busy;                      /* the worker is running jobs[head] */
        bool finish;                    /* no more jobs will come */
        bool threaded;                  /* false: jobs run inline */
        int error;
        uint64_t undone;
        uint64_t punched;
        int fd;
        bool dry_run;
        pthread_t thread;
        /* hold_until (scan.h): runs found before the commit. */
        bool holding;
        uint64_t hold_until;
        uint64_t held_bytes;
        ExtentList held;
        bool committed;
} PunchQueue;

typedef struct Scanner {
        int fd;
        const ScanControl *c;
        ScanResult *r;
        uint64_t align;
        uint64_t min_hole;
        bool use_mmap;
        size_t page_size;
        uint8_t *buf;           /* for reading when mapping is not possible */
        uint8_t *resident;      /* mincore() vector of the mapped chunk */
        size_t chunk;           /* current read size */
        size_t chunk_max;
        uint64_t pace_next;     /* io_limit: monotonic µs before which the next read must wait */
        uint64_t done;          /* examined up to here, in whole steps */
        ZeroRun run;
        PunchQueue punches;
} Scanner;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int control_check(const ScanControl *c) {
        return c->check ? c->check(c->userdata) : 0;
}

static void control_progress(const ScanControl *c, uint64_t done) {
        if (c->progress)
                c->progress(done, c->userdata);
}

/* Head checked word-wise, where data blocks almost always differ; the rest
 * compared with itself shifted by 16 bytes: p[i] == p[i + 16] everywhere plus
 * a zero head means all zero, and libc's memcmp is vectorised. */
static bool buffer_is_zero(const uint8_t *p, size_t n) {
        uint64_t a, b;

        if (n < 16) {
                for (size_t i = 0; i < n; i++)
                        if (p[i])
                                return false;
                return true;
        }
        memcpy(&a, p, sizeof a);
        memcpy(&b, p + 8, sizeof b);
        if (a | b)
                return false;
        return memcmp(p, p + 16, n - 16) == 0;
}

static int seek_data_or_hole(int fd, uint64_t pos, int whence, uint64_t limit, uint64_t *ret) {
        off_t o = lseek(fd, (off_t) pos, whence);

        if (o < 0) {
                /* ENXIO: no data at or after pos (SEEK_DATA), or pos is at EOF. */
                if (errno != ENXIO)
                        return -errno;
                o = (off_t) limit;
        }
        *ret = MIN((uint64_t) o, limit);
        return 0;
}

int scan_next_data(int fd, uint64_t pos, uint64_t end, uint64_t *ret_data, uint64_t *ret_hole) {
        int r;

        r = seek_data_or_hole(fd, pos, SEEK_DATA, end, ret_data);
        if (r < 0)
                return r;
        if (*ret_data >= end)
                return 0;
        r = seek_data_or_hole(fd, *ret_data, SEEK_HOLE, end, ret_hole);
        return r < 0 ? r : 1;
}

int scan_allocated_bytes(int fd, uint64_t offset, uint64_t length, uint64_t *ret) {
        uint64_t end = offset + length, pos = offset, total = 0;
        int r = 0;

        if (end < offset)
                return -ERANGE;
        while (pos < end) {
                uint64_t data = 0, hole = 0;

                r = scan_next_data(fd, pos, end, &data, &hole);
                if (r <= 0)
                        break;
                total += hole - data;
                pos = hole;
        }
        if (r < 0)
                return r;
        *ret = total;
        return 0;
}

/* Punches [start, end) and counts the data bytes it turned into holes. */
static int punch_range(int fd, uint64_t start, uint64_t end, bool dry_run, uint64_t *punched) {
        uint64_t allocated;
        int r;

        if (end <= start)
                return 0;
        r = scan_allocated_bytes(fd, start, end - start, &allocated);
        if (r < 0)
                return r;
        if (allocated == 0)
                return 0;
        if (!dry_run &&
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) start, (off_t) (end - start)) < 0)
                return -errno;
        *punched += allocated;
        return 0;
}

static void queue_drop_locked(PunchQueue *q, size_t keep) {
        if (q->n > keep)
                q->undone = MIN(q->undone, q->jobs[(q->head + keep) % PUNCH_QUEUE_MAX].offset);
        q->n = MIN(q->n, keep);
}

static void *queue_worker(void *userdata) {
        PunchQueue *q = userdata;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                uint64_t punched = 0;
                Extent job;
                int r;

                while (q->n == 0 && !q->finish)
                        pthread_cond_wait(&q->changed, &q->lock);
                if (q->n == 0)
                        break;
                /* The job stays queued while it runs, so a cancel keeps it. */
                job = q->jobs[q->head];
                q->busy = true;
                pthread_mutex_unlock(&q->lock);
                r = punch_range(q->fd, job.offset, extent_end(&job), q->dry_run, &punched);
                pthread_mutex_lock(&q->lock);
                q->busy = false;
                q->punched += punched;
                q->head = (q->head + 1) % PUNCH_QUEUE_MAX;
                q->n--;
                if (r < 0) {
                        q->error = r;
                        q->undone = MIN(q->undone, job.offset);
                        queue_drop_locked(q, 0);
                }
                pthread_cond_broadcast(&q->changed);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

static void queue_start(PunchQueue *q, int fd, bool dry_run, uint64_t hold_until) {
        *q = (PunchQueue) { .fd = fd, .dry_run = dry_run, .undone = UINT64_MAX,
                            .holding = hold_until > 0, .hold_until = hold_until };
        pthread_condattr_t attr;

        pthread_mutex_init(&q->lock, NULL);
        /* Waits for room in the queue are timed on the monotonic clock. */
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&q->changed, &attr);
        pthread_condattr_destroy(&attr);
        /* Without a thread, punching inline is just slower. */
        q->threaded = pthread_create(&q->thread, NULL, queue_worker, q) == 0;
}

/* Waits for the worker to make room, calling check() every 50 ms: a chunk
 * full of small zero runs on a slow file system (every punch a synchronous
 * discard) must not keep a lease-breaking opener waiting. Called locked;
 * returns unlocked on a stop. */
static int queue_wait_room_locked(PunchQueue *q, const ScanControl *c) {
        while (q->n == PUNCH_QUEUE_MAX && q->error == 0) {
                struct timespec deadline;
                int r;

                clock_gettime(CLOCK_MONOTONIC, &deadline);
                deadline.tv_nsec += 50 * 1000 * 1000;
                if (deadline.tv_nsec >= 1000 * 1000 * 1000) {
                        deadline.tv_sec++;
                        deadline.tv_nsec -= 1000 * 1000 * 1000;
                }
                if (pthread_cond_timedwait(&q->changed, &q->lock, &deadline) != ETIMEDOUT)
                        continue;
                pthread_mutex_unlock(&q->lock);
                r = control_check(c);
                if (r < 0)
                        return r;
                pthread_mutex_lock(&q->lock);
        }
        return 0;
}

static int queue_push(PunchQueue *q, const ScanControl *c, uint64_t start, uint64_t end);

/* Before the commit: remember [start, end) and count its data bytes; when
 * they reach hold_until, commit and punch everything remembered. */
static int queue_hold(PunchQueue *q, const ScanControl *c, uint64_t start, uint64_t end) {
        uint64_t allocated = 0;
        int r;

        r = scan_allocated_bytes(q->fd, start, end - start, &allocated);
        if (r < 0)
                return r;
        if (allocated == 0 || q->held.n >= HOLD_MAX_RANGES)
                return 0;
        r = extent_list_add(&q->held, start, end - start);
        if (r < 0)
                return r;
        q->held_bytes += allocated;
        if (q->held_bytes < q->hold_until)
                return 0;

        /* Until every remembered run is queued, the lowest one not yet
         * queued bounds the stop offset. */
        q->undone = MIN(q->undone, q->held.items[0].offset);
        r = c->commit ? c->commit(c->userdata) : 0;
        if (r < 0)
                return r;
        q->holding = false;
        q->committed = true;
        for (size_t i = 0; i < q->held.n; i++) {
                const Extent *e = &q->held.items[i];

                r = queue_push(q, c, e->offset, extent_end(e));
                if (r < 0) {
                        q->undone = MIN(q->undone, e->offset);
                        return r;
                }
        }
        q->undone = UINT64_MAX;
        q->held_bytes = 0;
        extent_list_done(&q->held);
        return 0;
}

/* Queues [start, end), or fails with the error of an earlier job or of
 * check() while waiting for room. */
static int queue_submit(PunchQueue *q, const ScanControl *c, uint64_t start, uint64_t end) {
        if (q->holding)
                return queue_hold(q, c, start, end);
        return queue_push(q, c, start, end);
}

static int queue_push(PunchQueue *q, const ScanControl *c, uint64_t start, uint64_t end) {
        int r;

        if (!q->threaded) {
                r = punch_range(q->fd, start, end, q->dry_run, &q->punched);
                if (r < 0)
                        q->undone = MIN(q->undone, start);
                return r;
        }
        pthread_mutex_lock(&q->lock);
        r = queue_wait_room_locked(q, c);
        if (r < 0)
                return r;
        r = q->error;
        if (r == 0) {
                q->jobs[(q->head + q->n) % PUNCH_QUEUE_MAX] = (Extent) { start, end - start };
                q->n++;
                pthread_cond_broadcast(&q->changed);
        }
        pthread_mutex_unlock(&q->lock);
        return r;
}

/* Ends the worker: after all jobs, or (cancel) after the one in flight.
 * Returns the first punch error. */
static int queue_stop(PunchQueue *q, bool cancel) {
        if (q->threaded) {
                pthread_mutex_lock(&q->lock);
                if (cancel)
                        queue_drop_locked(q, q->busy ? 1 : 0);
                q->finish = true;
                pthread_cond_broadcast(&q->changed);
                pthread_mutex_unlock(&q->lock);
                pthread_join(q->thread, NULL);
                q->threaded = false;
        }
        pthread_cond_destroy(&q->changed);
        pthread_mutex_destroy(&q->lock);
        extent_list_done(&q->held);
        return q->error;
}

static int run_close(Scanner *s) {
        uint64_t start = ALIGN_UP(s->run.start, s->align), end = ALIGN_DOWN(s->run.end, s->align);
        int r;

        if (!s->run.open)
                return 0;
        if (end > start && (s->run.committed || end - start >= s->min_hole)) {
                r = queue_submit(&s->punches, s->c, start, end);
                if (r < 0)
                        return r;
        }
        s->run = (ZeroRun) {};
        return 0;
}

/* Once the aligned part of an open run is long enough, punch it right away:
 * runs can be terabytes long, and a punch should be a short step. */
static int run_commit_head(Scanner *s) {
        uint64_t start = ALIGN_UP(s->run.start, s->align), end = ALIGN_DOWN(s->run.end, s->align);
        int r;

        if (!s->run.open || end <= start || (!s->run.committed && end - start < s->min_hole))
                return 0;
        r = queue_submit(&s->punches, s->c, start, end);
        if (r < 0)
                return r;
        s->run.start = end;
        s->run.committed = true;
        return 0;
}

static int run_extend(Scanner *s, uint64_t start, uint64_t end) {
        int r;

        if (s->run.open && s->run.end == start) {
                s->run.end = end;
                return 0;
        }
        r = run_close(s);
        if (r < 0)
                return r;
        s->run = (ZeroRun) { .open = true, .start = start, .end = end };
        return 0;
}

/* Token bucket without burst: each read books its bytes at io_limit, and the
 * next read waits until the booked time, in slices so check() keeps running. */
static int pace_wait(Scanner *s) {
        if (s->c->io_limit == 0)
                return 0;
        for (;;) {
                uint64_t now = now_usec();
                struct timespec ts;
                uint64_t d;
                int r;

                if (now >= s->pace_next)
                        return 0;
                d = MIN(s->pace_next - now, PACE_SLICE_USEC);
                ts = (struct timespec) { .tv_sec = (time_t) (d / USEC_PER_SEC),
                                         .tv_nsec = (long) (d % USEC_PER_SEC) * 1000 };
                nanosleep(&ts, NULL);
                r = control_check(s->c);
                if (r < 0)
                        return r;
        }
}

static void pace_book(Scanner *s, uint64_t bytes) {
        if (s->c->io_limit == 0)
                return;
        s->pace_next = MAX(s->pace_next, now_usec()) + bytes * USEC_PER_SEC / s->c->io_limit;
}

static void chunk_adapt(Scanner *s, uint64_t elapsed) {
        if (elapsed > STEP_SLOW_USEC && s->chunk / 2 >= CHUNK_MIN)
                s->chunk = ALIGN_DOWN(s->chunk / 2, s->align);
        else if (elapsed < STEP_FAST_USEC && s->chunk * 2 <= s->chunk_max)
                s->chunk *= 2;
        s->chunk = MAX(s->chunk, (size_t) s->align);
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t offset, size_t *ret) {
        size_t got = 0;

        while (got < len) {
                ssize_t n = pread(fd, buf + got, len - got, (off_t) (offset + got));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        *ret = got;
        return 0;
}

/* Feeds the align-sized blocks of buf (file offset off) to the zero run. */
static int scan_buffer(Scanner *s, const uint8_t *buf, uint64_t off, size_t len) {
        uint64_t pos = off, end = off + len;
        int r;

        while (pos < end) {
                uint64_t bend = MIN(ALIGN_DOWN(pos, s->align) + s->align, end);

                /* The first bytes of a data block decide, and they are a
                 * cache miss that the hardware prefetcher, which stops at
                 * page boundaries, does not see coming: ask for them ahead. */
                if (pos + PREFETCH_AHEAD < end)
                        __builtin_prefetch(buf + (pos - off) + PREFETCH_AHEAD);
                if (buffer_is_zero(buf + (pos - off), bend - pos))
                        r = run_extend(s, pos, bend);
                else
                        r = run_close(s);
                if (r < 0)
                        return r;
                pos = bend;
        }
        return 0;
}

static int chunk_read(Scanner *s, uint64_t pos, uint64_t end, Chunk *ch) {
        size_t got = 0;
        int r;

        r = pread_full(s->fd, s->buf, end - pos, pos, &got);
        if (r < 0)
                return log_debug_errno(r, "Failed to read at %" PRIu64 ": %m", pos);
        if (got < end - pos)
                /* Ranges are clamped to the size at the start, and the lease
                 * keeps everyone else out: a file that shrank is not ours to
                 * reason about. */
                return log_debug_errno(EIO, "File ended early at %" PRIu64, pos + got);
        *ch = (Chunk) { .data = s->buf };
        return 0;
}

static int chunk_get(Scanner *s, uint64_t pos, uint64_t end, Chunk *ch) {
        uint64_t off = ALIGN_DOWN(pos, s->page_size);
        size_t len = end - off;
        void *p;
        int r;

        r = fault_check_read(pos, end - pos);   /* tests only: see fault.h */
        if (r < 0)
                return log_debug_errno(r, "Injected read error at %" PRIu64 ": %m", pos);
        if (!s->use_mmap)
                return chunk_read(s, pos, end, ch);
        p = mmap(NULL, len, PROT_READ, MAP_SHARED, s->fd, (off_t) off);
        if (p == MAP_FAILED) {
                /* A file system without mmap: read from now on. */
                s->use_mmap = false;
                return chunk_read(s, pos, end, ch);
        }
        /* Note which pages were cached before we came, to drop only the
         * others afterwards. */
        if (mincore(p, len, s->resident) < 0)
                memset(s->resident, 0, DIV_ROUND_UP_SIZE(len, s->page_size));
        /* Faulting the pages in here, not by touching them: where a touch
         * would raise SIGBUS (an I/O error), this fails instead, and pread()
         * then reports the error properly. The lease keeps anyone from
         * truncating the file under the mapping. */
        if (madvise(p, len, MADV_POPULATE_READ) < 0) {
                if (errno == EINVAL)    /* kernel older than 5.14 */
                        s->use_mmap = false;
                munmap(p, len);
                return chunk_read(s, pos, end, ch);
        }
        *ch = (Chunk) { .data = (uint8_t *) p + (pos - off), .map = p, .map_len = len, .map_off = off };
        return 0;
}

/* Keep the page cache for the guests, not for a one-time scan: drop what we
 * brought in, leave what was cached before. */
static void chunk_put(Scanner *s, Chunk *ch, uint64_t pos, uint64_t end) {
        size_t pages;

        if (!ch->map) {
                (void) posix_fadvise(s->fd, (off_t) pos, (off_t) (end - pos), POSIX_FADV_DONTNEED);
                return;
        }
        munmap(ch->map, ch->map_len);
        pages = DIV_ROUND_UP_SIZE(ch->map_len, s->page_size);
        for (size_t i = 0; i < pages; ) {
                size_t j = i;

                while (j < pages && !(s->resident[j] & 1))
                        j++;
                if (j > i)
                        (void) posix_fadvise(s->fd, (off_t) (ch->map_off + i * s->page_size),
                                             (off_t) ((j - i) * s->page_size), POSIX_FADV_DONTNEED);
                i = j + 1;
        }
        *ch = (Chunk) {};
}

/* One step: read, check and punch one chunk of the data at pos, up to limit. */
static int scan_chunk(Scanner *s, uint64_t pos, uint64_t limit, uint64_t *ret_end) {
        uint64_t end = MIN(limit, ALIGN_DOWN(pos + s->chunk, s->align)), t;
        Chunk ch = {};
        int r;

        if (end <= pos)
                end = MIN(limit, pos + s->chunk);

        r = pace_wait(s);
        if (r < 0)
                return r;
        t = now_usec();
        r = chunk_get(s, pos, end, &ch);
        if (r < 0)
                return r;
        chunk_adapt(s, now_usec() - t);
        pace_book(s, end - pos);
        s->r->read += end - pos;

        r = scan_buffer(s, ch.data, pos, end - pos);
        if (r >= 0)
                r = run_commit_head(s);
        chunk_put(s, &ch, pos, end);
        if (r < 0)
                return r;
        *ret_end = end;
        return 0;
}

static void step_done(Scanner *s, uint64_t from, uint64_t to) {
        s->r->examined += to - from;
        s->done = to;
        control_progress(s->c, s->r->examined);
}

static int scan_range(Scanner *s, uint64_t start, uint64_t end) {
        uint64_t pos = start;
        int r;

        while (pos < end) {
                uint64_t data = 0, hole = 0;

                r = control_check(s->c);
                if (r < 0)
                        return r;
                r = seek_data_or_hole(s->fd, pos, SEEK_DATA, end, &data);
                if (r < 0)
                        return r;
                if (data > pos) {
                        r = run_extend(s, pos, data);
                        if (r >= 0)
                                r = run_commit_head(s);
                        if (r < 0)
                                return r;
                        step_done(s, pos, data);
                        pos = data;
                        continue;
                }
                r = seek_data_or_hole(s->fd, pos, SEEK_HOLE, end, &hole);
                if (r < 0)
                        return r;
                while (pos < hole) {
                        uint64_t next = 0;

                        r = control_check(s->c);
                        if (r < 0)
                                return r;
                        r = scan_chunk(s, pos, hole, &next);
                        if (r < 0)
                                return r;
                        step_done(s, pos, next);
                        pos = next;
                }
        }
        return 0;
}

/* Ranges are taken in order; they may touch but not overlap. */
static int ranges_validate(const ExtentList *ranges) {
        for (size_t i = 1; i < ranges->n; i++)
                if (ranges->items[i].offset < extent_end(&ranges->items[i - 1]))
                        return -EINVAL;
        for (size_t i = 0; i < ranges->n; i++)
                if (extent_end(&ranges->items[i]) < ranges->items[i].offset)
                        return -ERANGE;
        return 0;
}

static int control_validate(const ScanControl *c) {
        /* align must be a power of two for the trimming arithmetic to mean
         * what a file system means by block. */
        if (c->align == 0 || (c->align & (c->align - 1)) != 0 || c->align > CHUNK_MAX)
                return -EINVAL;
        return 0;
}

/* Everything below an open run is examined, and every run before it punched
 * (or queued: below the first punch that did not happen). */
static uint64_t scanner_stop_offset(const Scanner *s) {
        return MIN(s->run.open ? s->run.start : s->done, s->punches.undone);
}

static size_t chunk_max_for(const ScanControl *c) {
        size_t m = CHUNK_MAX;

        /* With io_limit one chunk is at most 50 ms worth of bandwidth, so the
         * pacing stays smooth. */
        if (c->io_limit > 0)
                m = (size_t) MIN((uint64_t) m, MAX(c->io_limit / 20, CHUNK_MIN));
        return MAX(ALIGN_DOWN(m, c->align), (size_t) c->align);
}

static int scan_ranges(Scanner *s, const ExtentList *ranges, uint64_t size) {
        int k;

        for (size_t i = 0; i < ranges->n; i++) {
                uint64_t start = ranges->items[i].offset;
                uint64_t end = MIN(extent_end(&ranges->items[i]), size);

                if (start >= end)
                        continue;
                /* A run carries over only into a range that touches it. */
                if (s->run.open && s->run.end != start) {
                        k = run_close(s);
                        if (k < 0)
                                return k;
                }
                s->done = start;
                k = scan_range(s, start, end);
                if (k < 0)
                        return k;
        }
        return run_close(s);
}

int scan_punch_zero_runs(int fd, const ExtentList *ranges, const ScanControl *c, ScanResult *r) {
        _cleanup_free_ uint8_t *buf = NULL, *resident = NULL;
        struct stat st;
        Scanner s;
        int k, q;

        *r = (ScanResult) {};
        k = control_validate(c);
        if (k < 0)
                return k;
        k = ranges_validate(ranges);
        if (k < 0)
                return k;
        if (fstat(fd, &st) < 0)
                return -errno;

        s = (Scanner) {
                .fd = fd,
                .c = c,
                .r = r,
                .align = c->align,
                .min_hole = MAX(c->min_hole, c->align),
                .chunk_max = chunk_max_for(c),
                .pace_next = now_usec(),
        };
        s.chunk = s.chunk_max;
        s.page_size = (size_t) sysconf(_SC_PAGESIZE);
        s.use_mmap = true;
        buf = aligned_alloc(s.page_size, ALIGN_UP(s.chunk_max, s.page_size));
        resident = malloc(s.chunk_max / s.page_size + 2);
        if (!buf || !resident)
                return -ENOMEM;
        s.buf = buf;
        s.resident = resident;
        (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        queue_start(&s.punches, fd, c->dry_run, c->hold_until);
        k = scan_ranges(&s, ranges, (uint64_t) st.st_size);
        r->held = s.punches.holding ? s.punches.held_bytes : 0;
        r->committed = s.punches.committed;
        /* On success every queued punch must happen; on a stop only the one
         * in flight. */
        q = queue_stop(&s.punches, k < 0);
        if (k >= 0)
                k = q;
        r->punched = s.punches.punched;
        r->stop_offset = k < 0 ? scanner_stop_offset(&s) : s.done;
        return k;
}

/* Stale tier, one range: punch each data piece inside [start, end), in
 * slices, checking between them. */
static int punch_data_pieces(int fd, uint64_t start, uint64_t end, const ScanControl *c,
                             ScanResult *r) {
        uint64_t pos = start;
        int k;

        while (pos < end) {
                uint64_t data = 0, hole = 0, slice_end;

                k = seek_data_or_hole(fd, pos, SEEK_DATA, end, &data);
                if (k < 0)
                        return k;
                if (data >= end)
                        break;
                k = seek_data_or_hole(fd, data, SEEK_HOLE, end, &hole);
                if (k < 0)
                        return k;
                slice_end = MIN(hole, data + PUNCH_SLICE);
                if (!c->dry_run &&
                    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t) data, (off_t) (slice_end - data)) < 0)
                        return -errno;
                r->punched += slice_end - data;
                r->stop_offset = slice_end;
                pos = slice_end;
                k = control_check(c);
                if (k < 0)
                        return k;
        }
        return 0;
}

int scan_punch_ranges(int fd, const ExtentList *ranges, const ScanControl *c, ScanResult *r) {
        int k;

        *r = (ScanResult) {};
        k = control_validate(c);
        if (k < 0)
                return k;
        k = ranges_validate(ranges);
        if (k < 0)
                return k;

        for (size_t i = 0; i < ranges->n; ) {
                uint64_t start = ranges->items[i].offset, end = extent_end(&ranges->items[i]);
                uint64_t pstart, pend;

                /* Touching ranges are one range. */
                for (i++; i < ranges->n && ranges->items[i].offset == end; i++)
                        end = extent_end(&ranges->items[i]);

                k = control_check(c);
                if (k < 0)
                        return k;
                r->stop_offset = start;
                pstart = ALIGN_UP(start, c->align);
                pend = ALIGN_DOWN(end, c->align);
                if (pend > pstart && pend - pstart >= c->min_hole) {
                        k = punch_data_pieces(fd, pstart, pend, c, r);
                        if (k < 0)
                                return k;
                }
                r->examined += end - start;
                r->stop_offset = end;
                control_progress(c, r->examined);
        }
        return 0;
}
