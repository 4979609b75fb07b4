/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "manager.h"
#include "schedule.h"
#include "state.h"
#include "watch.h"

/* The registry of managed images ("disks"): what state each is in, adding
 * and dropping them, and the check before SetSparse false. */

static const char *const disk_state_names[_DISK_STATE_MAX] = {
        [DISK_IDLE] = "idle",
        [DISK_QUEUED] = "queued",
        [DISK_RECLAIMING] = "reclaiming",
        [DISK_MISSING] = "missing",
        [DISK_ERROR] = "error",
        [DISK_WATCH_ONLY] = "watch-only",
};

const char *disk_state_to_string(DiskState s) {
        return s >= 0 && s < _DISK_STATE_MAX ? disk_state_names[s] : "unknown";
}

DiskState disk_state(const Disk *d) {
        /* Its estimates are no reclamation: ListJobs shows them. */
        if (d->job && !disk_watch_only(d))
                return d->job->running ? DISK_RECLAIMING : DISK_QUEUED;
        if (d->missing)
                return DISK_MISSING;
        if (d->record.last_result >= 0 && pass_result_is_failure((PassResult) d->record.last_result))
                return DISK_ERROR;
        return disk_watch_only(d) ? DISK_WATCH_ONLY : DISK_IDLE;
}

bool disk_effective_sparse(const Disk *d) {
        return d->record.sparse_override >= 0 ? d->record.sparse_override : d->config_sparse;
}

bool disk_found_by_watch(const Disk *d) {
        return strncmp(d->origin, "watch.", 6) == 0;
}

bool disk_watch_only(const Disk *d) {
        return !disk_effective_sparse(d) || d->settings.discard == DISCARD_NONE;
}

bool disk_unchanged_since_estimate(const Disk *d) {
        struct stat st;

        return d->estimated && stat(d->path, &st) >= 0 && (uint64_t) st.st_size == d->estimated_size &&
               (int64_t) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == d->estimated_mtime_nsec;
}

Disk *disk_free(Disk *d) {
        if (!d)
                return NULL;
        d->pass_timer = sd_event_source_disable_unref(d->pass_timer);
        d->idle_timer = sd_event_source_disable_unref(d->idle_timer);
        disk_probe_forget(d);
        disk_record_done(&d->record);
        free(d->name);
        free(d->path);
        free(d->real_path);
        free(d->origin);
        free(d);
        return NULL;
}

Disk *manager_find_disk(Manager *m, const char *name) {
        /* Section names are case-insensitive, and no two disks have names
         * that differ in case only (manager_add_disk() refuses the second):
         * the one match is also the exact one when there is an exact one. */
        return hashmap_get(&m->disks_by_name, name);
}

/* Of the disks under key, the one added first: what a walk of m->disks
 * in order would find. */
static Disk *first_added(const Hashmap *h, const char *key) {
        const HashmapEntry *it;
        Disk *found = NULL;

        for (Disk *d = hashmap_first(h, key, &it); d; d = hashmap_next(&it, key))
                if (!found || d->seq < found->seq)
                        found = d;
        return found;
}

Disk *manager_find_disk_by_path(Manager *m, const char *path) {
        Disk *d = first_added(&m->disks_by_path, path);

        return d ?: first_added(&m->disks_by_real_path, path);
}

void disk_set_real_path(Disk *d, char *rp) {
        Manager *m = d->manager;

        if (d->real_path && !d->removed)
                hashmap_remove(&m->disks_by_real_path, d->real_path, d);
        free(d->real_path);
        d->real_path = rp;
        /* A dropped disk (its job still running) is in no index. Unindexed
         * on failure: events through a symlink are then missed until the
         * next probe, as with no real_path at all. */
        if (d->real_path && !d->removed && hashmap_put(&m->disks_by_real_path, d->real_path, d) < 0)
                log_error("%s: out of memory indexing where it leads", d->path);
}

static void unindex_disk(Manager *m, Disk *d) {
        hashmap_remove(&m->disks_by_name, d->name, d);
        hashmap_remove(&m->disks_by_path, d->path, d);
        if (d->real_path)
                hashmap_remove(&m->disks_by_real_path, d->real_path, d);
        for (size_t i = 0; i < m->n_configured_disks; i++)
                if (m->configured_disks[i] == d) {
                        memmove(m->configured_disks + i, m->configured_disks + i + 1,
                                (m->n_configured_disks - i - 1) * sizeof *m->configured_disks);
                        m->n_configured_disks--;
                        break;
                }
}

static int index_disk(Manager *m, Disk *d) {
        int r;

        if (!disk_found_by_watch(d)) {
                Disk **a = reallocarray(m->configured_disks, m->n_configured_disks + 1, sizeof *a);

                if (!a)
                        return -ENOMEM;
                m->configured_disks = a;
                a[m->n_configured_disks++] = d;
        }
        r = hashmap_put(&m->disks_by_name, d->name, d);
        if (r >= 0)
                r = hashmap_put(&m->disks_by_path, d->path, d);
        if (r >= 0 && d->real_path)
                r = hashmap_put(&m->disks_by_real_path, d->real_path, d);
        if (r < 0)
                unindex_disk(m, d);
        return r;
}

void manager_disk_index_done(Manager *m) {
        hashmap_done(&m->disks_by_name);
        hashmap_done(&m->disks_by_path);
        hashmap_done(&m->disks_by_real_path);
        free(m->configured_disks);
        m->configured_disks = NULL;
        m->n_configured_disks = 0;
}

int manager_add_disk(Manager *m, const char *name, const char *path, const char *origin, bool sparse,
                     const ReclaimSettings *settings, Disk **ret) {
        Disk *d, **nd;
        int r;

        if (manager_find_disk(m, name))
                return -EEXIST;
        nd = reallocarray(m->disks, m->n_disks + 1, sizeof *nd);
        if (!nd)
                return -ENOMEM;
        m->disks = nd;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        /* A close before we watched was not seen: it counts as now, so that
         * a periodic pass waits idleDelay after a start or a discovery (smbd
         * may hold a disconnected durable handle across our restart). */
        *d = (Disk) { .manager = m, .config_sparse = sparse, .settings = *settings, .seq = m->next_disk_seq++,
                      .last_close = usec_now(CLOCK_BOOTTIME) };
        disk_record_init(&d->record);
        d->name = strdup(name);
        d->path = strdup(path);
        d->origin = strdup(origin);
        if (!d->name || !d->path || !d->origin) {
                disk_free(d);
                return -ENOMEM;
        }
        d->real_path = realpath(path, NULL);
        r = index_disk(m, d);
        if (r < 0) {
                disk_free(d);
                return r;
        }
        r = state_load_disk(m->state_dir_fd, name, &d->record);
        if (r == -EBADMSG)
                log_warning("%s: its state file is malformed, starting afresh", name);
        else if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "%s: cannot read its state: %m", name);
        if (r < 0)
                disk_record_init(&d->record);
        m->disks[m->n_disks++] = d;
        if (ret)
                *ret = d;
        return 0;
}

void manager_drop_disk(Manager *m, Disk *d) {
        unindex_disk(m, d);
        for (size_t i = 0; i < m->n_disks; i++)
                if (m->disks[i] == d) {
                        memmove(m->disks + i, m->disks + i + 1, (m->n_disks - i - 1) * sizeof *m->disks);
                        m->n_disks--;
                        break;
                }
        d->removed = true;
        schedule_disk_cancel(d);
        watch_disarm_idle(d);
        if (d->job && d->job->running) {
                /* The job frees the disk when it ends. */
                atomic_store(&d->job->cancel, true);
                return;
        }
        if (d->job) {
                Job *j = d->job;

                manager_unlink_job(m, j);
                d->job = NULL;
                j->disk = NULL;
                job_free(j);
        }
        disk_free(d);
}

/* Bytes the holes of the file take once allocated. */
static int hole_bytes(int fd, uint64_t *ret) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        *ret = (uint64_t) st.st_size > (uint64_t) st.st_blocks * 512 ? (uint64_t) st.st_size - (uint64_t) st.st_blocks * 512
                                                                      : 0;
        return 0;
}

int disk_unsparse_check(Disk *d) {
        _cleanup_close_ int fd = -1;
        struct statvfs sv;
        uint64_t need = 0;
        int r;

        if (d->job)
                return -EBUSY;
        fd = open(d->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        r = hole_bytes(fd, &need);
        if (r < 0)
                return r;
        if (fstatvfs(fd, &sv) < 0)
                return -errno;
        /* Refused up front, so nothing is left half-allocated for lack of
         * space. Filling holes also costs the host file system metadata (a
         * fragmented image's new extents do not merge with their written
         * neighbours), hence the margin; unsparse_file() rolls back if even
         * that was not enough. */
        need += MAX(UINT64_C(1) << 20, need / 64);
        if ((uint64_t) sv.f_bavail * sv.f_frsize < need)
                return -ENOSPC;
        return 0;
}

uint64_t manager_reclaimed_total(Manager *m) {
        uint64_t total = 0;

        for (size_t i = 0; i < m->n_disks; i++)
                total += m->disks[i]->record.reclaimed_total;
        return total;
}
