/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "macro.h"

#define TiB (UINT64_C(1024) * GiB)

/* ---- sizes, durations, booleans ---- */

/* Reads the decimal digits at *p; -ERANGE when they do not fit. */
static int parse_digits(const char **p, uint64_t *ret) {
        const char *s = *p;
        uint64_t n = 0;

        if (*s < '0' || *s > '9')
                return -EINVAL;
        for (; *s >= '0' && *s <= '9'; s++) {
                unsigned d = (unsigned) (*s - '0');

                if (n > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                n = n * 10 + d;
        }
        *p = s;
        *ret = n;
        return 0;
}

static const char *skip_blanks(const char *s) {
        while (*s == ' ' || *s == '\t')
                s++;
        return s;
}

static int multiply(uint64_t n, uint64_t factor, uint64_t *ret) {
        if (factor != 0 && n > UINT64_MAX / factor)
                return -ERANGE;
        *ret = n * factor;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } suffixes[] = {
                { "",   1 },   { "B",  1 },
                { "K",  KiB }, { "KB", KiB },
                { "M",  MiB }, { "MB", MiB },
                { "G",  GiB }, { "GB", GiB },
                { "T",  TiB }, { "TB", TiB },
        };
        uint64_t n;
        int r;

        r = parse_digits(&s, &n);
        if (r < 0)
                return r;
        s = skip_blanks(s);

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
                if (strcasecmp(s, suffixes[i].suffix) == 0)
                        return multiply(n, suffixes[i].factor, ret);
        return -EINVAL;
}

int parse_min_hole(const char *s, uint64_t *ret) {
        uint64_t v;
        int r;

        r = parse_size(s, &v);
        if (r < 0)
                return r;
        if (v < MIN_HOLE_MIN || (v & (v - 1)) != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

static const struct {
        const char *unit;
        uint64_t usec;
} duration_units[] = {  /* largest first: format_duration() relies on it */
        { "w",  USEC_PER_WEEK },
        { "d",  USEC_PER_DAY },
        { "h",  USEC_PER_HOUR },
        { "m",  USEC_PER_MINUTE },
        { "s",  USEC_PER_SEC },
        { "ms", USEC_PER_MSEC },
        { "us", 1 },
};

static int duration_unit_usec(const char *unit, size_t len, uint64_t *ret) {
        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                if (strlen(duration_units[i].unit) == len &&
                    strncasecmp(unit, duration_units[i].unit, len) == 0) {
                        *ret = duration_units[i].usec;
                        return 0;
                }
        return -EINVAL;
}

int parse_duration_usec(const char *s, uint64_t *ret) {
        uint64_t total = 0, n, factor, part;
        const char *p = s;
        int r;

        /* A bare number is seconds, as in .wslconfig-era tools; inside a
         * combination every part needs its unit ("1h30" is ambiguous). */
        r = parse_digits(&p, &n);
        if (r < 0)
                return r;
        if (*p == '\0')
                return multiply(n, USEC_PER_SEC, ret);

        p = s;
        for (;;) {
                const char *unit;

                r = parse_digits(&p, &n);
                if (r < 0)
                        return r;
                p = skip_blanks(p);
                unit = p;
                while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
                        p++;
                r = duration_unit_usec(unit, (size_t) (p - unit), &factor);
                if (r < 0)
                        return r;
                r = multiply(n, factor, &part);
                if (r < 0)
                        return r;
                if (total > UINT64_MAX - part)
                        return -ERANGE;
                total += part;

                p = skip_blanks(p);
                if (*p == '\0')
                        break;
        }

        *ret = total;
        return 0;
}

bool watch_pattern_match(const char *pattern, const char *name) {
        return fnmatch(pattern, name, FNM_PERIOD | FNM_CASEFOLD) == 0;
}

int parse_boolean(const char *s, bool *ret) {
        if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0)
                *ret = true;
        else if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0)
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

const char *format_size_exact(char buf[static FORMAT_SIZE_MAX], uint64_t bytes) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } units[] = {
                { "T", TiB }, { "G", GiB }, { "M", MiB }, { "K", KiB },
        };

        if (bytes == 0) {
                snprintf(buf, FORMAT_SIZE_MAX, "0");
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (bytes % units[i].factor == 0) {
                        snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 "%s", bytes / units[i].factor, units[i].suffix);
                        return buf;
                }
        snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 "B", bytes);
        return buf;
}

const char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec) {
        if (usec == 0) {
                snprintf(buf, FORMAT_DURATION_MAX, "0");
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                if (usec % duration_units[i].usec == 0) {
                        snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "%s",
                                 usec / duration_units[i].usec, duration_units[i].unit);
                        break;
                }
        return buf;
}

/* ---- messages ---- */

int config_messages_add(ConfigMessages *m, ConfigMessageLevel level, const char *path,
                        unsigned line, const char *format, ...) {
        _cleanup_free_ char *body = NULL;
        ConfigMessage *items;
        char *text;
        va_list ap;
        int r;

        if (!m)
                return 0;

        va_start(ap, format);
        r = vasprintf(&body, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;

        if (line > 0)
                r = asprintf(&text, "%s:%u: %s: %s", path, line,
                             level == CONFIG_MESSAGE_ERROR ? "error" : "warning", body);
        else
                r = asprintf(&text, "%s: %s: %s", path,
                             level == CONFIG_MESSAGE_ERROR ? "error" : "warning", body);
        if (r < 0)
                return -ENOMEM;

        items = reallocarray(m->items, m->n_items + 1, sizeof(ConfigMessage));
        if (!items) {
                free(text);
                return -ENOMEM;
        }
        m->items = items;
        m->items[m->n_items++] = (ConfigMessage) {
                .level = level,
                .line = line,
                .text = text,
        };
        return 0;
}

void config_messages_done(ConfigMessages *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_items; i++)
                free(m->items[i].text);
        free(m->items);
        *m = (ConfigMessages) {};
}

size_t config_messages_count(const ConfigMessages *m, ConfigMessageLevel level) {
        size_t n = 0;

        for (size_t i = 0; m && i < m->n_items; i++)
                if (m->items[i].level == level)
                        n++;
        return n;
}

int config_messages_print(const ConfigMessages *m, FILE *f) {
        for (size_t i = 0; m && i < m->n_items; i++)
                fprintf(f, "%s\n", m->items[i].text);
        return fflush(f) == 0 ? 0 : negative_errno();
}

/* ---- [reclaim] keys ---- */

static const char *const discard_mode_table[_DISCARD_MODE_MAX] = {
        [DISCARD_NONE] = "none",
        [DISCARD_SAFE] = "safe",
        [DISCARD_FREE] = "free",
};

const char *discard_mode_to_string(DiscardMode m) {
        if (m < 0 || m >= _DISCARD_MODE_MAX)
                return NULL;
        return discard_mode_table[m];
}

DiscardMode discard_mode_from_string(const char *s) {
        for (DiscardMode m = 0; m < _DISCARD_MODE_MAX; m++)
                if (strcasecmp(s, discard_mode_table[m]) == 0)
                        return m;
        return _DISCARD_MODE_INVALID;
}

static const char *const disk_format_table[_DISK_FORMAT_MAX] = {
        [DISK_FORMAT_AUTO] = "auto",
        [DISK_FORMAT_VHDX] = "vhdx",
        [DISK_FORMAT_RAW] = "raw",
};

const char *disk_format_to_string(DiskFormat f) {
        if (f < 0 || f >= _DISK_FORMAT_MAX)
                return NULL;
        return disk_format_table[f];
}

DiskFormat disk_format_from_string(const char *s) {
        for (DiskFormat f = 0; f < _DISK_FORMAT_MAX; f++)
                if (strcasecmp(s, disk_format_table[f]) == 0)
                        return f;
        return _DISK_FORMAT_INVALID;
}

typedef enum ValueType {
        VALUE_DURATION,
        VALUE_SIZE,
        VALUE_DISCARD,
        VALUE_UNSIGNED,
        VALUE_BOOLEAN,
} ValueType;

static const struct {
        const char *name;
        ValueType type;
        size_t offset;
} reclaim_keys[_RECLAIM_KEY_MAX] = {
        [RECLAIM_INTERVAL]         = { "interval",        VALUE_DURATION, offsetof(ReclaimSettings, interval_usec) },
        [RECLAIM_RANDOMIZED_DELAY] = { "randomizedDelay", VALUE_DURATION, offsetof(ReclaimSettings, randomized_delay_usec) },
        [RECLAIM_IDLE_DELAY]       = { "idleDelay",       VALUE_DURATION, offsetof(ReclaimSettings, idle_delay_usec) },
        [RECLAIM_DISCARD]          = { "discard",         VALUE_DISCARD,  offsetof(ReclaimSettings, discard) },
        [RECLAIM_MIN_RECLAIM]      = { "minReclaim",      VALUE_SIZE,     offsetof(ReclaimSettings, min_reclaim) },
        [RECLAIM_MIN_HOLE]         = { "minHole",         VALUE_SIZE,     offsetof(ReclaimSettings, min_hole) },
        [RECLAIM_IO_LIMIT]         = { "ioLimit",         VALUE_SIZE,     offsetof(ReclaimSettings, io_limit) },
        [RECLAIM_MAX_PASS_TIME]    = { "maxPassTime",     VALUE_DURATION, offsetof(ReclaimSettings, max_pass_time_usec) },
        [RECLAIM_MAX_PARALLEL]     = { "maxParallel",     VALUE_UNSIGNED, offsetof(ReclaimSettings, max_parallel) },
        [RECLAIM_COMPACT]          = { "compact",         VALUE_BOOLEAN,  offsetof(ReclaimSettings, compact) },
};

void reclaim_settings_default(ReclaimSettings *s) {
        *s = (ReclaimSettings) {
                .interval_usec = USEC_PER_DAY,
                .randomized_delay_usec = USEC_PER_HOUR,
                .idle_delay_usec = 10 * USEC_PER_MINUTE,
                .discard = DISCARD_FREE,
                .min_reclaim = 64 * MiB,
                .min_hole = 64 * KiB,
                .io_limit = 200 * MiB,
                .max_pass_time_usec = 10 * USEC_PER_MINUTE,
                .max_parallel = 1,
        };
}

void trim_config_default(TrimConfig *t) {
        *t = (TrimConfig) {
                .interval_usec = USEC_PER_WEEK,
                .chunk = GiB,
                .pause_usec = 100 * USEC_PER_MSEC,
        };
}

const char *reclaim_key_to_string(ReclaimKey k) {
        if (k < 0 || k >= _RECLAIM_KEY_MAX)
                return NULL;
        return reclaim_keys[k].name;
}

int reclaim_key_from_string(const char *s) {
        for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                if (strcasecmp(s, reclaim_keys[k].name) == 0)
                        return k;
        return -1;
}

static uint64_t *u64_field(ReclaimSettings *s, ReclaimKey k) {
        return (uint64_t *) ((uint8_t *) s + reclaim_keys[k].offset);
}

static const uint64_t *u64_field_const(const ReclaimSettings *s, ReclaimKey k) {
        return (const uint64_t *) ((const uint8_t *) s + reclaim_keys[k].offset);
}

static int parse_max_parallel(const char *value, unsigned *ret) {
        const char *p = value;
        uint64_t n;
        int r;

        r = parse_digits(&p, &n);
        if (r < 0)
                return r;
        if (*p != '\0')
                return -EINVAL;
        if (n < 1 || n > MAX_PARALLEL_MAX)
                return -ERANGE;
        *ret = (unsigned) n;
        return 0;
}

int reclaim_settings_set(ReclaimSettings *s, ReclaimKey k, const char *value, const char **reason) {
        const char *why = NULL;
        uint64_t v;
        int r;

        switch (k) {
        case RECLAIM_INTERVAL:
        case RECLAIM_RANDOMIZED_DELAY:
        case RECLAIM_IDLE_DELAY:
        case RECLAIM_MAX_PASS_TIME:
                why = "expected a duration such as 100ms, 90s, 10m, 1h30m, 1d, 1w";
                r = parse_duration_usec(value, &v);
                if (r >= 0)
                        *u64_field(s, k) = v;
                break;

        case RECLAIM_MIN_RECLAIM:
        case RECLAIM_IO_LIMIT:
                why = "expected a size such as 0, 512K, 64MB, 1G";
                r = parse_size(value, &v);
                if (r >= 0)
                        *u64_field(s, k) = v;
                break;

        case RECLAIM_MIN_HOLE:
                why = "expected " MIN_HOLE_EXPECTED;
                r = parse_min_hole(value, &v);
                if (r >= 0)
                        s->min_hole = v;
                break;

        case RECLAIM_DISCARD: {
                DiscardMode m = discard_mode_from_string(value);

                why = "expected none, safe or free";
                r = m < 0 ? -EINVAL : 0;
                if (r >= 0)
                        s->discard = m;
                break;
        }

        case RECLAIM_MAX_PARALLEL:
                why = "expected a whole number from 1 to 64";
                r = parse_max_parallel(value, &s->max_parallel);
                break;

        case RECLAIM_COMPACT:
                why = "expected true, false, 1 or 0";
                r = parse_boolean(value, &s->compact);
                break;

        default:
                r = -EINVAL;
        }

        if (r == -ERANGE && k != RECLAIM_MAX_PARALLEL)
                why = "too large";
        if (r < 0 && reason)
                *reason = why;
        return r;
}

const char *reclaim_settings_format(const ReclaimSettings *s, ReclaimKey k, char buf[static FORMAT_SETTING_MAX]) {
        switch (reclaim_keys[k].type) {
        case VALUE_DURATION:
                return format_duration(buf, *u64_field_const(s, k));
        case VALUE_SIZE:
                return format_size_exact(buf, *u64_field_const(s, k));
        case VALUE_DISCARD:
                snprintf(buf, FORMAT_SETTING_MAX, "%s", discard_mode_to_string(s->discard));
                return buf;
        case VALUE_UNSIGNED:
                snprintf(buf, FORMAT_SETTING_MAX, "%u", s->max_parallel);
                return buf;
        case VALUE_BOOLEAN:
                snprintf(buf, FORMAT_SETTING_MAX, "%s", s->compact ? "true" : "false");
                return buf;
        }
        return NULL;
}

void reclaim_settings_copy_key(ReclaimSettings *dst, const ReclaimSettings *src, ReclaimKey k) {
        switch (reclaim_keys[k].type) {
        case VALUE_DURATION:
        case VALUE_SIZE:
                *u64_field(dst, k) = *u64_field_const(src, k);
                break;
        case VALUE_DISCARD:
                dst->discard = src->discard;
                break;
        case VALUE_UNSIGNED:
                dst->max_parallel = src->max_parallel;
                break;
        case VALUE_BOOLEAN:
                dst->compact = src->compact;
                break;
        }
}

bool reclaim_settings_equal_key(const ReclaimSettings *a, const ReclaimSettings *b, ReclaimKey k) {
        switch (reclaim_keys[k].type) {
        case VALUE_DURATION:
        case VALUE_SIZE:
                return *u64_field_const(a, k) == *u64_field_const(b, k);
        case VALUE_DISCARD:
                return a->discard == b->discard;
        case VALUE_UNSIGNED:
                return a->max_parallel == b->max_parallel;
        case VALUE_BOOLEAN:
                return a->compact == b->compact;
        }
        return false;
}

bool reclaim_settings_equal(const ReclaimSettings *a, const ReclaimSettings *b) {
        for (ReclaimKey k = 0; k < _RECLAIM_KEY_MAX; k++)
                if (!reclaim_settings_equal_key(a, b, k))
                        return false;
        return a->format == b->format;
}

/* ---- Config ---- */

int config_new_default(Config **ret) {
        _cleanup_config_ Config *c = NULL;

        c = calloc(1, sizeof(Config));
        if (!c)
                return -ENOMEM;

        c->socket_path = strdup(DEFAULT_SOCKET_PATH);
        c->state_dir = strdup(DEFAULT_STATE_DIR);
        c->admin_group = strdup(DEFAULT_ADMIN_GROUP);
        if (!c->socket_path || !c->state_dir || !c->admin_group)
                return -ENOMEM;
        c->sparse_vhd = true;
        reclaim_settings_default(&c->reclaim);
        trim_config_default(&c->trim);

        *ret = TAKE_PTR(c);
        return 0;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;

        free(c->socket_path);
        free(c->state_dir);
        free(c->admin_group);
        for (size_t i = 0; i < c->n_disks; i++) {
                free(c->disks[i].name);
                free(c->disks[i].path);
        }
        free(c->disks);
        for (size_t i = 0; i < c->n_watches; i++) {
                free(c->watches[i].name);
                free(c->watches[i].dir);
                free(c->watches[i].pattern);
        }
        free(c->watches);
        for (size_t i = 0; i < c->trim.n_mounts; i++)
                free(c->trim.mounts[i]);
        free(c->trim.mounts);
        for (size_t i = 0; i < c->n_local_mounts; i++)
                free(c->local_mounts[i]);
        free(c->local_mounts);
        free(c);
        return NULL;
}

static bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static bool disk_equal(const DiskConfig *a, const DiskConfig *b) {
        return streq_ptr(a->name, b->name) &&
                streq_ptr(a->path, b->path) &&
                a->sparse == b->sparse &&
                a->sparse_overridden == b->sparse_overridden &&
                a->overridden == b->overridden &&
                reclaim_settings_equal(&a->reclaim, &b->reclaim);
}

static bool watch_equal(const WatchConfig *a, const WatchConfig *b) {
        return streq_ptr(a->name, b->name) &&
                streq_ptr(a->dir, b->dir) &&
                streq_ptr(a->pattern, b->pattern) &&
                a->recursive == b->recursive &&
                a->sparse == b->sparse &&
                a->sparse_overridden == b->sparse_overridden &&
                a->overridden == b->overridden &&
                reclaim_settings_equal(&a->reclaim, &b->reclaim);
}

static bool local_mounts_equal(const Config *a, const Config *b) {
        if (a->n_local_mounts != b->n_local_mounts)
                return false;
        for (size_t i = 0; i < a->n_local_mounts; i++)
                if (!streq_ptr(a->local_mounts[i], b->local_mounts[i]))
                        return false;
        return true;
}

static bool trim_equal(const TrimConfig *a, const TrimConfig *b) {
        if (a->all != b->all || a->n_mounts != b->n_mounts ||
            a->interval_usec != b->interval_usec || a->chunk != b->chunk ||
            a->pause_usec != b->pause_usec)
                return false;
        for (size_t i = 0; i < a->n_mounts; i++)
                if (!streq_ptr(a->mounts[i], b->mounts[i]))
                        return false;
        return true;
}

bool config_equal(const Config *a, const Config *b) {
        if (!a || !b)
                return a == b;

        if (!streq_ptr(a->socket_path, b->socket_path) ||
            !streq_ptr(a->state_dir, b->state_dir) ||
            !streq_ptr(a->admin_group, b->admin_group) ||
            a->sparse_vhd != b->sparse_vhd ||
            !reclaim_settings_equal(&a->reclaim, &b->reclaim) ||
            !trim_equal(&a->trim, &b->trim) ||
            !local_mounts_equal(a, b) ||
            a->n_disks != b->n_disks ||
            a->n_watches != b->n_watches)
                return false;

        for (size_t i = 0; i < a->n_disks; i++)
                if (!disk_equal(&a->disks[i], &b->disks[i]))
                        return false;
        for (size_t i = 0; i < a->n_watches; i++)
                if (!watch_equal(&a->watches[i], &b->watches[i]))
                        return false;
        return true;
}

const DiskConfig *config_find_disk(const Config *c, const char *name) {
        for (size_t i = 0; c && i < c->n_disks; i++)
                if (strcasecmp(c->disks[i].name, name) == 0)
                        return &c->disks[i];
        return NULL;
}

const WatchConfig *config_find_watch(const Config *c, const char *name) {
        for (size_t i = 0; c && i < c->n_watches; i++)
                if (strcasecmp(c->watches[i].name, name) == 0)
                        return &c->watches[i];
        return NULL;
}
