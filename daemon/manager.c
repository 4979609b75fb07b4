/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "manager.h"
#include "notify.h"
#include "schedule.h"
#include "state.h"
#include "watch.h"

/* The daemon's context: its life cycle, the configuration it applies (on
 * start, SIGHUP and Reload) and its signals. The disks live in
 * manager-disk.c, their probe in manager-probe.c, the job queue in
 * manager-job.c and the end of each job in manager-finish.c. */

uint64_t usec_now(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int on_status_defer(sd_event_source *s, void *userdata) {
        notify_update_status(userdata);
        return 0;
}

/* Coalesced: with thousands of images a change per image (each one queued
 * by its timer, found by a watch) would each format the whole status. */
void manager_state_changed(Manager *m) {
        int r;

        if (!m->event || m->stopping) {
                notify_update_status(m);
                return;
        }
        if (m->status_defer)
                r = sd_event_source_set_enabled(m->status_defer, SD_EVENT_ONESHOT);
        else {
                r = sd_event_add_defer(m->event, &m->status_defer, on_status_defer, m);
                if (r >= 0)
                        r = sd_event_source_set_priority(m->status_defer, SD_EVENT_PRIORITY_IDLE);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->status_defer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                notify_update_status(m);
}

/* ---- configuration ---- */

static void resolve_admin_group(Manager *m) {
        struct group *g;

        m->have_admin_gid = false;
        if (!m->config->admin_group[0])
                return;
        g = getgrnam(m->config->admin_group);
        if (!g) {
                log_notice("adminGroup \"%s\" does not exist: only root and uid %u may change state",
                           m->config->admin_group, (unsigned) geteuid());
                return;
        }
        m->admin_gid = g->gr_gid;
        m->have_admin_gid = true;
}

static bool disk_is_configured(const Disk *d) {
        return strcmp(d->origin, "disk") == 0;
}

/* Brings the [disk] images in line with m->config. */
static void apply_disks(Manager *m) {
        for (size_t i = m->n_disks; i > 0; i--) {
                Disk *d = m->disks[i - 1];
                const DiskConfig *dc;

                if (!disk_is_configured(d))
                        continue;
                dc = config_find_disk(m->config, d->name);
                if (!dc || strcmp(dc->path, d->path) != 0) {
                        log_info("%s: no longer configured%s", d->name, dc ? " at this path" : "");
                        manager_drop_disk(m, d);
                        continue;
                }
                d->settings = dc->reclaim;
                d->config_sparse = dc->sparse;
        }
        for (size_t i = 0; i < m->config->n_disks; i++) {
                const DiskConfig *dc = &m->config->disks[i];
                Disk *d;

                if (manager_find_disk(m, dc->name))
                        continue;
                if (manager_add_disk(m, dc->name, dc->path, "disk", dc->sparse, &dc->reclaim, &d) < 0) {
                        log_error("%s: cannot add %s", dc->name, dc->path);
                        continue;
                }
                disk_probe(d);
        }
}

static void schedule_all(Manager *m) {
        for (size_t i = 0; i < m->n_disks; i++)
                (void) schedule_disk(m->disks[i]);
        (void) schedule_trim(m);
}

static int messages_to_string(const ConfigMessages *msgs, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < msgs->n_items; i++)
                if (msgs->items[i].level == CONFIG_MESSAGE_ERROR)
                        fprintf(f, "%s%s", i ? "\n" : "", msgs->items[i].text);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

static void log_messages(const ConfigMessages *msgs) {
        for (size_t i = 0; i < msgs->n_items; i++)
                log_full_errno(msgs->items[i].level == CONFIG_MESSAGE_ERROR ? LOG_ERR : LOG_WARNING, 0, "%s",
                               msgs->items[i].text);
}

int manager_reload(Manager *m, char **errors) {
        ConfigMessages msgs = {};
        Config *c = NULL;
        bool group_changed;
        int r;

        notify_reloading();
        log_info("reloading %s", m->config_path);
        r = config_load(m->config_path, &c, &msgs);
        log_messages(&msgs);
        if (r < 0) {
                if (errors) {
                        if (msgs.n_items > 0)
                                (void) messages_to_string(&msgs, errors);
                        else if (asprintf(errors, "%s: %s", m->config_path, strerror(-r)) < 0)
                                *errors = NULL;  /* asprintf() leaves it undefined */
                }
                config_messages_done(&msgs);
                log_error("the configuration stays as it was");
                notify_ready();
                return r;
        }
        config_messages_done(&msgs);

        if (strcmp(c->socket_path, m->config->socket_path) != 0 || strcmp(c->state_dir, m->config->state_dir) != 0)
                log_notice("[daemon] socket and stateDir take effect at the next start");
        group_changed = strcmp(c->admin_group, m->config->admin_group) != 0;
        config_free(m->config);
        m->config = c;
        resolve_admin_group(m);
        if (group_changed)
                control_socket_apply_group(m);
        apply_disks(m);
        (void) watch_sync(m);
        schedule_all(m);
        worker_dispatch(m);
        log_info("configuration reloaded: %zu images", m->n_disks);
        notify_ready();
        manager_state_changed(m);
        return 0;
}

/* ---- signals ---- */

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("received %s, stopping", strsignal((int) si->ssi_signo));
        return sd_event_exit(m->event, 0);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata, NULL);
        return 0;
}

static int setup_signals(Manager *m) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        /* sd-bus writes with MSG_NOSIGNAL, but a peer gone mid-write must never kill us. */
        signal(SIGPIPE, SIG_IGN);
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        return r;
}

/* ---- life cycle ---- */

static int open_state_dir(Manager *m) {
        _cleanup_free_ char *p = strdup(m->state_dir);
        TrimStatus *t = NULL;
        size_t n = 0;
        pid_t holder;
        int r;

        if (!p)
                return -ENOMEM;
        for (char *s = strchr(p + 1, '/');; s = strchr(s + 1, '/')) {
                if (s)
                        *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return log_error_errno(errno, "cannot create %s: %m", p);
                if (!s)
                        break;
                *s = '/';
        }
        m->state_dir_fd = open(m->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->state_dir_fd < 0)
                return log_error_errno(errno, "cannot open the state directory %s: %m", m->state_dir);
        r = state_lock_dir(m->state_dir_fd, &m->state_lock_fd, &holder);
        if (r == -EBUSY && holder > 0)
                return log_error_errno(r, "another vhdreclaimd (PID %d) uses the state directory %s: "
                                          "each daemon needs its own (--state-dir, stateDir=)",
                                       (int) holder, m->state_dir);
        if (r == -EBUSY)
                return log_error_errno(r, "another vhdreclaimd uses the state directory %s (%s/" STATE_LOCK_FILE
                                          " is locked): each daemon needs its own (--state-dir, stateDir=)",
                                       m->state_dir, m->state_dir);
        if (r < 0)
                return log_error_errno(r, "cannot lock the state directory %s (%s/" STATE_LOCK_FILE "): %m",
                                       m->state_dir, m->state_dir);
        r = state_load_trim(m->state_dir_fd, &t, &n);
        if (r == -EBADMSG)
                log_warning("%s/trim.state is malformed, starting afresh", m->state_dir);
        else if (r >= 0) {
                m->trim_status = t;
                m->n_trim_status = n;
        }
        return 0;
}

static int load_config(Manager *m) {
        ConfigMessages msgs = {};
        int r;

        r = config_load(m->config_path, &m->config, &msgs);
        log_messages(&msgs);
        config_messages_done(&msgs);
        if (r < 0)
                return log_error_errno(r, "cannot load the configuration %s", m->config_path);
        m->socket_path = strdup(m->socket_override ? m->socket_override : m->config->socket_path);
        m->state_dir = strdup(m->state_dir_override ? m->state_dir_override : m->config->state_dir);
        if (!m->socket_path || !m->state_dir)
                return -ENOMEM;
        resolve_admin_group(m);
        return 0;
}

int manager_new(const char *config_path, const char *socket_override, const char *state_dir_override,
                Manager **ret) {
        Manager *m;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        hashmap_init(&m->disks_by_name, true);
        hashmap_init(&m->disks_by_path, false);
        hashmap_init(&m->disks_by_real_path, false);
        hashmap_init(&m->watch_dirs_by_wd, false);
        m->state_dir_fd = m->state_lock_fd = m->worker_efd = m->inotify_fd = m->inotify_wait_fd = m->mountinfo_fd =
                m->listen_fd = -1;
        m->start_time = usec_now(CLOCK_REALTIME);
        /* Absolute, so ConfigFile says which file a reload reads. */
        m->config_path = realpath(config_path, NULL);
        if (!m->config_path)
                m->config_path = strdup(config_path);
        m->socket_override = socket_override ? strdup(socket_override) : NULL;
        m->state_dir_override = state_dir_override ? strdup(state_dir_override) : NULL;
        if (!m->config_path || (socket_override && !m->socket_override) ||
            (state_dir_override && !m->state_dir_override)) {
                r = -ENOMEM;
                goto fail;
        }

        r = sd_event_new(&m->event);
        if (r >= 0)
                r = sd_event_set_watchdog(m->event, true);
        if (r >= 0)
                r = setup_signals(m);
        if (r >= 0)
                r = sd_id128_randomize(&m->server_id);
        if (r < 0) {
                log_error_errno(r, "cannot set up the event loop: %m");
                goto fail;
        }
        r = load_config(m);
        if (r >= 0)
                r = open_state_dir(m);
        if (r >= 0)
                r = worker_setup(m);
        if (r < 0)
                goto fail;
        apply_disks(m);
        r = watch_setup(m);
        if (r < 0)
                goto fail;
        (void) watch_sync(m);
        r = control_setup(m);
        if (r < 0)
                goto fail;
        schedule_all(m);
        *ret = m;
        return 0;
fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* In reverse order of manager_new(). */
        m->stopping = true;
        worker_stop_all(m);
        manager_stop_probes(m);
        while (m->jobs) {
                Job *j = m->jobs;

                manager_unlink_job(m, j);
                if (j->disk)
                        j->disk->job = NULL;
                job_free(j);
        }
        m->trim_timer = sd_event_source_disable_unref(m->trim_timer);
        m->status_defer = sd_event_source_disable_unref(m->status_defer);
        m->dispatch_defer = sd_event_source_disable_unref(m->dispatch_defer);
        control_done(m);
        watch_done(m);
        while (m->n_disks > 0)
                disk_free(m->disks[--m->n_disks]);
        free(m->disks);
        manager_disk_index_done(m);
        worker_done(m);
        trim_status_free(m->trim_status, m->n_trim_status);
        if (m->state_dir_fd >= 0)
                close(m->state_dir_fd);
        if (m->state_lock_fd >= 0)
                close(m->state_lock_fd);
        config_free(m->config);
        sd_event_unref(m->event);
        free(m->socket_path);
        free(m->state_dir);
        free(m->config_path);
        free(m->socket_override);
        free(m->state_dir_override);
        free(m->last_status);
        free(m);
        return NULL;
}

/* Hundreds of clients and a thousand images need more than the soft 1024. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int manager_main(const char *config_path, const char *socket_override, const char *state_dir_override) {
        Manager *m = NULL;
        int r;

        raise_fd_limit();
        r = manager_new(config_path, socket_override, state_dir_override, &m);
        if (r < 0)
                return 1;
        log_info("vhdreclaimd %s: %zu images, control socket %s, state in %s", VHDRECLAIM_VERSION, m->n_disks,
                 m->socket_path, m->state_dir);
        notify_ready();
        manager_state_changed(m);

        r = sd_event_loop(m->event);
        notify_stopping();
        if (r < 0)
                log_error_errno(r, "event loop failed: %m");
        /* Running passes stop at their next check (within ~50 ms); their state is saved as they end. */
        m->stopping = true;
        worker_stop_all(m);
        manager_free(m);
        return r < 0 ? 1 : 0;
}
