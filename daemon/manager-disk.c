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
        for (size_t i = 0; i < m->n_disks; i++)
                if (strcmp(m->disks[i]->name, name) == 0)
                        return m->disks[i];
        /* Section names are case-insensitive. */
        for (size_t i = 0; i < m->n_disks; i++)
                if (strcasecmp(m->disks[i]->name, name) == 0)
                        return m->disks[i];
        return NULL;
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
        *d = (Disk) { .manager = m, .config_sparse = sparse, .settings = *settings };
        disk_record_init(&d->record);
        d->name = strdup(name);
        d->path = strdup(path);
        d->origin = strdup(origin);
        if (!d->name || !d->path || !d->origin) {
                disk_free(d);
                return -ENOMEM;
        }
        d->real_path = realpath(path, NULL);
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
