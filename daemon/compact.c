/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compact.h"
#include "macro.h"
#include "scan.h"

#define COPY_CHUNK MiB
/* Moves are made durable in groups of at most this much data (and at least
 * one block): fewer flushes for small blocks, while the host never holds
 * more than one group of copies besides the image, and one flush stays short
 * enough for an opener to wait on. */
#define MOVE_GROUP_BYTES (8 * MiB)

typedef struct Move {
        uint64_t bat_index;
        uint64_t from, to;
} Move;

typedef struct Plan {
        uint64_t *zeroed;               /* BAT indexes of blocks to mark ZERO */
        size_t n_zeroed;
        Move *moves;                    /* highest source first */
        size_t n_moves;
        uint64_t new_end;
} Plan;

static void plan_done(Plan *p) {
        free(p->zeroed);
        free(p->moves);
        *p = (Plan) {};
}

static int check_stop(const CompactControl *c) {
        return c->check ? c->check(c->userdata) : 0;
}

static bool all_zero(const uint8_t *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Whether [offset, end) reads as zeros: holes, ranges the caller vouches for,
 * and data that is all zero. Reading stops at the first non-zero byte, so a
 * live block costs little more than one small read. */
static int range_reads_zero(int fd, uint64_t offset, uint64_t end, const CompactControl *c,
                            uint8_t *buf, bool *ret) {
        uint64_t pos = offset;
        int r;

        while (pos < end) {
                uint64_t data = 0, hole = 0;

                r = scan_next_data(fd, pos, end, &data, &hole);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                for (uint64_t p = data; p < hole; p += COPY_CHUNK) {
                        size_t n = (size_t) MIN(COPY_CHUNK, hole - p);
                        ssize_t got;

                        if (c->known_zero && extent_list_covers(c->known_zero, p, n))
                                continue;
                        r = check_stop(c);
                        if (r < 0)
                                return r;
                        got = pread(fd, buf, n, (off_t) p);
                        if (got < 0)
                                return -errno;
                        if ((size_t) got != n)
                                return -EIO;
                        if (!all_zero(buf, n)) {
                                *ret = false;
                                return 0;
                        }
                }
                pos = hole;
        }
        *ret = true;
        return 0;
}

/* Header area, log and regions, widened to whole MiB: blocks never go there. */
static int structure_spans(const Vhdx *v, ExtentList *out) {
        const VhdxHeader *h = &v->headers[v->current];
        int r;

        r = extent_list_add(out, 0, VHDX_HEADER_AREA_SIZE);
        if (r >= 0 && h->log_length > 0)
                r = extent_list_add(out, ALIGN_DOWN(h->log_offset, MiB),
                                    ALIGN_UP(h->log_offset + h->log_length, MiB) - ALIGN_DOWN(h->log_offset, MiB));
        for (size_t i = 0; r >= 0 && i < v->n_regions; i++) {
                uint64_t start = ALIGN_DOWN(v->regions[i].offset, MiB);
                r = extent_list_add(out, start, ALIGN_UP(v->regions[i].offset + v->regions[i].length, MiB) - start);
        }
        /* Present sector bitmap blocks (not expected outside differencing
         * disks, which are not compacted) stay where they are. */
        for (size_t k = 0; r >= 0 && k < v->n_present; k++)
                if (vhdx_bat_index_is_bitmap(v, v->present[k].index))
                        r = extent_list_add(out, (v->present[k].entry >> 20) * MiB, MiB);
        return r;
}

static int append_index(uint64_t **a, size_t *n, uint64_t value) {
        uint64_t *t = realloc(*a, (*n + 1) * sizeof **a);

        if (!t)
                return -ENOMEM;
        t[(*n)++] = value;
        *a = t;
        return 0;
}

typedef struct Live {
        uint64_t offset;
        uint64_t bat_index;
} Live;

static int live_cmp(const void *a, const void *b) {
        const Live *x = a, *y = b;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sorts the present payload blocks into those that read as zeros and the
 * live ones. Absent blocks may still name file space in their entries;
 * readers ignore it (and the stale tier already punched it), so it stays. */
static int plan_blocks(const Vhdx *v, int fd, const CompactControl *c, Plan *p, Live **ret_live, size_t *ret_n) {
        _cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);
        _cleanup_free_ Live *live = NULL;
        size_t n = 0;
        int r;

        if (!buf)
                return -ENOMEM;
        live = calloc(v->n_present + 1, sizeof *live);
        if (!live)
                return -ENOMEM;

        for (size_t k = 0; k < v->n_present; k++) {
                uint64_t i = v->present[k].index, e = v->present[k].entry, off = (e >> 20) * MiB;
                bool zero;

                if ((e & 7) != VHDX_PAYLOAD_FULLY_PRESENT || vhdx_bat_index_is_bitmap(v, i))
                        continue;       /* kept where it is (structure_spans) */
                r = range_reads_zero(fd, off, MIN(off + v->block_size, v->file_size), c, buf, &zero);
                if (r < 0)
                        return r;
                if (zero)
                        r = append_index(&p->zeroed, &p->n_zeroed, i);
                else
                        live[n++] = (Live) { off, i };
                if (r < 0)
                        return r;
        }
        qsort(live, n, sizeof *live, live_cmp);
        *ret_live = TAKE_PTR(live);
        *ret_n = n;
        return 0;
}

/* Fills the lowest free slots with the highest blocks, as long as a block's
 * new place lies wholly below its old one: then a copy never overwrites
 * anything live, and the freed high slots are never needed again. */
static int plan_moves(const Vhdx *v, const Live *live, size_t n, Plan *p) {
        ExtentList used = {}, all = {}, gaps = {};
        uint64_t bs = v->block_size, max_end;
        size_t g = 0;
        int r;

        r = structure_spans(v, &used);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = extent_list_add(&used, live[i].offset, bs);
        if (r < 0)
                goto finish;
        extent_list_normalize(&used);
        max_end = used.n > 0 ? extent_end(&used.items[used.n - 1]) : 0;
        /* Gaps only where the file is: a block moves down, never out. */
        r = extent_list_add(&all, 0, MIN(v->file_size, max_end));
        if (r >= 0)
                r = extent_list_subtract(&all, &used, &gaps);
        if (r < 0)
                goto finish;

        p->moves = calloc(n + 1, sizeof *p->moves);
        if (!p->moves) {
                r = -ENOMEM;
                goto finish;
        }

        for (size_t k = n; k-- > 0;) {
                uint64_t slot = 0;
                bool found = false;

                while (g < gaps.n) {
                        Extent *e = &gaps.items[g];
                        uint64_t start = ALIGN_UP(e->offset, MiB);

                        if (start < extent_end(e) && extent_end(e) - start >= bs) {
                                slot = start;
                                found = true;
                                break;
                        }
                        g++;
                }
                if (!found || slot + bs > live[k].offset)
                        break;
                p->moves[p->n_moves++] = (Move) { live[k].bat_index, live[k].offset, slot };
                gaps.items[g].length = extent_end(&gaps.items[g]) - (slot + bs);
                gaps.items[g].offset = slot + bs;
        }

        /* The new end: the last structure, or the last block where it ends up. */
        extent_list_clear(&used);
        r = structure_spans(v, &used);
        for (size_t k = 0; r >= 0 && k < n; k++)
                r = extent_list_add(&used, k >= n - p->n_moves ? p->moves[n - 1 - k].to : live[k].offset, bs);
        if (r < 0)
                goto finish;
        extent_list_normalize(&used);
        p->new_end = MIN(v->file_size, used.n > 0 ? extent_end(&used.items[used.n - 1]) : v->file_size);

        /* Only moves that let the cut come down are worth their copy: with a
         * structure at the end of the file (a BAT moved there by a resize,
         * say) the blocks below it may as well stay. Dropping a move keeps
         * its block below the cut, so the cut stays where it is. */
        size_t kept = 0;
        for (size_t i = 0; i < p->n_moves; i++)
                if (p->moves[i].from + bs > p->new_end)
                        p->moves[kept++] = p->moves[i];
        p->n_moves = kept;
finish:
        extent_list_done(&used);
        extent_list_done(&all);
        extent_list_done(&gaps);
        return r;
}

static int punch(int fd, uint64_t offset, uint64_t end) {
        if (end <= offset)
                return 0;
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) (end - offset)) < 0)
                return -errno;
        return 0;
}

static int copy_bytes(int fd, uint64_t from, uint64_t to, size_t n, uint8_t *buf) {
        loff_t in = (loff_t) from, out = (loff_t) to;
        size_t done = 0;

        /* In-kernel copy first (and a shared extent where the file system can
         * clone); a plain read and write where it cannot. */
        while (done < n) {
                ssize_t k = copy_file_range(fd, &in, fd, &out, n - done, 0);
                if (k > 0) {
                        done += (size_t) k;
                        continue;
                }
                if (k == 0 || errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
                        break;
                return -errno;
        }
        while (done < n) {
                ssize_t k = pread(fd, buf, n - done, (off_t) (from + done));
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EIO;
                ssize_t w = pwrite(fd, buf, (size_t) k, (off_t) (to + done));
                if (w < 0)
                        return -errno;
                if (w != k)
                        return -EIO;
                done += (size_t) k;
        }
        return 0;
}

/* Copies the data of one block into its new slot, keeping holes as holes. */
static int copy_block(int fd, const Move *m, uint64_t length, uint64_t file_size, const CompactControl *c,
                      uint8_t *buf, uint64_t *copied) {
        uint64_t end = MIN(m->from + length, file_size), pos = m->from;
        int r;

        r = punch(fd, m->to, m->to + length);
        if (r < 0)
                return r;
        while (pos < end) {
                uint64_t data = 0, hole = 0;

                r = scan_next_data(fd, pos, end, &data, &hole);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                for (uint64_t p = data; p < hole; p += COPY_CHUNK) {
                        size_t n = (size_t) MIN(COPY_CHUNK, hole - p);

                        r = check_stop(c);
                        if (r < 0)
                                return r;
                        r = copy_bytes(fd, p, m->to + (p - m->from), n, buf);
                        if (r < 0)
                                return r;
                        *copied += n;
                }
                pos = hole;
        }
        return 0;
}

static uint64_t present_entry(uint64_t offset) {
        return (offset / MiB) << 20 | VHDX_PAYLOAD_FULLY_PRESENT;
}

/* One group of moves: copies, flush, BAT entries, flush, old places freed. */
static int move_group(Vhdx *v, int fd, const Move *moves, size_t n, const CompactControl *c,
                      uint8_t *buf, CompactResult *res) {
        size_t copied = 0;
        int r = 0;

        for (; copied < n; copied++) {
                res->stop_block = moves[copied].bat_index;
                r = copy_block(fd, &moves[copied], v->block_size, v->file_size, c, buf, &res->bytes_moved);
                if (r < 0)
                        break;
        }
        if (r < 0) {
                /* The copies refer to nothing: punch them so no stale space is
                 * left behind (on ENOSPC this gives the space back too). */
                for (size_t i = 0; i <= copied && i < n; i++)
                        (void) punch(fd, moves[i].to, moves[i].to + v->block_size);
                return r;
        }
        if (fdatasync(fd) < 0)
                return -errno;
        for (size_t i = 0; i < n; i++) {
                r = vhdx_write_bat_entry(v, fd, moves[i].bat_index, present_entry(moves[i].to));
                if (r < 0)
                        return r;
        }
        if (fdatasync(fd) < 0)
                return -errno;
        for (size_t i = 0; i < n; i++) {
                (void) punch(fd, moves[i].from, MIN(moves[i].from + v->block_size, v->file_size));
                res->blocks_moved++;
        }
        /* Journaling file systems give punched space back when the punch
         * commits: without this the next group's copies would be allocated
         * while this group's old places still count as used. */
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

static int apply_state_changes(Vhdx *v, int fd, const Plan *p, CompactResult *res) {
        int r;

        for (size_t i = 0; i < p->n_zeroed; i++) {
                r = vhdx_write_bat_entry(v, fd, p->zeroed[i], VHDX_PAYLOAD_ZERO);
                if (r < 0)
                        return r;
        }
        if (fdatasync(fd) < 0)
                return -errno;
        res->blocks_zeroed = p->n_zeroed;
        return 0;
}

static int apply_plan(Vhdx *v, int fd, const Plan *p, const CompactControl *c, CompactResult *res) {
        _cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);
        size_t group = MAX((size_t) 1, (size_t) (MOVE_GROUP_BYTES / v->block_size));
        uint64_t *old_zeroed = NULL;
        int r;

        if (!buf)
                return -ENOMEM;
        r = check_stop(c);
        if (r < 0)
                return r;
        r = vhdx_renew_file_write_guid(v, fd);
        if (r < 0)
                return r;

        /* The zeroed blocks' old offsets, to free them once the BAT is durable. */
        old_zeroed = calloc(p->n_zeroed + 1, sizeof *old_zeroed);
        if (!old_zeroed)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_zeroed; i++)
                old_zeroed[i] = (vhdx_bat_entry(v, p->zeroed[i]) >> 20) * MiB;
        r = apply_state_changes(v, fd, p, res);
        for (size_t i = 0; r >= 0 && i < p->n_zeroed; i++)
                (void) punch(fd, old_zeroed[i], MIN(old_zeroed[i] + v->block_size, v->file_size));
        free(old_zeroed);
        if (r < 0)
                return r;

        for (size_t i = 0; i < p->n_moves; i += group) {
                r = move_group(v, fd, p->moves + i, MIN(group, p->n_moves - i), c, buf, res);
                if (r < 0)
                        return r;
        }

        if (p->new_end < v->file_size) {
                r = check_stop(c);
                if (r < 0)
                        return r;
                if (ftruncate(fd, (off_t) p->new_end) < 0)
                        return -errno;
                if (fsync(fd) < 0)
                        return -errno;
                v->file_size = p->new_end;
        }
        return 0;
}

int compact_vhdx(Vhdx *v, int fd, const CompactControl *c, CompactResult *res, const char **ret_why) {
        _cleanup_free_ Live *live = NULL;
        Plan p = {};
        size_t n_live = 0;
        int r;

        *res = (CompactResult) { .file_size_before = v->file_size, .file_size_after = v->file_size };
        if (v->has_parent) {
                *ret_why = "a differencing disk is not compacted: its absent blocks read from the parent";
                return -EOPNOTSUPP;
        }
        if (v->leave_block_allocated) {
                *ret_why = "a fixed disk (LeaveBlockAllocated) keeps every block allocated";
                return -EOPNOTSUPP;
        }

        r = plan_blocks(v, fd, c, &p, &live, &n_live);
        if (r >= 0)
                r = plan_moves(v, live, n_live, &p);
        if (r < 0)
                goto finish;

        if (p.new_end >= v->file_size) {
                /* Nothing would shrink: marking zero blocks alone would only
                 * rewrite the headers and the BAT for nothing. */
                *ret_why = "the file cannot shrink: a structure or live block ends at its end";
                goto finish;
        }
        res->file_size_after = p.new_end;
        if (c->dry_run) {
                /* Nothing written: the file stays byte-identical. */
                res->blocks_zeroed = p.n_zeroed;
                res->blocks_moved = p.n_moves;
                for (size_t i = 0; i < p.n_moves; i++)
                        res->bytes_moved += v->block_size;
                goto finish;
        }
        r = apply_plan(v, fd, &p, c, res);
        if (r < 0)
                res->file_size_after = v->file_size;
finish:
        plan_done(&p);
        return r;
}
