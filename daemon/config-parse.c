/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "config.h"
#include "macro.h"

/* libinih splits lines into sections, keys and values; it does not tell the
 * handler which line a key is on and only reports the first syntax error.
 * So every line goes through reader() first, which counts lines, strips
 * comments and leading blanks (no continuation lines), checks the line's
 * shape, and tracks section headers; handler() then always knows the line
 * and section of the key it is given. */

typedef enum SectionKind {
        SECTION_NONE,           /* before the first header */
        SECTION_DAEMON,
        SECTION_EXPERIMENTAL,
        SECTION_RECLAIM,
        SECTION_TRIM,
        SECTION_DISK,
        SECTION_WATCH,
        SECTION_WSL,            /* .wslconfig's own [wsl2] and [general] */
        SECTION_IGNORED,        /* unknown or invalid header, already reported */
} SectionKind;

/* A key already set in one section, for first-wins duplicates. */
typedef struct SeenKey {
        SectionKind kind;
        size_t index;           /* of the disk or watch */
        const char *key;        /* canonical name, static */
        unsigned line;
} SeenKey;

typedef struct Parser {
        const char *path;
        FILE *f;
        unsigned line;
        char *buf;
        size_t buf_size;
        int read_error;         /* errno */
        const char *long_value; /* of the current line, when libinih gets only its key */
        bool oom;

        Config *config;
        ConfigMessages *msgs;

        SectionKind kind;
        size_t index;           /* current disk or watch */
        char *section;          /* "[disk.NAME]" as shown in messages */

        SeenKey *seen;
        size_t n_seen;
} Parser;

/* Keys of .wslconfig ([wsl2], [experimental], [general]), accepted and
 * ignored so that a real .wslconfig can be pointed at. Keys moved between
 * [wsl2] and [experimental] across WSL releases, so both take all of them. */
static const char *const wsl_keys[] = {
        "autoMemoryReclaim", "autoProxy", "bestEffortDnsParsing", "crashDumpFolder",
        "debugConsole", "debugConsoleLogFile", "defaultVhdSize", "dhcp", "dhcpTimeout",
        "distributionInstallPath", "distributionStartTimeout", "dnsProxy", "dnsTunneling",
        "dnsTunnelingIpAddress", "earlyBootLogging", "firewall", "gpuSupport",
        "guiApplications", "hardwarePerformanceCounters", "hostAddressLoopback",
        "hostFileSystemAccess", "ignoredPorts", "initialAutoProxyTimeout",
        "instanceIdleTimeout", "ipv6", "kernel", "kernelBootTimeout", "kernelCommandLine",
        "kernelDebugPort", "kernelModules", "loadDefaultKernelModules", "loadKernelModules",
        "localhostForwarding", "macAddress", "maxCrashDumpCount", "memory",
        "mountDeviceTimeout", "nestedVirtualization", "networkingMode", "pageReporting",
        "processors", "safeMode", "setVersionDebug", "swap", "swapFile", "systemDistro",
        "telemetry", "useWindowsDnsCache", "virtio", "virtio9p", "virtiofs", "vmIdleTimeout",
        "vmSwitch",
};

static const char *const daemon_keys[] = { "socket", "stateDir", "adminGroup" };
static const char *const experimental_keys[] = { "sparseVhd" };
static const char *const trim_keys[] = { "mounts", "interval", "chunk", "pause" };
static const char *const reclaim_only_keys[] = { "localMounts" };   /* not inherited by disks */
static const char *const disk_keys[] = { "path", "sparse", "format" };
static const char *const watch_keys[] = { "dir", "pattern", "recursive", "sparse", "format" };

#define MIN_TRIM_CHUNK MiB

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static const char *lookup_key(const char *const *keys, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcasecmp(keys[i], name) == 0)
                        return keys[i];
        return NULL;
}

/* ---- messages ---- */

static void parser_message(Parser *p, ConfigMessageLevel level, const char *format, ...) _printf_(3, 4);
static void parser_message(Parser *p, ConfigMessageLevel level, const char *format, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&text, format, ap);
        va_end(ap);
        if (r < 0 || config_messages_add(p->msgs, level, p->path, p->line, "%s", text) < 0)
                p->oom = true;
}

#define parser_error(p, ...) parser_message(p, CONFIG_MESSAGE_ERROR, __VA_ARGS__)
#define parser_warning(p, ...) parser_message(p, CONFIG_MESSAGE_WARNING, __VA_ARGS__)

static void invalid_value(Parser *p, const char *key, const char *value, int r, const char *reason) {
        if (r == -ERANGE && !reason)
                reason = "too large";
        parser_error(p, "invalid value for %s: '%s' (%s)", key, value, reason);
}

/* ---- values ---- */

/* Absolute, without empty or "." components or a trailing slash. Symlinks
 * and ".." are left alone: the file system is not consulted here. */
static int normalize_absolute_path(const char *in, char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t n = 0;

        if (in[0] != '/')
                return -EINVAL;

        out = malloc(strlen(in) + 2);
        if (!out)
                return -ENOMEM;

        for (const char *s = in; *s;) {
                size_t len;

                while (*s == '/')
                        s++;
                len = strcspn(s, "/");
                if (len == 0 || (len == 1 && s[0] == '.')) {
                        s += len;
                        continue;
                }
                out[n++] = '/';
                memcpy(out + n, s, len);
                n += len;
                s += len;
        }
        if (n == 0)
                out[n++] = '/';
        out[n] = '\0';

        *ret = TAKE_PTR(out);
        return 0;
}

static void set_path(Parser *p, const char *key, const char *value, bool file, char **target) {
        char *norm;
        int r;

        r = normalize_absolute_path(value, &norm);
        if (r == -ENOMEM) {
                p->oom = true;
                return;
        }
        if (r < 0 || (file && strcmp(norm, "/") == 0)) {
                if (r >= 0)
                        free(norm);
                invalid_value(p, key, value, -EINVAL,
                              file ? "expected the absolute path of a file" : "expected an absolute path");
                return;
        }
        /* libinih strips blanks around values: a path ending in one (given
         * with a trailing slash) could not be printed back by config_print(). */
        if (isspace((unsigned char) norm[strlen(norm) - 1])) {
                free(norm);
                invalid_value(p, key, value, -EINVAL, "a path may not end in a blank");
                return;
        }
        free(*target);
        *target = norm;
}

static void set_string(Parser *p, const char *value, char **target) {
        char *s = strdup(value);

        if (!s) {
                p->oom = true;
                return;
        }
        free(*target);
        *target = s;
}

static bool group_name_valid(const char *s) {
        if (s[0] == '-' || strlen(s) > 256)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("_.-", *s)))
                        return false;
        return true;
}

static void set_boolean(Parser *p, const char *key, const char *value, bool *target) {
        if (parse_boolean(value, target) < 0)
                invalid_value(p, key, value, -EINVAL, "expected true, false, 1 or 0");
}

static void set_duration(Parser *p, const char *key, const char *value, uint64_t *target) {
        int r = parse_duration_usec(value, target);

        if (r < 0)
                invalid_value(p, key, value, r, r == -ERANGE ? NULL :
                              "expected a duration such as 100ms, 90s, 10m, 1h30m, 1d, 1w");
}

static void set_reclaim(Parser *p, ReclaimSettings *s, ReclaimKey k, const char *value) {
        const char *reason = NULL;
        int r;

        r = reclaim_settings_set(s, k, value, &reason);
        if (r < 0)
                invalid_value(p, reclaim_key_to_string(k), value, r, reason);
}

static int strv_push(char ***l, size_t *n, char *s) {
        char **a = reallocarray(*l, *n + 1, sizeof(char *));

        if (!a)
                return -ENOMEM;
        a[(*n)++] = s;
        *l = a;
        return 0;
}

static void trim_mounts_clear(TrimConfig *t) {
        for (size_t i = 0; i < t->n_mounts; i++)
                free(t->mounts[i]);
        free(t->mounts);
        t->mounts = NULL;
        t->n_mounts = 0;
        t->all = false;
}

/* "all", "none" (or nothing), or absolute paths separated by blanks. */
#define BLANKS " \t\n\v\f\r"

static void set_trim_mounts(Parser *p, const char *value) {
        TrimConfig *t = &p->config->trim;
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL;

        if (!copy) {
                p->oom = true;
                return;
        }

        trim_mounts_clear(t);
        /* Every blank libinih would strip separates: a mount point cannot end
         * in one, or config_print() could not write it back. */
        for (char *w = strtok_r(copy, BLANKS, &save); w; w = strtok_r(NULL, BLANKS, &save)) {
                bool dup = false;
                char *norm;

                if (strcasecmp(w, "all") == 0 || strcasecmp(w, "none") == 0) {
                        if (strcasecmp(value, w) != 0) {
                                trim_mounts_clear(t);
                                invalid_value(p, "mounts", value, -EINVAL,
                                              "expected all, none, or absolute mount points separated by blanks");
                                return;
                        }
                        t->all = strcasecmp(w, "all") == 0;
                        return;
                }
                if (normalize_absolute_path(w, &norm) < 0) {
                        trim_mounts_clear(t);
                        invalid_value(p, "mounts", value, -EINVAL,
                                      "expected all, none, or absolute mount points separated by blanks");
                        return;
                }
                for (size_t i = 0; i < t->n_mounts; i++)
                        dup = dup || strcmp(t->mounts[i], norm) == 0;
                if (dup) {
                        parser_warning(p, "mount point %s is listed twice in mounts", norm);
                        free(norm);
                        continue;
                }
                if (strv_push(&t->mounts, &t->n_mounts, norm) < 0) {
                        free(norm);
                        p->oom = true;
                        return;
                }
        }
}

/* Absolute paths separated by blanks; nothing for none. */
static void set_local_mounts(Parser *p, const char *value) {
        Config *c = p->config;
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL;

        if (!copy) {
                p->oom = true;
                return;
        }
        for (char *w = strtok_r(copy, BLANKS, &save); w; w = strtok_r(NULL, BLANKS, &save)) {
                char *norm;

                if (normalize_absolute_path(w, &norm) < 0) {
                        invalid_value(p, "localMounts", value, -EINVAL,
                                      "expected absolute mount points separated by blanks");
                        return;
                }
                if (strv_push(&c->local_mounts, &c->n_local_mounts, norm) < 0) {
                        free(norm);
                        p->oom = true;
                        return;
                }
        }
}

static void set_trim_chunk(Parser *p, const char *value) {
        uint64_t v;
        int r;

        r = parse_size(value, &v);
        if (r >= 0 && v < MIN_TRIM_CHUNK)
                r = -EINVAL;
        if (r < 0) {
                invalid_value(p, "chunk", value, r, r == -ERANGE ? NULL : "expected a size of at least 1M, such as 1G");
                return;
        }
        p->config->trim.chunk = v;
}

/* ---- keys ---- */

/* Returns the canonical name of key in the current section, or NULL when
 * the section has no such key. */
static const char *canonical_key(const Parser *p, const char *key) {
        const char *k = NULL;
        int rk;

        switch (p->kind) {
        case SECTION_DAEMON:
                return lookup_key(daemon_keys, ELEMENTSOF(daemon_keys), key);
        case SECTION_EXPERIMENTAL:
                return lookup_key(experimental_keys, ELEMENTSOF(experimental_keys), key);
        case SECTION_TRIM:
                return lookup_key(trim_keys, ELEMENTSOF(trim_keys), key);
        case SECTION_DISK:
                k = lookup_key(disk_keys, ELEMENTSOF(disk_keys), key);
                break;
        case SECTION_WATCH:
                k = lookup_key(watch_keys, ELEMENTSOF(watch_keys), key);
                break;
        case SECTION_RECLAIM:
                k = lookup_key(reclaim_only_keys, ELEMENTSOF(reclaim_only_keys), key);
                break;
        default:
                return NULL;
        }
        if (k)
                return k;
        rk = reclaim_key_from_string(key);
        return rk >= 0 ? reclaim_key_to_string(rk) : NULL;
}

static void apply_daemon_key(Parser *p, const char *key, const char *value) {
        Config *c = p->config;

        if (streq(key, "socket"))
                set_path(p, key, value, true, &c->socket_path);
        else if (streq(key, "stateDir"))
                set_path(p, key, value, false, &c->state_dir);
        else if (!group_name_valid(value))
                invalid_value(p, key, value, -EINVAL, "expected a group name, or nothing for none");
        else
                set_string(p, value, &c->admin_group);
}

static void apply_trim_key(Parser *p, const char *key, const char *value) {
        TrimConfig *t = &p->config->trim;

        if (streq(key, "mounts"))
                set_trim_mounts(p, value);
        else if (streq(key, "interval"))
                set_duration(p, key, value, &t->interval_usec);
        else if (streq(key, "chunk"))
                set_trim_chunk(p, value);
        else
                set_duration(p, key, value, &t->pause_usec);
}

static void apply_override(Parser *p, ReclaimSettings *s, unsigned *overridden, const char *key, const char *value) {
        ReclaimKey k = reclaim_key_from_string(key);

        set_reclaim(p, s, k, value);
        *overridden |= 1u << k;
}

static void set_format(Parser *p, const char *value, ReclaimSettings *s) {
        DiskFormat f = disk_format_from_string(value);

        if (f < 0)
                invalid_value(p, "format", value, -EINVAL, "expected auto, vhdx or raw");
        else
                s->format = f;
}

static void apply_disk_key(Parser *p, const char *key, const char *value) {
        DiskConfig *d = &p->config->disks[p->index];

        if (streq(key, "path"))
                set_path(p, key, value, true, &d->path);
        else if (streq(key, "format"))
                set_format(p, value, &d->reclaim);
        else if (streq(key, "sparse")) {
                set_boolean(p, key, value, &d->sparse);
                d->sparse_overridden = true;
        } else
                apply_override(p, &d->reclaim, &d->overridden, key, value);
}

static void apply_watch_key(Parser *p, const char *key, const char *value) {
        WatchConfig *w = &p->config->watches[p->index];

        if (streq(key, "dir"))
                set_path(p, key, value, false, &w->dir);
        else if (streq(key, "format"))
                set_format(p, value, &w->reclaim);
        else if (streq(key, "pattern")) {
                if (value[0] == '\0' || strchr(value, '/'))
                        invalid_value(p, key, value, -EINVAL, "expected a glob on file names, such as *.vhdx");
                else
                        set_string(p, value, &w->pattern);
        } else if (streq(key, "recursive"))
                set_boolean(p, key, value, &w->recursive);
        else if (streq(key, "sparse")) {
                set_boolean(p, key, value, &w->sparse);
                w->sparse_overridden = true;
        } else
                apply_override(p, &w->reclaim, &w->overridden, key, value);
}

static void apply_key(Parser *p, const char *key, const char *value) {
        switch (p->kind) {
        case SECTION_DAEMON:
                apply_daemon_key(p, key, value);
                break;
        case SECTION_EXPERIMENTAL:
                set_boolean(p, key, value, &p->config->sparse_vhd);
                break;
        case SECTION_RECLAIM:
                if (streq(key, "localMounts"))
                        set_local_mounts(p, value);
                else
                        set_reclaim(p, &p->config->reclaim, reclaim_key_from_string(key), value);
                break;
        case SECTION_TRIM:
                apply_trim_key(p, key, value);
                break;
        case SECTION_DISK:
                apply_disk_key(p, key, value);
                break;
        case SECTION_WATCH:
                apply_watch_key(p, key, value);
                break;
        default:
                break;
        }
}

static const SeenKey *find_seen(const Parser *p, SectionKind kind, size_t index, const char *key) {
        for (size_t i = 0; i < p->n_seen; i++)
                if (p->seen[i].kind == kind && p->seen[i].index == index && p->seen[i].key == key)
                        return &p->seen[i];
        return NULL;
}

static void remember_key(Parser *p, const char *key) {
        SeenKey *a = reallocarray(p->seen, p->n_seen + 1, sizeof(SeenKey));

        if (!a) {
                p->oom = true;
                return;
        }
        p->seen = a;
        p->seen[p->n_seen++] = (SeenKey) {
                .kind = p->kind,
                .index = p->index,
                .key = key,
                .line = p->line,
        };
}

/* For a key of [disk] or [watch] sections given in another section (say
 * recursive= in [reclaim], which only a [watch] has): where it belongs. */
static const char *key_elsewhere_hint(const Parser *p, const char *name) {
        bool disk = lookup_key(disk_keys, ELEMENTSOF(disk_keys), name);
        bool watch = lookup_key(watch_keys, ELEMENTSOF(watch_keys), name);

        if (p->kind == SECTION_WSL || p->kind == SECTION_EXPERIMENTAL || p->kind == SECTION_DAEMON)
                return "";
        if (disk && watch)
                return ": a key of [disk.NAME] and [watch.NAME] sections";
        if (watch)
                return ": a key of [watch.NAME] sections";
        if (disk)
                return ": a key of [disk.NAME] sections";
        return "";
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        Parser *p = user;
        const SeenKey *seen;
        const char *key;

        if (p->long_value)
                value = p->long_value;
        if (p->kind == SECTION_IGNORED)
                return 1;
        if (p->kind == SECTION_NONE) {
                parser_warning(p, "key '%s' outside of any section, ignored", name);
                return 1;
        }

        key = canonical_key(p, name);
        if (!key) {
                bool wsl = p->kind == SECTION_WSL || p->kind == SECTION_EXPERIMENTAL;

                if (!wsl || !lookup_key(wsl_keys, ELEMENTSOF(wsl_keys), name))
                        parser_warning(p, "unknown key '%s' in %s, ignored%s", name, p->section,
                                       key_elsewhere_hint(p, name));
                return 1;
        }

        seen = find_seen(p, p->kind, p->index, key);
        if (seen) {
                parser_warning(p, "duplicate key '%s' in %s, ignored: the first one (line %u) wins",
                               key, p->section, seen->line);
                return 1;
        }
        remember_key(p, key);
        apply_key(p, key, value);
        return 1;
}

/* ---- sections ---- */

static bool section_name_valid(const char *s) {
        if (s[0] == '\0' || streq(s, ".") || streq(s, ".."))
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("-_.", *s)))
                        return false;
        return true;
}

static int add_disk(Parser *p, const char *name) {
        Config *c = p->config;
        DiskConfig *a;

        a = reallocarray(c->disks, c->n_disks + 1, sizeof(DiskConfig));
        if (!a)
                return -ENOMEM;
        c->disks = a;
        a[c->n_disks] = (DiskConfig) {
                .name = strdup(name),
                .line = p->line,
        };
        if (!a[c->n_disks].name)
                return -ENOMEM;
        reclaim_settings_default(&a[c->n_disks].reclaim);
        p->index = c->n_disks++;
        return 0;
}

static int add_watch(Parser *p, const char *name) {
        Config *c = p->config;
        WatchConfig *a;

        a = reallocarray(c->watches, c->n_watches + 1, sizeof(WatchConfig));
        if (!a)
                return -ENOMEM;
        c->watches = a;
        a[c->n_watches] = (WatchConfig) {
                .name = strdup(name),
                .pattern = strdup(DEFAULT_WATCH_PATTERN),
                .line = p->line,
        };
        if (!a[c->n_watches].name || !a[c->n_watches].pattern)
                return -ENOMEM;
        reclaim_settings_default(&a[c->n_watches].reclaim);
        p->index = c->n_watches++;
        return 0;
}

/* [disk.NAME] or [watch.NAME]: a new, uniquely named section. */
static SectionKind begin_named_section(Parser *p, SectionKind kind, const char *prefix, const char *name) {
        unsigned first = 0;
        int r;

        if (!section_name_valid(name)) {
                parser_error(p, "invalid section name [%s.%s]: the name after '%s.' must be "
                             "letters, digits, '-', '_' or '.'", prefix, name, prefix);
                return SECTION_IGNORED;
        }

        if (kind == SECTION_DISK) {
                const DiskConfig *d = config_find_disk(p->config, name);
                first = d ? d->line : 0;
        } else {
                const WatchConfig *w = config_find_watch(p->config, name);
                first = w ? w->line : 0;
        }
        if (first > 0) {
                parser_error(p, "duplicate section [%s.%s], first defined at line %u", prefix, name, first);
                return SECTION_IGNORED;
        }

        r = kind == SECTION_DISK ? add_disk(p, name) : add_watch(p, name);
        if (r < 0) {
                p->oom = true;
                return SECTION_IGNORED;
        }
        return kind;
}

static bool has_prefix_ci(const char *s, const char *prefix, const char **rest) {
        size_t l = strlen(prefix);

        if (strncasecmp(s, prefix, l) != 0)
                return false;
        *rest = s + l;
        return true;
}

static SectionKind classify_section(Parser *p, const char *name) {
        static const struct {
                const char *name;
                SectionKind kind;
        } fixed[] = {
                { "daemon",       SECTION_DAEMON },
                { "experimental", SECTION_EXPERIMENTAL },
                { "reclaim",      SECTION_RECLAIM },
                { "trim",         SECTION_TRIM },
                { "wsl2",         SECTION_WSL },
                { "general",      SECTION_WSL },
        };
        const char *rest;

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                if (strcasecmp(name, fixed[i].name) == 0)
                        return fixed[i].kind;

        if (has_prefix_ci(name, "disk.", &rest))
                return begin_named_section(p, SECTION_DISK, "disk", rest);
        if (has_prefix_ci(name, "watch.", &rest))
                return begin_named_section(p, SECTION_WATCH, "watch", rest);
        if (strcasecmp(name, "disk") == 0 || strcasecmp(name, "watch") == 0) {
                parser_error(p, "section [%s] needs a name: [%s.NAME]", name, name);
                return SECTION_IGNORED;
        }

        parser_warning(p, "unknown section [%s], its keys are ignored", name);
        return SECTION_IGNORED;
}

static void begin_section(Parser *p, const char *name) {
        char *shown;

        p->index = 0;
        p->kind = classify_section(p, name);

        /* Messages name the section the way it is printed. */
        if (p->kind == SECTION_DISK)
                name = p->config->disks[p->index].name;
        else if (p->kind == SECTION_WATCH)
                name = p->config->watches[p->index].name;
        if (asprintf(&shown, "[%s%s]",
                     p->kind == SECTION_DISK ? "disk." : p->kind == SECTION_WATCH ? "watch." : "",
                     name) < 0) {
                p->oom = true;
                return;
        }
        free(p->section);
        p->section = shown;
}

/* ---- lines ---- */

/* '#' and ';' start a comment at the start of a line or after a blank. */
static void strip_comment(char *s) {
        for (char *c = s; *c; c++)
                if ((*c == '#' || *c == ';') && (c == s || *(c - 1) == ' ' || *(c - 1) == '\t')) {
                        *c = '\0';
                        return;
                }
}

static char *strip_blanks(char *s) {
        size_t n;

        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
                s++;
        n = strlen(s);
        while (n > 0 && strchr(" \t\r\n", s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* Returns false for a line that is neither blank, nor a header, nor
 * key=value. A header starts its section here, so keys that follow are
 * attributed to it even when libinih would disagree. */
static bool check_line(Parser *p, char *s) {
        char *eq;

        if (s[0] == '\0')
                return true;

        if (s[0] == '[') {
                size_t n = strlen(s);
                _cleanup_free_ char *name = NULL;

                if (n < 2 || s[n - 1] != ']' || strpbrk(s + 1, "[]") != s + n - 1) {
                        parser_error(p, "invalid section header, expected [NAME]");
                        p->kind = SECTION_IGNORED;
                        return false;
                }
                name = strndup(s + 1, n - 2);
                if (!name) {
                        p->oom = true;
                        return false;
                }
                begin_section(p, strip_blanks(name));
                return true;
        }

        eq = strchr(s, '=');
        if (!eq || eq == s || memchr(s, ':', (size_t) (eq - s))) {
                parser_error(p, "invalid line, expected [section] or key=value");
                return false;
        }
        return true;
}

/* Returns how much of the checked line s libinih gets. Its line buffer is
 * short (200 bytes), so of a longer key=value line it gets "key=" and the
 * handler takes the value from here; longer headers or keys are errors. */
static size_t fit_line(Parser *p, char *s, size_t max) {
        size_t len = strlen(s);
        char *eq;

        if (len <= max)
                return len;

        eq = s[0] == '[' ? NULL : strchr(s, '=');
        if (!eq || (size_t) (eq - s) + 1 > max) {
                parser_error(p, "line too long (a header or key has at most %zu characters)", max);
                if (s[0] == '[')
                        p->kind = SECTION_IGNORED;
                return 0;
        }
        p->long_value = strip_blanks(eq + 1);
        return (size_t) (eq - s) + 1;
}

static char *reader(char *str, int num, void *stream) {
        Parser *p = stream;
        size_t len = 0;
        ssize_t n;
        char *s;

        if (num < 3)
                return NULL;

        errno = 0;
        n = getline(&p->buf, &p->buf_size, p->f);
        if (n < 0) {
                if (ferror(p->f))
                        p->read_error = errno > 0 ? errno : EIO;
                return NULL;
        }
        p->line++;
        p->long_value = NULL;

        s = p->buf;
        if (p->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
                s += 3;
        strip_comment(s);
        s = strip_blanks(s);

        /* A header too long for libinih is reported, and starts no section. */
        if (s[0] == '[' && strlen(s) > (size_t) num - 2)
                len = fit_line(p, s, (size_t) num - 2);
        else if (check_line(p, s))
                len = fit_line(p, s, (size_t) num - 2);

        /* libinih sees only checked lines, so it counts lines as we do. */
        snprintf(str, (size_t) num, "%.*s\n", (int) len, s);
        return str;
}

/* ---- the whole file ---- */

static unsigned key_line(const Parser *p, SectionKind kind, size_t index, const char *key, unsigned fallback) {
        for (size_t i = 0; i < p->n_seen; i++)
                if (p->seen[i].kind == kind && p->seen[i].index == index && streq(p->seen[i].key, key))
                        return p->seen[i].line;
        return fallback;
}

static void check_disks(Parser *p) {
        Config *c = p->config;

        for (size_t i = 0; i < c->n_disks; i++) {
                DiskConfig *d = &c->disks[i];

                if (!d->path) {
                        /* An invalid path= was reported where it is. */
                        p->line = d->line;
                        if (key_line(p, SECTION_DISK, i, "path", 0) == 0)
                                parser_error(p, "[disk.%s] has no path=", d->name);
                        continue;
                }
                for (size_t j = 0; j < i; j++)
                        if (c->disks[j].path && streq(c->disks[j].path, d->path)) {
                                p->line = key_line(p, SECTION_DISK, i, "path", d->line);
                                parser_error(p, "[disk.%s] has the same path as [disk.%s] (line %u): %s",
                                             d->name, c->disks[j].name,
                                             key_line(p, SECTION_DISK, j, "path", c->disks[j].line), d->path);
                                break;
                        }
        }
}

/* A [disk] in a watched folder, with a name the pattern matches: the
 * daemon manages the file as the [disk] only (watch.c, which also finds
 * other spellings of the same file); said here so --check-config tells. */
static void check_disk_in_watch(Parser *p, const WatchConfig *w, size_t wi) {
        Config *c = p->config;
        size_t l = streq(w->dir, "/") ? 0 : strlen(w->dir);

        for (size_t i = 0; i < c->n_disks; i++) {
                const DiskConfig *d = &c->disks[i];
                const char *rel, *name;

                if (!d->path || strncmp(d->path, w->dir, l) != 0 || d->path[l] != '/')
                        continue;
                rel = d->path + l + 1;
                name = strrchr(rel, '/');
                /* In a subfolder: only a recursive watch goes there. */
                if (name && !w->recursive)
                        continue;
                if (!watch_pattern_match(w->pattern, name ? name + 1 : rel))
                        continue;
                p->line = key_line(p, SECTION_DISK, i, "path", d->line);
                parser_warning(p, "[disk.%s] names a file that [watch.%s] (line %u) matches: it is managed as "
                               "[disk.%s] only", d->name, w->name, key_line(p, SECTION_WATCH, wi, "dir", w->line),
                               d->name);
        }
}

static void check_watches(Parser *p) {
        Config *c = p->config;

        for (size_t i = 0; i < c->n_watches; i++) {
                if (!c->watches[i].dir) {
                        if (key_line(p, SECTION_WATCH, i, "dir", 0) == 0) {
                                p->line = c->watches[i].line;
                                parser_error(p, "[watch.%s] has no dir=", c->watches[i].name);
                        }
                        continue;
                }
                check_disk_in_watch(p, &c->watches[i], i);
        }
}

/* Whatever a disk or watch does not set itself comes from [reclaim] and
 * [experimental], wherever in the file those are. */
static void resolve(Config *c) {
        for (size_t i = 0; i < c->n_disks; i++) {
                DiskConfig *d = &c->disks[i];

                for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                        if (!(d->overridden & (1u << k)))
                                reclaim_settings_copy_key(&d->reclaim, &c->reclaim, k);
                if (!d->sparse_overridden)
                        d->sparse = c->sparse_vhd;
        }
        for (size_t i = 0; i < c->n_watches; i++) {
                WatchConfig *w = &c->watches[i];

                for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                        if (!(w->overridden & (1u << k)))
                                reclaim_settings_copy_key(&w->reclaim, &c->reclaim, k);
                if (!w->sparse_overridden)
                        w->sparse = c->sparse_vhd;
        }
}

/* Stable, so the checks made after parsing follow the line they are about. */
static void sort_messages(ConfigMessages *m, size_t from) {
        for (size_t i = from + 1; i < m->n_items; i++) {
                ConfigMessage x = m->items[i];
                size_t j = i;

                for (; j > from && m->items[j - 1].line > x.line; j--)
                        m->items[j] = m->items[j - 1];
                m->items[j] = x;
        }
}

static bool has_error_at(const ConfigMessages *m, unsigned line) {
        for (size_t i = 0; i < m->n_items; i++)
                if (m->items[i].level == CONFIG_MESSAGE_ERROR && m->items[i].line == line)
                        return true;
        return false;
}

static bool has_error_since(const ConfigMessages *m, size_t first) {
        for (size_t i = first; i < m->n_items; i++)
                if (m->items[i].level == CONFIG_MESSAGE_ERROR)
                        return true;
        return false;
}

static int parse_file(Parser *p) {
        int r;

        r = ini_parse_stream(reader, p, handler, p);
        if (r == -2 || p->oom)
                return -ENOMEM;
        if (p->read_error > 0) {
                p->line = 0;
                parser_error(p, "cannot read: %s", strerror(p->read_error));
                return -p->read_error;
        }
        if (r > 0 && !has_error_at(p->msgs, (unsigned) r)) {
                /* reader() passes only well-formed lines; keep libinih's word anyway. */
                p->line = (unsigned) r;
                parser_error(p, "invalid line");
        }

        check_disks(p);
        check_watches(p);
        resolve(p->config);
        return p->oom ? -ENOMEM : 0;
}

/* Notepad on Windows saves "Unicode" as UTF-16: every other byte of an
 * ASCII line is then zero, and libinih would call line 1 invalid. Say what
 * the file is instead. Returns the byte order ("LE"/"BE") or NULL. */
static const char *utf16_byte_order(FILE *f) {
        unsigned char b[64];
        size_t n, zeros_even = 0, zeros_odd = 0;

        n = fread(b, 1, sizeof b, f);
        rewind(f);
        if (n >= 2 && b[0] == 0xff && b[1] == 0xfe)
                return "LE";
        if (n >= 2 && b[0] == 0xfe && b[1] == 0xff)
                return "BE";
        /* No byte order mark: ASCII text has a zero in every other byte. */
        for (size_t i = 0; i + 1 < n; i += 2) {
                zeros_even += b[i] == 0 && b[i + 1] != 0;
                zeros_odd += b[i] != 0 && b[i + 1] == 0;
        }
        if (n >= 4 && zeros_odd == n / 2)
                return "LE";
        if (n >= 4 && zeros_even == n / 2)
                return "BE";
        return NULL;
}

int config_load(const char *path, Config **ret, ConfigMessages *msgs) {
        _cleanup_config_ Config *c = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        ConfigMessages local = {}, *m = msgs ?: &local;
        size_t first = m->n_items;
        const char *utf16;
        Parser p;
        int r;

        f = fopen(path, "re");
        if (!f) {
                r = negative_errno();
                config_messages_add(m, CONFIG_MESSAGE_ERROR, path, 0, "cannot open: %s", strerror(-r));
                config_messages_done(&local);
                return r;
        }
        utf16 = utf16_byte_order(f);
        if (utf16) {
                config_messages_add(m, CONFIG_MESSAGE_ERROR, path, 1,
                                    "the file is UTF-16 (%s), not UTF-8: save it as UTF-8 (with or without a byte order mark)",
                                    utf16);
                config_messages_done(&local);
                return -EINVAL;
        }

        r = config_new_default(&c);
        if (r < 0)
                return r;

        p = (Parser) {
                .path = path,
                .f = f,
                .config = c,
                .msgs = m,
        };
        r = parse_file(&p);
        if (r >= 0 && has_error_since(m, first))
                r = -EINVAL;

        sort_messages(m, first);
        free(p.buf);
        free(p.section);
        free(p.seen);
        config_messages_done(&local);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}
