/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "macro.h"

static void print_reclaim(const ReclaimSettings *s, FILE *f) {
        char buf[FORMAT_SETTING_MAX];

        for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                fprintf(f, "%s=%s\n", reclaim_key_to_string(k), reclaim_settings_format(s, k, buf));
}

/* The keys a disk or watch sets itself, then, as comments, what it
 * inherits: a re-parse sees the same overrides and the reader sees every
 * effective value. */
static void print_overrides(bool sparse, bool sparse_overridden,
                            const ReclaimSettings *s, unsigned overridden, FILE *f) {
        char buf[FORMAT_SETTING_MAX];

        if (sparse_overridden)
                fprintf(f, "sparse=%s\n", sparse ? "true" : "false");
        /* auto is printed by leaving it out: the golden outputs stay as they were. */
        if (s->format != DISK_FORMAT_AUTO)
                fprintf(f, "format=%s\n", disk_format_to_string(s->format));
        for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                if (overridden & (1u << k))
                        fprintf(f, "%s=%s\n", reclaim_key_to_string(k), reclaim_settings_format(s, k, buf));

        if (!sparse_overridden)
                fprintf(f, "#sparse=%s (from [experimental] sparseVhd)\n", sparse ? "true" : "false");
        /* maxParallel is the daemon's, not a disk's: it has no effect here. */
        for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                if (!(overridden & (1u << k)) && k != RECLAIM_MAX_PARALLEL)
                        fprintf(f, "#%s=%s (from [reclaim])\n", reclaim_key_to_string(k),
                                reclaim_settings_format(s, k, buf));
}

static void print_trim(const TrimConfig *t, FILE *f) {
        char buf[FORMAT_DURATION_MAX];

        fputs("[trim]\nmounts=", f);
        if (t->all)
                fputs("all", f);
        else if (t->n_mounts == 0)
                fputs("none", f);
        for (size_t i = 0; i < t->n_mounts; i++)
                fprintf(f, "%s%s", i > 0 ? " " : "", t->mounts[i]);
        fprintf(f, "\ninterval=%s\n", format_duration(buf, t->interval_usec));
        fprintf(f, "chunk=%s\n", format_size_exact(buf, t->chunk));
        fprintf(f, "pause=%s\n", format_duration(buf, t->pause_usec));
}

int config_print(const Config *c, FILE *f) {
        fprintf(f, "[daemon]\nsocket=%s\nstateDir=%s\nadminGroup=%s\n",
                c->socket_path, c->state_dir, c->admin_group);
        fprintf(f, "\n[experimental]\nsparseVhd=%s\n", c->sparse_vhd ? "true" : "false");

        fputs("\n[reclaim]\n", f);
        print_reclaim(&c->reclaim, f);
        for (size_t i = 0; i < c->n_local_mounts; i++)
                fprintf(f, "%s%s%s", i == 0 ? "localMounts=" : " ", c->local_mounts[i],
                        i + 1 == c->n_local_mounts ? "\n" : "");

        for (size_t i = 0; i < c->n_disks; i++) {
                const DiskConfig *d = &c->disks[i];

                fprintf(f, "\n[disk.%s]\npath=%s\n", d->name, d->path);
                print_overrides(d->sparse, d->sparse_overridden, &d->reclaim, d->overridden, f);
        }

        for (size_t i = 0; i < c->n_watches; i++) {
                const WatchConfig *w = &c->watches[i];

                fprintf(f, "\n[watch.%s]\ndir=%s\npattern=%s\n", w->name, w->dir, w->pattern);
                /* false is printed by leaving it out, as format=auto is. */
                if (w->recursive)
                        fputs("recursive=true\n", f);
                print_overrides(w->sparse, w->sparse_overridden, &w->reclaim, w->overridden, f);
        }

        fputc('\n', f);
        print_trim(&c->trim, f);

        if (fflush(f) != 0 || ferror(f))
                return negative_errno();
        return 0;
}

int config_check_command(const char *path, FILE *out, FILE *err) {
        _cleanup_config_ Config *c = NULL;
        ConfigMessages msgs = {};
        bool reported;
        int r;

        if (!path)
                path = DEFAULT_CONFIG_FILE;

        r = config_load(path, &c, &msgs);
        config_messages_print(&msgs, err);
        reported = config_messages_count(&msgs, CONFIG_MESSAGE_ERROR) > 0;
        config_messages_done(&msgs);
        if (r < 0) {
                if (!reported)
                        fprintf(err, "%s: error: %s\n", path, strerror(-r));
                return 1;
        }

        r = config_print(c, out);
        if (r < 0) {
                fprintf(err, "cannot write the configuration: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
