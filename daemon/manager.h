/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "hashmap.h"
#include "pass.h"
#include "state.h"
#include "trim.h"

/* The daemon's one context: the configuration, the managed images ("disks"),
 * the jobs that run passes on worker threads, and the event sources of the
 * control socket, the watches and the timers. Everything below is touched on
 * the event loop's thread only, except the fields of Job marked as shared. */

typedef struct Manager Manager;
typedef struct Disk Disk;
typedef struct Job Job;
typedef struct Connection Connection;
typedef struct WatchDir WatchDir;
typedef struct WatchMount WatchMount;
typedef struct Probe Probe;

typedef enum DiskState {
        DISK_IDLE,
        DISK_QUEUED,
        DISK_RECLAIMING,
        DISK_MISSING,
        DISK_ERROR,
        DISK_WATCH_ONLY,        /* sparse=false or discard=none: measured, never modified */
        _DISK_STATE_MAX,
} DiskState;

typedef enum JobKind {
        JOB_RECLAIM,
        JOB_TRIM,
        JOB_UNSPARSE,           /* SetSparse false: re-allocate the holes */
} JobKind;

typedef enum JobTrigger {
        TRIGGER_MANUAL,         /* Reclaim or Trim call */
        TRIGGER_SCHEDULE,       /* interval */
        TRIGGER_IDLE,           /* the writer closed the image idleDelay ago */
} JobTrigger;

struct Disk {
        Manager *manager;
        char *name;             /* [disk.NAME], or WATCH/FILE for images found by a [watch] */
        char *path;
        char *real_path;        /* path with symlinks resolved, where a writer's events show; may be NULL */
        char *origin;           /* "disk" | "watch.NAME" */
        /* Found by a [watch]: the length of its folder's path in path, below
         * which no symlink is followed (beneath.h); 0 for a [disk]. */
        size_t beneath;
        bool config_sparse;
        ReclaimSettings settings;

        DiskRecord record;
        bool missing;
        bool removed;           /* dropped from the manager; the running job frees it */
        bool marked;            /* watch-tree.c: seen by the scan of its [watch] folder */

        uint64_t next_pass;             /* realtime usec; 0 = none */
        sd_event_source *pass_timer;    /* CLOCK_REALTIME, the periodic pass */
        sd_event_source *idle_timer;    /* CLOCK_BOOTTIME, idleDelay after a close-after-write */
        bool written;                   /* closed after writing, not yet reclaimed */
        Probe *probe;                   /* reading its format: queued or running */

        /* Watch-only: the file as its last estimate saw it, and when the
         * scheduler last found it unchanged (then no estimate is due). */
        bool estimated;
        uint64_t estimated_size;
        int64_t estimated_mtime_nsec;
        uint64_t last_unchanged;        /* realtime usec; 0 = none */

        Job *job;                       /* queued or running */
        uint64_t dev;                   /* st_dev of the image when its pass was queued: maxParallel counts per device */
        uint64_t last_close;            /* CLOCK_BOOTTIME usec of a writer's or reader's last close; 0 = none seen */
        uint64_t seq;                   /* order of adding: of two disks with one path, the earlier is found */
};

struct Job {
        Manager *manager;
        Job *next;              /* in the manager's list, oldest first */
        uint64_t id;
        JobKind kind;
        JobTrigger trigger;
        char *target;           /* disk name, or mount point(s) for a trim */
        Disk *disk;             /* reclaim jobs */
        bool running;

        /* The pass's parameters, copied so the thread reads nothing the loop changes. */
        DiscardMode discard_request;    /* _DISCARD_MODE_INVALID: the disk's own */
        bool dry_run_request;
        bool compact_request;           /* Compact call: compact whatever the disk's compact= says */
        bool started;
        /* A watch-only disk's measure, which stands for its pass; with the
         * file's size and mtime when it started. */
        bool estimate;
        bool have_stamp;
        uint64_t stamp_size;
        int64_t stamp_mtime_nsec;

        char *path;
        PassOptions options;
        Fingerprint unchanged_since;    /* options.unchanged_since points here */
        Fingerprint resume_since;       /* options.resume_since points here */
        char **local_mounts;    /* options.local_mounts points here */
        size_t n_local_mounts;
        uint64_t start_realtime;
        uint64_t start_monotonic;

        TrimMount *trim_mounts;  /* trim jobs: what to trim */
        size_t n_trim_mounts;
        uint64_t trim_chunk;
        uint64_t trim_pause_usec;
        char *trim_skipped;     /* configured mounts left out of this run, each with why; NULL = none */

        /* Shared with the worker thread. */
        pthread_t thread;
        atomic_bool cancel;
        atomic_bool finished;
        _Atomic uint64_t done;
        _Atomic uint64_t total;
        uint64_t last_wakeup;   /* worker thread only: when it last woke the loop for progress */

        sd_bus_message *request;        /* unsparse: the SetSparse call, answered when done */

        /* Written by the worker before `finished`, read by the loop after. */
        PassReport report;
        int error;
        TrimResult *trim_results;       /* one per trim_mounts entry */

        uint64_t last_signal;   /* loop: when JobProgress was last emitted */
        uint64_t last_signal_done;
};

struct Manager {
        sd_event *event;
        sd_id128_t server_id;

        char *config_path;
        char *socket_override;          /* --socket */
        char *state_dir_override;       /* --state-dir */
        Config *config;
        char *socket_path;              /* in effect; fixed at start */
        char *state_dir;                /* in effect; fixed at start */
        int state_dir_fd;
        int state_lock_fd;              /* flock on STATEDIR/lock, held for the daemon's life */
        gid_t admin_gid;
        bool have_admin_gid;

        Disk **disks;
        size_t n_disks;
        /* Indexes of disks, so that finding one among thousands does not
         * compare with each (manager-disk.c keeps them). */
        Hashmap disks_by_name;          /* case-insensitive, as section names are */
        Hashmap disks_by_path;
        Hashmap disks_by_real_path;
        Disk **configured_disks;        /* those of [disk] sections, a few among the watch images */
        size_t n_configured_disks;
        uint64_t next_disk_seq;

        Job *jobs;
        Job *jobs_last;                 /* appends are O(1): thousands of periodic passes queue at once */
        uint64_t next_job_id;
        sd_event_source *dispatch_defer;        /* worker_dispatch() once the pending events are handled */
        sd_event_source *status_defer;          /* STATUS= likewise, once per batch of changes */
        unsigned n_running_reclaims;
        bool trim_running;
        int worker_efd;
        sd_event_source *worker_source;
        Probe *probes;                  /* oldest first */
        Probe *probes_last;
        unsigned n_running_probes;

        int inotify_fd;
        sd_event_source *inotify_source;
        WatchDir *watch_dirs;
        Hashmap watch_dirs_by_wd;
        /* File systems mounted inside recursive [watch] trees, which the
         * scans do not descend into (watch-tree.c): each logged once. */
        WatchMount *watch_mounts;
        size_t n_watch_mounts;
        bool watch_processing;
        /* Folders to watch that do not exist (yet): their nearest existing
         * ancestors are watched on a second inotify descriptor for the
         * folder appearing, and mount table changes for a file system
         * mounted on (or off) a watched folder; either rescans. */
        char **watch_missing;
        size_t n_watch_missing;
        int inotify_wait_fd;
        sd_event_source *inotify_wait_source;
        WatchDir *watch_waits;
        int mountinfo_fd;
        sd_event_source *mountinfo_source;
        sd_event_source *watch_resync;

        int listen_fd;
        bool listen_fd_ours;            /* bound by us: unlink at exit */
        sd_event_source *listen_source;
        Connection *connections;
        unsigned n_connections;
        unsigned n_unkicked;
        sd_event_source *control_kick;
        uint64_t next_unique_name;

        TrimStatus *trim_status;        /* per mount, persisted in the state dir */
        size_t n_trim_status;
        sd_event_source *trim_timer;
        uint64_t trim_next;
        uint64_t trim_attempt;          /* realtime usec the periodic trim last came due */

        uint64_t start_time;            /* realtime usec */
        bool stopping;
        char *last_status;
};

/* The daemon mode of vhdreclaimd: runs until SIGTERM/SIGINT. Returns the
 * exit status. */
int manager_main(const char *config_path, const char *socket_override, const char *state_dir_override);

int manager_new(const char *config_path, const char *socket_override, const char *state_dir_override,
                Manager **ret);
Manager *manager_free(Manager *m);

/* Loads the configuration file again and applies it; on an invalid file the
 * old configuration stays and *errors (if given) gets the messages, one per
 * line. Used by SIGHUP and the Reload call. */
int manager_reload(Manager *m, char **errors);

Disk *manager_find_disk(Manager *m, const char *name);
/* By the configured path, or else by where it leads (real_path); of several,
 * the one added first. */
Disk *manager_find_disk_by_path(Manager *m, const char *path);
/* Sets real_path (taking rp, which may be NULL), keeping the index. */
void disk_set_real_path(Disk *d, char *rp);
/* Drops the indexes (the disks themselves are freed by the caller). */
void manager_disk_index_done(Manager *m);
Job *manager_find_job(Manager *m, uint64_t id);
uint64_t manager_reclaimed_total(Manager *m);
unsigned manager_active_jobs(Manager *m);

/* Adds or drops one image (watch.c calls these for [watch] folders). */
int manager_add_disk(Manager *m, const char *name, const char *path, const char *origin, bool sparse,
                     const ReclaimSettings *settings, Disk **ret);
void manager_drop_disk(Manager *m, Disk *d);
/* Frees what the disk owns; the caller has taken it out of the registry. */
Disk *disk_free(Disk *d);

/* Reads format and virtual size through a read-only descriptor, on a worker
 * thread (manager-probe.c): the record is updated when the loop hears back. */
void disk_probe(Disk *d);
/* Its probe's thread runs: its opens and closes of the image are ours. */
bool disk_probing(const Disk *d);
/* The disk goes away: a running probe's result is dropped. */
void disk_probe_forget(Disk *d);
/* Applies the results of finished probes (worker.c, on its eventfd); true if any. */
bool manager_reap_probes(Manager *m);
/* Waits for the running probes and drops the queued ones. */
void manager_stop_probes(Manager *m);
DiskState disk_state(const Disk *d);
const char *disk_state_to_string(DiskState s);
bool disk_effective_sparse(const Disk *d);
/* Found in a [watch] folder (not named by a [disk]): its users may write
 * there, so its path is never followed through a symlink. */
bool disk_found_by_watch(const Disk *d);
/* sparse=false or discard=none: its passes only measure. */
bool disk_watch_only(const Disk *d);
/* Whether the file's size and mtime are those its last estimate saw. */
bool disk_unchanged_since_estimate(const Disk *d);
/* SetSparse false, in two steps: the check on the loop (-ENOSPC when the
 * host lacks the space for the holes, -EBUSY while a job runs on the disk),
 * then the re-allocation on a worker thread; the job answers request (a
 * method call, referenced) when it ends. */
int disk_unsparse_check(Disk *d);
int manager_queue_unsparse(Manager *m, Disk *d, sd_bus_message *request, Job **ret);
/* The worker's part: fallocate mode 0 over the whole file, then fsync. */

/* Queues a pass; dry_run, discard (_DISCARD_MODE_INVALID: the disk's own)
 * as given. Returns the job (existing one when the disk already has one). */
int manager_queue_reclaim(Manager *m, Disk *d, JobTrigger trigger, bool dry_run, DiscardMode discard, Job **ret);
/* Queues a manual pass that compacts the disk whatever its compact= says
 * (a queued pass of the disk is upgraded to one). -EPERM for a watch-only
 * disk (sparse=false, discard=none), -EBUSY while another kind of job or a
 * pass that does not compact runs on it. */
int manager_queue_compact(Manager *m, Disk *d, Job **ret);
/* Queues a trim of mounts (each must be a mount point, else -EINVAL or
 * -ENOENT and *ret_error says which and why), of every file system (all),
 * or of the configured [trim] mounts: of these, a path that is not a mount
 * point now is left out with a warning naming it and the others trimmed;
 * -ENXIO when none is left (*ret_error then names every one). -ENOENT when
 * nothing is configured. */
int manager_queue_trim(Manager *m, char **mounts, size_t n_mounts, bool all, char **ret_error, Job **ret);
int manager_cancel_job(Manager *m, uint64_t id);

/* Refreshes STATUS= (and anything else that follows the daemon's state). */
void manager_state_changed(Manager *m);

/* Fills a reclaim job's path and options from its disk, right before it starts. */
void manager_prepare_reclaim(Manager *m, Job *j);
void manager_unlink_job(Manager *m, Job *j);

uint64_t usec_now(clockid_t clock);

/* worker.c */
int worker_setup(Manager *m);
/* Wakes the loop's worker eventfd (from any thread). */
void worker_wake(Manager *m);
void worker_done(Manager *m);
/* Starts queued jobs while the limits allow. */
void worker_dispatch(Manager *m);
/* The same, after the events already pending (a batch of timers queueing
 * passes is then one walk of the queue, not one per pass). */
void worker_dispatch_soon(Manager *m);
/* Blocks until every running job ended (after cancelling them). */
void worker_stop_all(Manager *m);
Job *job_free(Job *j);
const char *job_kind_to_string(JobKind k);
/* Bytes per second since the job started. */
double job_rate(const Job *j, uint64_t done, uint64_t now);

/* Called on the loop when a job ended (manager-finish.c). */
void manager_job_finished(Manager *m, Job *j);
