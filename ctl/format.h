/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* How vhdreclaimctl words numbers, times and results for people, and the
 * escaping of its Prometheus output. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Sizes as `df -h` prints them: binary multiples, one decimal below 10
 * ("1.5G"), none from 10 on ("30M"), always rounded up; bytes below 1024
 * without a suffix ("512", "0"). */
#define FORMAT_HUMAN_MAX 16
const char *format_size_human(char buf[static FORMAT_HUMAN_MAX], uint64_t bytes);

/* A rate: format_size_human() of the bytes per second plus "/s". */
#define FORMAT_RATE_MAX (FORMAT_HUMAN_MAX + 2)
const char *format_rate(char buf[static FORMAT_RATE_MAX], double bytes_per_sec);

/* when relative to now (both CLOCK_REALTIME microseconds), in its largest
 * whole unit, rounded down: "in 3h", "2d ago", "45s ago", "now"; "-" when
 * is 0 (never). */
#define FORMAT_RELATIVE_MAX 32
const char *format_relative(char buf[static FORMAT_RELATIVE_MAX], uint64_t when, uint64_t now);

/* A duration in at most two units: "0.4s", "9.9s", "45s", "2m05s", "1h02m",
 * "3d04h". */
#define FORMAT_SPAN_MAX 32
const char *format_span(char buf[static FORMAT_SPAN_MAX], uint64_t usec);

/* Local time "2026-11-21 07:40:05", or "-" for 0. */
#define FORMAT_TIMESTAMP_MAX 32
const char *format_timestamp(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t usec);

/* "[#######-------]": width cells in total, brackets included; a total of 0
 * draws an empty bar. Returns buf, which must hold width + 1 bytes. */
const char *format_bar(char *buf, size_t width, uint64_t done, uint64_t total);

/* A pass result ("skipped-in-use") in words ("skipped, in use"); "" is "-";
 * a result this client does not know is returned as it is. */
const char *result_to_words(const char *result);

/* Whether a job that ended in result counts as done right: success,
 * nothing-to-do or any skip. */
bool result_is_ok(const char *result);

/* A disk's state in words; reclaiming shows the progress of its job. */
#define FORMAT_STATE_MAX 48
const char *format_state(char buf[static FORMAT_STATE_MAX], const char *state, bool sparse,
                         uint64_t job_done, uint64_t job_total);

/* Prometheus text format: a label value between double quotes (backslash,
 * double quote and line feed escaped), and HELP text (backslash and line
 * feed escaped). */
void prometheus_write_label_value(FILE *f, const char *s);
void prometheus_write_help(FILE *f, const char *s);

/* A small streaming JSON writer: it places the commas. Strings are escaped
 * as RFC 8259 asks. */
typedef struct JsonOut {
        FILE *f;
        bool need_comma;
} JsonOut;

void json_begin(JsonOut *j, char bracket);      /* '{' or '[' */
void json_end(JsonOut *j, char bracket);        /* '}' or ']' */
void json_key(JsonOut *j, const char *key);
void json_string(JsonOut *j, const char *s);
void json_u64(JsonOut *j, uint64_t v);
void json_bool(JsonOut *j, bool b);
void json_double(JsonOut *j, double d);         /* null when not finite */
