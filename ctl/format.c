/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "format.h"
#include "json.h"
#include "macro.h"
#include "timespan.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define SEC_PER_MINUTE UINT64_C(60)
#define SEC_PER_HOUR (UINT64_C(60) * SEC_PER_MINUTE)
#define SEC_PER_DAY (UINT64_C(24) * SEC_PER_HOUR)

static uint64_t div_round_up(uint64_t n, uint64_t d) {
        return n / d + (n % d != 0);
}

const char *format_size_human(char buf[static FORMAT_HUMAN_MAX], uint64_t bytes) {
        static const char suffixes[] = "KMGTPE";
        unsigned exponent = 0;
        uint64_t unit = 1, whole, rest;

        if (bytes < 1024) {
                snprintf(buf, FORMAT_HUMAN_MAX, "%u", (unsigned) bytes);
                return buf;
        }

        /* The largest unit in which the whole part stays below 1024. */
        while (exponent < strlen(suffixes) && bytes / unit >= 1024) {
                unit *= 1024;
                exponent++;
        }
        whole = bytes / unit;
        rest = bytes % unit;

        if (whole < 10) {
                /* rest < unit <= 2^60, so rest * 10 cannot overflow. */
                uint64_t tenths = div_round_up(rest * 10, unit);

                if (tenths == 10) {
                        whole++;
                        tenths = 0;
                }
                if (whole < 10) {
                        snprintf(buf, FORMAT_HUMAN_MAX, "%u.%u%c", (unsigned) whole, (unsigned) tenths,
                                 suffixes[exponent - 1]);
                        return buf;
                }
        } else if (rest > 0)
                whole++;

        /* Rounding up may reach the next unit: 1023.1K is 1.0M. */
        if (whole == 1024 && exponent < strlen(suffixes)) {
                snprintf(buf, FORMAT_HUMAN_MAX, "1.0%c", suffixes[exponent]);
                return buf;
        }
        snprintf(buf, FORMAT_HUMAN_MAX, "%u%c", (unsigned) whole, suffixes[exponent - 1]);
        return buf;
}

const char *format_rate(char buf[static FORMAT_RATE_MAX], double bytes_per_sec) {
        char size[FORMAT_HUMAN_MAX];
        uint64_t b;

        if (!(bytes_per_sec > 0))       /* also NaN */
                b = 0;
        else if (bytes_per_sec >= 18446744073709549568.0)
                b = UINT64_MAX;
        else
                b = (uint64_t) llround(bytes_per_sec);
        snprintf(buf, FORMAT_RATE_MAX, "%s/s", format_size_human(size, b));
        return buf;
}

const char *format_relative(char buf[static FORMAT_RELATIVE_MAX], uint64_t when, uint64_t now) {
        char amount[TIMESPAN_UNIT_MAX];
        uint64_t usec;

        if (when == 0) {
                snprintf(buf, FORMAT_RELATIVE_MAX, "-");
                return buf;
        }

        usec = when > now ? when - now : now - when;
        if (usec < USEC_PER_SEC) {
                snprintf(buf, FORMAT_RELATIVE_MAX, "now");
                return buf;
        }
        format_timespan_unit(amount, usec);
        if (when > now)
                snprintf(buf, FORMAT_RELATIVE_MAX, "in %s", amount);
        else
                snprintf(buf, FORMAT_RELATIVE_MAX, "%s ago", amount);
        return buf;
}

const char *format_span(char buf[static FORMAT_SPAN_MAX], uint64_t usec) {
        uint64_t sec = usec / USEC_PER_SEC;

        if (sec < 10)
                snprintf(buf, FORMAT_SPAN_MAX, "%" PRIu64 ".%" PRIu64 "s", sec,
                         usec % USEC_PER_SEC / (USEC_PER_SEC / 10));
        else if (sec < SEC_PER_MINUTE)
                snprintf(buf, FORMAT_SPAN_MAX, "%" PRIu64 "s", sec);
        else if (sec < SEC_PER_HOUR)
                snprintf(buf, FORMAT_SPAN_MAX, "%" PRIu64 "m%02" PRIu64 "s",
                         sec / SEC_PER_MINUTE, sec % SEC_PER_MINUTE);
        else if (sec < SEC_PER_DAY)
                snprintf(buf, FORMAT_SPAN_MAX, "%" PRIu64 "h%02" PRIu64 "m",
                         sec / SEC_PER_HOUR, sec % SEC_PER_HOUR / SEC_PER_MINUTE);
        else
                snprintf(buf, FORMAT_SPAN_MAX, "%" PRIu64 "d%02" PRIu64 "h",
                         sec / SEC_PER_DAY, sec % SEC_PER_DAY / SEC_PER_HOUR);
        return buf;
}

const char *format_timestamp(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t usec) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (usec == 0 || !localtime_r(&t, &tm) ||
            strftime(buf, FORMAT_TIMESTAMP_MAX, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "-");
        return buf;
}

const char *format_bar(char *buf, size_t width, uint64_t done, uint64_t total) {
        size_t inner, filled = 0;

        if (width < 2) {
                buf[0] = '\0';
                return buf;
        }
        inner = width - 2;
        if (total > 0) {
                /* In floating point: done * inner may not fit 64 bits. */
                double fraction = (double) MIN(done, total) / (double) total;
                filled = (size_t) (fraction * (double) inner);
        }
        buf[0] = '[';
        memset(buf + 1, '#', filled);
        memset(buf + 1 + filled, '-', inner - filled);
        buf[width - 1] = ']';
        buf[width] = '\0';
        return buf;
}

static const struct {
        const char *result;
        const char *words;
} result_words[] = {
        { "success",              "success" },
        { "nothing-to-do",        "nothing to do" },
        { "skipped-in-use",       "skipped, in use" },
        { "skipped-dirty-log",    "skipped, log not empty" },
        { "skipped-fixed",        "skipped, fixed disk" },
        { "skipped-differencing", "skipped, differencing disk" },
        { "skipped-unclean-fs",   "skipped, file system not clean" },
        { "skipped-unsafe-fs",    "skipped, network or shared file system" },
        { "skipped-threshold",    "skipped, below minReclaim" },
        { "refused-invalid",      "refused, invalid image" },
        { "error",                "failed" },
        { "cancelled",            "cancelled" },
};

const char *result_to_words(const char *result) {
        if (!result || !*result)
                return "-";
        for (size_t i = 0; i < ELEMENTSOF(result_words); i++)
                if (strcmp(result_words[i].result, result) == 0)
                        return result_words[i].words;
        return result;
}

bool result_is_ok(const char *result) {
        return result && (strcmp(result, "success") == 0 || strcmp(result, "nothing-to-do") == 0 ||
                          strncmp(result, "skipped-", strlen("skipped-")) == 0);
}

const char *format_state(char buf[static FORMAT_STATE_MAX], const char *state, bool sparse,
                         uint64_t job_done, uint64_t job_total) {
        if (strcmp(state, "reclaiming") == 0 && job_total > 0)
                snprintf(buf, FORMAT_STATE_MAX, "reclaiming %u%%",
                         (unsigned) ((double) MIN(job_done, job_total) * 100.0 / (double) job_total));
        else if (strcmp(state, "idle") == 0 && !sparse)
                /* sparse=false: reported, never modified */
                snprintf(buf, FORMAT_STATE_MAX, "watch-only");
        else
                snprintf(buf, FORMAT_STATE_MAX, "%s", *state ? state : "-");
        return buf;
}

void prometheus_write_label_value(FILE *f, const char *s) {
        fputc('"', f);
        for (const char *p = s ? s : ""; *p; p++)
                switch (*p) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*p, f);
                }
        fputc('"', f);
}

void prometheus_write_help(FILE *f, const char *s) {
        for (const char *p = s ? s : ""; *p; p++)
                switch (*p) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*p, f);
                }
}

static void json_separate(JsonOut *j) {
        if (j->need_comma)
                fputc(',', j->f);
        j->need_comma = false;
}

void json_begin(JsonOut *j, char bracket) {
        json_separate(j);
        fputc(bracket, j->f);
}

void json_end(JsonOut *j, char bracket) {
        fputc(bracket, j->f);
        j->need_comma = true;
}

void json_key(JsonOut *j, const char *key) {
        json_separate(j);
        json_write_string(j->f, key);
        fputc(':', j->f);
}

void json_string(JsonOut *j, const char *s) {
        json_separate(j);
        json_write_string(j->f, s);
        j->need_comma = true;
}

void json_u64(JsonOut *j, uint64_t v) {
        char buf[20], *p = buf + sizeof(buf);

        /* Not printf: twenty numbers for each of 10,000 disks made it the
         * biggest cost of status --json. */
        json_separate(j);
        do
                *--p = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        fwrite(p, 1, (size_t) (buf + sizeof(buf) - p), j->f);
        j->need_comma = true;
}

void json_bool(JsonOut *j, bool b) {
        json_separate(j);
        fputs(b ? "true" : "false", j->f);
        j->need_comma = true;
}

void json_double(JsonOut *j, double d) {
        json_separate(j);
        if (isfinite(d))
                fprintf(j->f, "%.15g", d);
        else
                fputs("null", j->f);
        j->need_comma = true;
}
