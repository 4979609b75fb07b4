/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "control.h"
#include "filesize.h"
#include "image.h"
#include "json.h"
#include "log.h"
#include "state.h"
#include "trim.h"
#include "vhdreclaim-bus.h"

/* A client that does not read its replies and signals gets dropped once
 * this many messages wait for it, so it cannot make the daemon hoard memory. */
#define CONNECTION_WQUEUE_MAX 1024
/* Accepting stops for this long when the process is out of descriptors. */
#define ACCEPT_BACKOFF_USEC (500 * USEC_PER_MSEC)
/* Clients taken per turn of the event loop. Every turn costs time per open
 * connection, so a flood of connects must wait in the backlog rather than
 * pile up here unserved. */
#define ACCEPT_BATCH 32

typedef struct Listing Listing;

struct Connection {
        Manager *manager;
        Connection *prev, *next;
        sd_bus *bus;
        uid_t uid;
        gid_t gid;
        pid_t pid;
        gid_t *groups;          /* supplementary groups, at connect time */
        size_t n_groups;
        bool said_hello;
        bool spoke;             /* sent something other than Hello */
        bool kicked;            /* processed once right after its handshake (see on_kick) */
        sd_event_source *handshake_timer;
        Listing *listings;      /* ListDisks calls waiting for their files' sizes */
};

/* A ListDisks call while its files are stat()ed off the loop (filesize.c).
 * It names its disks, not points at them: a reload or a deleted image may
 * drop one meanwhile, and the reply then leaves it out. */
struct Listing {
        Connection *connection;
        Listing *prev, *next;
        sd_bus_message *call;
        char **names;
        char **paths;           /* as stat()ed, beside names */
        size_t n;
        FileSizeQuery *query;
};

static void strv_free(char **l);

static void listing_free(Listing *l) {
        if (!l)
                return;
        if (l->prev)
                l->prev->next = l->next;
        else if (l->connection->listings == l)
                l->connection->listings = l->next;
        if (l->next)
                l->next->prev = l->prev;
        filesize_query_free(l->query);
        sd_bus_message_unref(l->call);
        strv_free(l->names);
        strv_free(l->paths);
        free(l);
}

static void connection_free(Connection *c) {
        Manager *m;

        if (!c)
                return;
        m = c->manager;
        if (c->prev)
                c->prev->next = c->next;
        else if (m->connections == c)
                m->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        m->n_connections--;
        while (c->listings)
                listing_free(c->listings);
        if (!c->kicked)
                m->n_unkicked--;
        if (c->bus) {
                sd_bus_detach_event(c->bus);
                sd_bus_close(c->bus);
                c->bus = sd_bus_unref(c->bus);
        }
        sd_event_source_disable_unref(c->handshake_timer);
        free(c->groups);
        free(c);
}

/* ---- credentials ---- */

static int peer_groups_from_proc(pid_t pid, gid_t **ret, size_t *ret_n) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        char path[64];
        size_t size = 0;

        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (getline(&line, &size, f) > 0) {
                gid_t *g = NULL;
                size_t n = 0;
                char *p, *save = NULL;

                if (strncmp(line, "Groups:", 7) != 0)
                        continue;
                for (p = strtok_r(line + 7, " \t\n", &save); p; p = strtok_r(NULL, " \t\n", &save)) {
                        gid_t *ng = reallocarray(g, n + 1, sizeof *ng);

                        if (!ng) {
                                free(g);
                                return -ENOMEM;
                        }
                        g = ng;
                        g[n++] = (gid_t) strtoul(p, NULL, 10);
                }
                *ret = g;
                *ret_n = n;
                return 0;
        }
        return -ENOENT;
}

static int peer_groups(int fd, pid_t pid, gid_t **ret, size_t *ret_n) {
        socklen_t len = 64 * sizeof(gid_t);

        for (;;) {
                _cleanup_free_ gid_t *g = malloc(len);

                if (!g)
                        return -ENOMEM;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) >= 0) {
                        *ret_n = len / sizeof(gid_t);
                        *ret = TAKE_PTR(g);
                        return 0;
                }
                if (errno != ERANGE)
                        break;
        }
        /* Kernels before 4.13: the peer's groups from /proc, racy but the best there is. */
        return peer_groups_from_proc(pid, ret, ret_n);
}

static bool connection_is_admin(const Connection *c) {
        const Manager *m = c->manager;

        if (c->uid == 0 || c->uid == geteuid())
                return true;
        if (!m->have_admin_gid)
                return false;
        if (c->gid == m->admin_gid)
                return true;
        for (size_t i = 0; i < c->n_groups; i++)
                if (c->groups[i] == m->admin_gid)
                        return true;
        return false;
}

/* The message names the group this daemon was configured with: clients
 * print it as it is, so what they say cannot drift from the configuration. */
static int check_admin(const Connection *c, sd_bus_error *error) {
        const Manager *m = c->manager;
        const char *group = m->config->admin_group;

        if (connection_is_admin(c))
                return 0;
        if (!group[0])
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_ACCESS,
                                         "Permission denied: uid %u is not root, and no adminGroup is configured",
                                         (unsigned) c->uid);
        if (!m->have_admin_gid)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_ACCESS,
                                         "Permission denied: uid %u is not root, and adminGroup \"%s\" does not exist",
                                         (unsigned) c->uid, group);
        return sd_bus_error_setf(error, VHDRECLAIM_ERROR_ACCESS,
                                 "Permission denied: uid %u is neither root nor a member of group \"%s\" (adminGroup)",
                                 (unsigned) c->uid, group);
}

/* ---- org.freedesktop.DBus, as much of it as busctl needs ---- */

static int method_hello(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        char name[32];

        if (c->said_hello)
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED, "Already handled an Hello message");
        c->said_hello = true;
        snprintf(name, sizeof name, ":1.%" PRIu64, ++c->manager->next_unique_name);
        return sd_bus_reply_method_return(msg, "s", name);
}

static const sd_bus_vtable bus_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Hello", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", unique_name), method_hello,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* ---- org.vhdreclaim.Manager1 ---- */

static int read_names(sd_bus_message *msg, char ***ret) {
        return sd_bus_message_read_strv(msg, ret);
}

static void strv_free(char **l) {
        for (char **p = l; p && *p; p++)
                free(*p);
        free(l);
}

static void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

static size_t strv_length(char **l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* D-Bus strings must be valid UTF-8: sd-bus refuses a whole message with
 * one bad string in it (-EINVAL), so a single file name that is not UTF-8
 * would break every reply listing it. Whatever the daemon puts on the bus
 * from a file name or the configuration goes through utf8_sanitize(); a
 * NULL result (out of memory) fails the call rather than send bad bytes. */
static int bus_error_set_utf8(sd_bus_error *error, const char *name, const char *message) {
        _cleanup_free_ char *clean = utf8_sanitize(message);

        if (!clean)
                return -ENOMEM;
        return sd_bus_error_set(error, name, clean);
}

/* A disk by the name a client knows: its own, or, for a name that is not
 * UTF-8, the sanitised one the daemon lists (when it names one disk only). */
static Disk *find_disk(Manager *m, const char *name) {
        Disk *d = manager_find_disk(m, name), *found = NULL;

        if (d)
                return d;
        for (size_t i = 0; i < m->n_disks; i++) {
                _cleanup_free_ char *clean = NULL;

                if (utf8_is_valid(m->disks[i]->name))
                        continue;
                clean = utf8_sanitize(m->disks[i]->name);
                if (!clean || strcmp(clean, name) != 0)
                        continue;
                if (found)
                        return NULL;    /* two names that read the same: name neither */
                found = m->disks[i];
        }
        return found;
}

static int check_disks_exist(Manager *m, char **names, sd_bus_error *error) {
        for (char **n = names; n && *n; n++)
                if (!find_disk(m, *n))
                        return sd_bus_error_setf(error, VHDRECLAIM_ERROR_NO_SUCH_DISK, "No disk named \"%s\"", *n);
        return 0;
}

/* ListDisks' struct, as vhdreclaim-bus.h documents it: fields are only ever appended. */
#define DISK_STRUCT "(ssssbsttttttssttttub)"

/* s as D-Bus can carry it: itself when valid UTF-8 (no copy: a status of
 * 10,000 disks would make 40,000), else a sanitized copy in *buf. */
static const char *bus_string(const char *s, char **buf) {
        if (!s)
                return "";
        if (utf8_is_valid(s))
                return s;
        *buf = utf8_sanitize(s);
        return *buf;
}

/* size: the file as stat()ed off the loop; NULL stats it here. */
static int append_disk(sd_bus_message *reply, Disk *d, const FileSize *size) {
        struct stat st;
        uint64_t file_size = 0, allocated = 0;
        const Job *j = d->job;
        _cleanup_free_ char *name_buf = NULL, *path_buf = NULL, *origin_buf = NULL, *message_buf = NULL;
        const char *name = bus_string(d->name, &name_buf), *path = bus_string(d->path, &path_buf),
                   *origin = bus_string(d->origin, &origin_buf),
                   *message = bus_string(d->record.last_message, &message_buf);

        if (!name || !path || !origin || !message)
                return -ENOMEM;

        /* Sizes as `stat` prints them now, not as of the last pass. */
        if (size) {
                if (size->error == 0) {
                        file_size = size->size;
                        allocated = size->allocated;
                }
        } else if (stat(d->path, &st) >= 0) {
                file_size = (uint64_t) st.st_size;
                allocated = (uint64_t) st.st_blocks * 512;
        }
        return sd_bus_message_append(
                reply, DISK_STRUCT, name, path, origin,
                d->record.format >= 0 ? image_format_to_string((ImageFormat) d->record.format) : "unknown",
                disk_effective_sparse(d), disk_state_to_string(disk_state(d)), d->record.virtual_size, file_size,
                allocated, d->record.reclaimable, d->record.reclaimed_last, d->record.reclaimed_total,
                d->record.last_result >= 0 ? pass_result_to_string((PassResult) d->record.last_result) : "",
                message, d->record.last_pass, d->next_pass,
                j && j->running ? atomic_load(&j->done) : 0, j && j->running ? atomic_load(&j->total) : 0,
                d->record.passes, (int) d->record.last_dry_run);
}

static int listing_reply(Listing *l, const FileSize *sizes) {
        Manager *m = l->connection->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(l->call, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', DISK_STRUCT);
        for (size_t i = 0; i < l->n && r >= 0; i++) {
                Disk *d = manager_find_disk(m, l->names[i]);

                if (!d)
                        continue;       /* dropped while its size was read */
                /* A reload gave the name another path: stat that one now. */
                r = append_disk(reply, d, strcmp(d->path, l->paths[i]) == 0 ? &sizes[i] : NULL);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static void on_listing_sizes(FileSizeQuery *q, const FileSize *sizes, size_t n, void *userdata) {
        Listing *l = userdata;
        int r;

        (void) q;
        (void) n;
        r = listing_reply(l, sizes);
        if (r < 0) {
                log_warning_errno(r, "cannot answer ListDisks: %m");
                (void) sd_bus_reply_method_errno(l->call, r, NULL);
        }
        listing_free(l);
}

static int listing_add(Listing *l, Disk *d) {
        l->names[l->n] = strdup(d->name);
        l->paths[l->n] = strdup(d->path);
        if (!l->names[l->n] || !l->paths[l->n])
                return -ENOMEM;
        l->n++;
        return 0;
}

/* Answered once the files' sizes are read off the loop (on_listing_sizes). */
static int method_list_disks(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        Manager *m = c->manager;
        _cleanup_strv_free_ char **names = NULL;
        size_t want;
        Listing *l;
        int r = 0;

        r = read_names(msg, &names);
        if (r < 0)
                return r;
        r = check_disks_exist(m, names, error);
        if (r < 0)
                return r;
        want = strv_length(names) == 0 ? m->n_disks : strv_length(names);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->connection = c;
        l->call = sd_bus_message_ref(msg);
        l->names = calloc(want + 1, sizeof(char *));
        l->paths = calloc(want + 1, sizeof(char *));
        l->next = c->listings;
        if (c->listings)
                c->listings->prev = l;
        c->listings = l;
        if (!l->names || !l->paths)
                r = -ENOMEM;
        if (strv_length(names) == 0)
                for (size_t i = 0; i < m->n_disks && r >= 0; i++)
                        r = listing_add(l, m->disks[i]);
        else
                for (char **n = names; *n && r >= 0; n++)
                        r = listing_add(l, find_disk(m, *n));
        if (r >= 0)
                r = filesize_query_start(m->event, l->paths, l->n, on_listing_sizes, l, &l->query);
        if (r < 0) {
                listing_free(l);
                return r;
        }
        return 1;
}

static int method_reclaim(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        Manager *m = c->manager;
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *ids = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int all, dry_run, r;
        const char *discard;
        DiscardMode mode = _DISCARD_MODE_INVALID;
        size_t n = 0;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = read_names(msg, &names);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "bbs", &all, &dry_run, &discard);
        if (r < 0)
                return r;
        if (*discard) {
                mode = discard_mode_from_string(discard);
                if (mode != DISCARD_SAFE && mode != DISCARD_FREE)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "discard must be \"\", \"safe\" or \"free\", not \"%s\"", discard);
        }
        if (!all && strv_length(names) == 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Name at least one disk, or ask for all");
        r = check_disks_exist(m, names, error);
        if (r < 0)
                return r;

        ids = calloc(all ? m->n_disks + 1 : strv_length(names) + 1, sizeof *ids);
        if (!ids)
                return -ENOMEM;
        if (all) {
                for (size_t i = 0; i < m->n_disks; i++) {
                        Job *j;

                        /* An absent image has nothing to reclaim: --all skips it. */
                        if (m->disks[i]->missing)
                                continue;
                        r = manager_queue_reclaim(m, m->disks[i], TRIGGER_MANUAL, dry_run, mode, &j);
                        if (r == -EBUSY)        /* being re-allocated: --all passes it by */
                                continue;
                        if (r < 0)
                                return r;
                        ids[n++] = j->id;
                }
        } else
                for (char **p = names; *p; p++) {
                        Job *j;

                        r = manager_queue_reclaim(m, find_disk(m, *p), TRIGGER_MANUAL, dry_run, mode, &j);
                        if (r == -EBUSY)
                                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_BUSY,
                                                         "\"%s\" is being re-allocated (SetSparse false)", *p);
                        if (r < 0)
                                return r;
                        ids[n++] = j->id;
                }

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 't', ids, n * sizeof *ids);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_compact(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        const char *name;
        Disk *d;
        Job *j;
        int r;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        d = find_disk(c->manager, name);
        if (!d)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_NO_SUCH_DISK, "No disk named \"%s\"", name);
        r = manager_queue_compact(c->manager, d, &j);
        if (r == -EPERM)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_FAILED,
                                         "\"%s\" is watch-only (sparse=false or discard=none): it is never modified, "
                                         "so it is not compacted", name);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_BUSY,
                                         "A job that does not compact is running on \"%s\"; compact it when it ends",
                                         name);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "t", j->id);
}

static int method_trim(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        _cleanup_strv_free_ char **mounts = NULL;
        _cleanup_free_ char *why = NULL;
        Job *j;
        int all, r;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = read_names(msg, &mounts);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "b", &all);
        if (r < 0)
                return r;
        for (char **p = mounts; p && *p; p++)
                if (**p != '/')
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Not an absolute path: \"%s\"", *p);
        r = manager_queue_trim(c->manager, mounts, strv_length(mounts), all, &why, &j);
        if (r == -ENOENT && strv_length(mounts) == 0)
                /* Nothing configured is not a failure: the weekly timer's
                 * oneshot runs `trim --wait` on every host. */
                return sd_bus_reply_method_return(msg, "t", UINT64_C(0));
        if ((r == -ENXIO || r == -ENOENT || r == -EINVAL) && why)
                return bus_error_set_utf8(error, r == -ENXIO ? VHDRECLAIM_ERROR_FAILED : SD_BUS_ERROR_INVALID_ARGS,
                                          why);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "t", j->id);
}

static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        uint64_t id;
        int r;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "t", &id);
        if (r < 0)
                return r;
        r = manager_cancel_job(c->manager, id);
        if (r == -ESRCH)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_NO_SUCH_JOB, "No job %" PRIu64, id);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_set_sparse(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        const char *name;
        Disk *d;
        int sparse, r;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sb", &name, &sparse);
        if (r < 0)
                return r;
        d = find_disk(c->manager, name);
        if (!d)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_NO_SUCH_DISK, "No disk named \"%s\"", name);
        if (!sparse) {
                Job *j;

                r = disk_unsparse_check(d);
                if (r >= 0)
                        r = manager_queue_unsparse(c->manager, d, msg, &j);
                if (r == -ENOSPC)
                        return sd_bus_error_setf(error, VHDRECLAIM_ERROR_NO_SPACE,
                                                 "The host file system lacks the free space to re-allocate \"%s\"",
                                                 name);
                if (r == -EBUSY)
                        return sd_bus_error_setf(error, VHDRECLAIM_ERROR_BUSY, "A job is running on \"%s\"", name);
                if (r < 0)
                        return sd_bus_error_setf(error, VHDRECLAIM_ERROR_FAILED, "Re-allocating \"%s\" failed: %s",
                                                 name, strerror(-r));
                /* Answered by the job when the holes are allocated: the loop does not wait. */
                return 1;
        }
        d->record.sparse_override = 1;
        r = state_save_disk(c->manager->state_dir_fd, d->name, d->path, &d->record);
        if (r < 0)
                log_warning_errno(r, "cannot save the state of %s: %m", d->name);
        manager_state_changed(c->manager);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        _cleanup_free_ char *errors = NULL;
        int r;

        r = check_admin(c, error);
        if (r < 0)
                return r;
        r = manager_reload(c->manager, &errors);
        if (r < 0)
                return bus_error_set_utf8(error, VHDRECLAIM_ERROR_CONFIG,
                                          errors && *errors ? errors : strerror(-r));
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_list_jobs(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint64_t now = usec_now(CLOCK_MONOTONIC);
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(tsssttd)");
        if (r < 0)
                return r;
        for (Job *j = c->manager->jobs; j && r >= 0; j = j->next) {
                uint64_t done = j->running ? atomic_load(&j->done) : 0;
                _cleanup_free_ char *target = utf8_sanitize(j->target);

                if (!target)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(tsssttd)", j->id, job_kind_to_string(j->kind), target,
                                          j->running ? "running" : "queued", done,
                                          j->running ? atomic_load(&j->total) : 0, job_rate(j, done, now));
        }
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_history(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        HistoryEntry *e = NULL;
        size_t n = 0;
        const char *name;
        uint32_t limit;
        int r;

        r = sd_bus_message_read(msg, "su", &name, &limit);
        if (r < 0)
                return r;
        /* A managed disk by any spelling status takes (names ignore case),
         * searched as its lines spell it; an image gone since, as given. */
        Disk *d = *name ? find_disk(c->manager, name) : NULL;
        _cleanup_free_ char *spelled = d ? utf8_sanitize(d->name) : NULL;
        if (d && !spelled)
                return -ENOMEM;
        r = state_read_history(c->manager->state_dir_fd, spelled ?: name, limit, &e, &n);
        if (r < 0)
                return sd_bus_error_setf(error, VHDRECLAIM_ERROR_FAILED, "Cannot read the history: %s", strerror(-r));
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sstsstttttsb)");
        for (size_t i = 0; i < n && r >= 0; i++)
                r = sd_bus_message_append(reply, "(sstsstttttsb)", e[i].name, e[i].path, e[i].start, e[i].result,
                                          e[i].message, e[i].duration_usec, e[i].reclaimed, e[i].stale_bytes,
                                          e[i].zero_bytes, e[i].free_bytes, e[i].discard, (int) e[i].dry_run);
        history_entries_free(e, n);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_trim_status(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        Manager *m = c->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sttts)");
        for (size_t i = 0; i < m->n_trim_status && r >= 0; i++) {
                const TrimStatus *t = &m->trim_status[i];
                _cleanup_free_ char *mount = utf8_sanitize(t->mount), *result = utf8_sanitize(t->last_result);

                if (!mount || !result)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(sttts)", mount, t->last, t->trimmed_last, t->trimmed_total,
                                          result);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;
        Manager *m = c->manager;

        if (strcmp(property, "Version") == 0)
                return sd_bus_message_append(reply, "s", VHDRECLAIM_VERSION);
        if (strcmp(property, "State") == 0)
                return sd_bus_message_append(reply, "s", manager_active_jobs(m) > 0 ? "busy" : "idle");
        if (strcmp(property, "Disks") == 0)
                return sd_bus_message_append(reply, "u", (uint32_t) m->n_disks);
        if (strcmp(property, "ActiveJobs") == 0)
                return sd_bus_message_append(reply, "u", (uint32_t) manager_active_jobs(m));
        if (strcmp(property, "ReclaimedTotal") == 0)
                return sd_bus_message_append(reply, "t", manager_reclaimed_total(m));
        if (strcmp(property, "StartTime") == 0)
                return sd_bus_message_append(reply, "t", m->start_time);
        if (strcmp(property, "ConfigFile") == 0) {
                _cleanup_free_ char *config = utf8_sanitize(m->config_path);

                return config ? sd_bus_message_append(reply, "s", config) : -ENOMEM;
        }
        return -ENOENT;
}

/* Every member is UNPRIVILEGED for sd-bus: the W methods check the peer's
 * credentials themselves (check_admin), against adminGroup. */
static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get, 0, 0),
        SD_BUS_PROPERTY("Disks", "u", property_get, 0, 0),
        SD_BUS_PROPERTY("ActiveJobs", "u", property_get, 0, 0),
        SD_BUS_PROPERTY("ReclaimedTotal", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("StartTime", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ConfigFile", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("ListDisks", SD_BUS_ARGS("as", names),
                                SD_BUS_RESULT("a" DISK_STRUCT, disks), method_list_disks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reclaim", SD_BUS_ARGS("as", names, "b", all, "b", dry_run, "s", discard),
                                SD_BUS_RESULT("at", job_ids), method_reclaim, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Compact", SD_BUS_ARGS("s", name), SD_BUS_RESULT("t", job_id), method_compact,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Trim", SD_BUS_ARGS("as", mounts, "b", all), SD_BUS_RESULT("t", job_id),
                                method_trim, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("t", job_id), SD_BUS_NO_RESULT, method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetSparse", SD_BUS_ARGS("s", name, "b", sparse), SD_BUS_NO_RESULT,
                                method_set_sparse, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(tsssttd)", jobs), method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("History", SD_BUS_ARGS("s", name, "u", limit),
                                SD_BUS_RESULT("a(sstsstttttsb)", passes), method_history, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetTrimStatus", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sttts)", mounts),
                                method_get_trim_status, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("JobProgress", SD_BUS_ARGS("t", job_id, "s", target, "t", done, "t", total, "d", rate),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("JobFinished",
                                SD_BUS_ARGS("t", job_id, "s", kind, "s", target, "s", result, "s", message, "t",
                                            reclaimed, "b", dry_run, "t", punched, "b", compacted, "t",
                                            file_size_before, "t", file_size_after),
                                0),
        SD_BUS_VTABLE_END
};

/* ---- connections ---- */

static int on_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        /* sd-bus holds its own reference while dispatching: freeing here is safe. */
        connection_free(userdata);
        return 0;
}

/* A bus client (busctl) fails with EIO when anything but the reply to its
 * Hello comes first: signals go only to peers past that point, that is to
 * those that said Hello or called anything else. */
static int on_any_message(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Connection *c = userdata;

        if (!sd_bus_message_is_method_call(msg, "org.freedesktop.DBus", "Hello"))
                c->spoke = true;
        return 0;
}

/* sd-bus (252) on the server side reads the handshake greedily: a message
 * sent in the same write as BEGIN sits in its buffer, and nothing dispatches
 * it until the peer writes again. So every connection is processed once more
 * right after its handshake completes. */
static int on_kick(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        for (Connection *c = m->connections, *next; c; c = next) {
                sd_bus *bus;

                next = c->next;
                if (c->kicked || sd_bus_is_ready(c->bus) <= 0)
                        continue;
                c->kicked = true;
                m->n_unkicked--;
                /* The connection may go away while processing; the bus stays valid. */
                bus = sd_bus_ref(c->bus);
                for (int i = 0; i < 16 && sd_bus_process(bus, NULL) > 0; i++)
                        ;
                sd_bus_unref(bus);
        }
        if (m->n_unkicked == 0)
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

/* A client that has not said a word this long after connecting (stalled in
 * the authentication, or never sending anything) gives its descriptor back:
 * otherwise whoever can connect could fill the daemon's descriptor table. */
#define HANDSHAKE_TIMEOUT_USEC (30 * USEC_PER_SEC)

static int on_handshake_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Connection *c = userdata;

        if (!c->said_hello && !c->spoke) {
                log_debug("Dropping control client pid %d: no message %u s after connecting",
                          (int) c->pid, (unsigned) (HANDSHAKE_TIMEOUT_USEC / USEC_PER_SEC));
                connection_free(c);
        }
        return 0;
}

static int connection_new(Manager *m, int fd) {
        _cleanup_close_ int cfd = fd;
        Connection *c;
        struct ucred ucred;
        socklen_t len = sizeof ucred;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &ucred, &len) < 0)
                return log_debug_errno(errno, "SO_PEERCRED: %m");
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        *c = (Connection) { .manager = m, .uid = ucred.uid, .gid = ucred.gid, .pid = ucred.pid };
        c->next = m->connections;
        if (c->next)
                c->next->prev = c;
        m->connections = c;
        m->n_connections++;
        m->n_unkicked++;
        if (!m->control_kick)
                r = sd_event_add_post(m->event, &m->control_kick, on_kick, m);
        else
                r = sd_event_source_set_enabled(m->control_kick, SD_EVENT_ON);
        if (r < 0) {
                connection_free(c);
                return log_warning_errno(r, "cannot watch control connections: %m");
        }

        r = peer_groups(fd, c->pid, &c->groups, &c->n_groups);
        if (r < 0)
                log_debug_errno(r, "cannot learn the groups of pid %d: %m", (int) c->pid);

        r = sd_bus_new(&c->bus);
        if (r < 0)
                goto fail;
        r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r < 0)
                goto fail;
        TAKE_FD(cfd);
        r = sd_bus_set_server(c->bus, 1, m->server_id);
        if (r < 0)
                goto fail;
        r = sd_bus_add_object_vtable(c->bus, NULL, VHDRECLAIM_BUS_PATH, VHDRECLAIM_BUS_INTERFACE, manager_vtable, c);
        if (r < 0)
                goto fail;
        r = sd_bus_add_object_vtable(c->bus, NULL, "/org/freedesktop/DBus", "org.freedesktop.DBus", bus_vtable, c);
        if (r < 0)
                goto fail;
        r = sd_bus_add_filter(c->bus, NULL, on_any_message, c);
        if (r < 0)
                goto fail;
        r = sd_bus_match_signal(c->bus, NULL, NULL, "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Disconnected", on_disconnected, c);
        if (r < 0)
                goto fail;
        r = sd_bus_attach_event(c->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                goto fail;
        /* Otherwise sd-bus flushes every connection as the loop exits, and that
         * flush waits, with no timeout, for a client that stalled in its
         * handshake: one such client would block shutdown. control_done()
         * closes them instead. */
        r = sd_bus_set_close_on_exit(c->bus, false);
        if (r < 0)
                goto fail;
        r = sd_bus_start(c->bus);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(m->event, &c->handshake_timer, CLOCK_MONOTONIC, HANDSHAKE_TIMEOUT_USEC,
                                       USEC_PER_SEC, on_handshake_timeout, c);
        if (r < 0)
                goto fail;
        return 0;
fail:
        log_debug_errno(r, "cannot set up a control connection: %m");
        connection_free(c);
        return r;
}

static int reenable_listen(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        sd_event_source_set_enabled(m->listen_source, SD_EVENT_ON);
        return 0;
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* Pending clients wait in the backlog until descriptors free up. */
                                log_warning_errno(errno, "cannot accept control connections for now: %m");
                                sd_event_source_set_enabled(s, SD_EVENT_OFF);
                                sd_event_add_time_relative(m->event, NULL, CLOCK_MONOTONIC, ACCEPT_BACKOFF_USEC, 0,
                                                           reenable_listen, m);
                                return 0;
                        }
                        return log_warning_errno(errno, "accept: %m"), 0;
                }
                (void) connection_new(m, cfd);
        }
        return 0;
}

static int socket_connectable(const struct sockaddr_un *sa, socklen_t len) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, len) < 0)
                return -errno;
        return 0;
}

static int mkdir_parents(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        return 0;
}

/* The socket's group is adminGroup, whoever made the socket: the
 * configuration says who administers the daemon, so a socket from systemd
 * (SocketGroup=) follows it too. The path is the one the listening socket
 * is bound to. */
void control_socket_apply_group(Manager *m) {
        struct sockaddr_un sa = {};
        socklen_t len = sizeof sa;
        const char *group = m->config->admin_group;
        struct stat st;
        gid_t gid = 0;
        struct group *g;

        if (geteuid() != 0 || m->listen_fd < 0)
                return;
        if (getsockname(m->listen_fd, (struct sockaddr *) &sa, &len) < 0 || sa.sun_family != AF_UNIX ||
            len <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == 0)
                return;         /* unnamed or abstract: no file to own */
        sa.sun_path[sizeof sa.sun_path - 1] = 0;
        if (group[0]) {
                g = getgrnam(group);
                if (!g)
                        return;     /* resolve_admin_group() said so */
                gid = g->gr_gid;
        }
        if (stat(sa.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode) || (st.st_uid == 0 && st.st_gid == gid))
                return;
        if (chown(sa.sun_path, 0, gid) < 0)
                log_warning_errno(errno, "cannot give %s to group %s: %m", sa.sun_path, group[0] ? group : "root");
        else
                log_info("%s now belongs to group %s (adminGroup)", sa.sun_path, group[0] ? group : "root");
}

static int bind_socket(Manager *m) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t len;
        _cleanup_close_ int fd = -1;
        mode_t old_umask;
        int r;

        if (strlen(m->socket_path) >= sizeof sa.sun_path)
                return log_error_errno(ENAMETOOLONG, "socket path too long: %s", m->socket_path);
        strcpy(sa.sun_path, m->socket_path);
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(sa.sun_path) + 1);

        r = mkdir_parents(m->socket_path, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create the directory of %s: %m", m->socket_path);

        r = socket_connectable(&sa, len);
        if (r >= 0)
                return log_error_errno(EADDRINUSE, "another vhdreclaimd is running on %s", m->socket_path);
        if (r == -ECONNREFUSED) {
                log_info("removing the stale socket %s", m->socket_path);
                if (unlink(m->socket_path) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "cannot remove the stale socket %s: %m", m->socket_path);
        } else if (r != -ENOENT)
                return log_error_errno(r, "%s exists and is not a socket we can replace: %m", m->socket_path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "socket: %m");
        /* 0660: the admin group connects; the socket unit does the same. */
        old_umask = umask(0117);
        r = bind(fd, (struct sockaddr *) &sa, len) < 0 ? -errno : 0;
        umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "cannot bind %s: %m", m->socket_path);
        m->listen_fd_ours = true;
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "listen on %s: %m", m->socket_path);
        m->listen_fd = TAKE_FD(fd);
        return 0;
}

int control_setup(Manager *m) {
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "sd_listen_fds: %m");
        if (n > 1)
                return log_error_errno(EINVAL, "expected one socket from systemd, got %d", n);
        if (n == 1) {
                if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) <= 0)
                        return log_error_errno(EINVAL, "the socket from systemd is not a listening Unix stream socket");
                m->listen_fd = SD_LISTEN_FDS_START;
                if (fcntl(m->listen_fd, F_SETFL, fcntl(m->listen_fd, F_GETFL) | O_NONBLOCK) < 0)
                        return log_error_errno(errno, "fcntl: %m");
        } else {
                r = bind_socket(m);
                if (r < 0)
                        return r;
        }
        control_socket_apply_group(m);
        r = sd_event_add_io(m->event, &m->listen_source, m->listen_fd, EPOLLIN, on_listen, m);
        if (r < 0)
                return log_error_errno(r, "cannot watch the control socket: %m");
        /* Below the connections: the clients we have are served (and the
         * ones that hung up freed) before new ones are taken. */
        r = sd_event_source_set_priority(m->listen_source, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0)
                return log_error_errno(r, "cannot set the control socket's priority: %m");
        return 0;
}

void control_done(Manager *m) {
        while (m->connections)
                connection_free(m->connections);
        m->control_kick = sd_event_source_disable_unref(m->control_kick);
        m->listen_source = sd_event_source_disable_unref(m->listen_source);
        if (m->listen_fd >= 0) {
                if (m->listen_fd_ours)
                        (void) unlink(m->socket_path);
                close(m->listen_fd);
                m->listen_fd = -1;
        }
}

/* ---- signals ---- */

static bool connection_ready(Connection *c) {
        uint64_t queued = 0;

        if (!c->bus || sd_bus_is_ready(c->bus) <= 0 || !(c->said_hello || c->spoke))
                return false;
        if (sd_bus_get_n_queued_write(c->bus, &queued) >= 0 && queued > CONNECTION_WQUEUE_MAX) {
                log_debug("dropping a control client (pid %d) that does not read its messages", (int) c->pid);
                connection_free(c);
                return false;
        }
        return true;
}

void control_emit_job_progress(Manager *m, const Job *j, double rate) {
        _cleanup_free_ char *target = utf8_sanitize(j->target);

        if (!target)
                return;
        for (Connection *c = m->connections, *next; c; c = next) {
                next = c->next;
                if (connection_ready(c))
                        (void) sd_bus_emit_signal(c->bus, VHDRECLAIM_BUS_PATH, VHDRECLAIM_BUS_INTERFACE, "JobProgress",
                                                  "tsttd", j->id, target, atomic_load(&j->done),
                                                  atomic_load(&j->total), rate);
        }
}

void control_emit_job_finished(Manager *m, const Job *j, const char *result, const char *message,
                               uint64_t reclaimed) {
        /* A dry run measures nothing (reclaimed is 0): what it found is
         * what the pass would punch, and clients must be able to say so. */
        bool pass_ran = j->kind == JOB_RECLAIM && j->started;
        bool dry_run = pass_ran && j->report.dry_run;
        uint64_t punched = pass_ran ? j->report.stale_bytes + j->report.zero_bytes + j->report.free_bytes : 0;
        bool compacting = pass_ran && j->report.compact;
        uint64_t size_after = compacting ? j->report.file_size_after : 0;
        uint64_t size_before = compacting ? size_after + j->report.compacted : 0;
        _cleanup_free_ char *target = utf8_sanitize(j->target), *text = utf8_sanitize(message);

        if (!target || !text)
                return;

        for (Connection *c = m->connections, *next; c; c = next) {
                next = c->next;
                if (connection_ready(c))
                        (void) sd_bus_emit_signal(c->bus, VHDRECLAIM_BUS_PATH, VHDRECLAIM_BUS_INTERFACE, "JobFinished",
                                                  "tsssstbtbtt", j->id, job_kind_to_string(j->kind), target,
                                                  result, text, reclaimed, (int) dry_run, punched,
                                                  (int) compacting, size_before, size_after);
        }
}
