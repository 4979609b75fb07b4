/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "json.h"
#include "log.h"

/* Logging configuration is process-wide by nature (like syslog's openlog):
 * set once at start-up, read-only afterwards. */
static struct {
        const char *ident;
        LogTarget target;
        int max_level;
} log_config = { "vhdreclaim", LOG_TARGET_STDERR_PREFIXED, LOG_INFO };

static int stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return 0;
        if (fstat(STDERR_FILENO, &st) < 0)
                return 0;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *ident, LogTarget target) {
        const char *lvl;

        if (ident)
                log_config.ident = ident;
        if (target == LOG_TARGET_AUTO) {
                if (stderr_is_journal())
                        target = LOG_TARGET_JOURNAL;
                else if (isatty(STDERR_FILENO))
                        target = LOG_TARGET_STDERR_PLAIN;
                else
                        target = LOG_TARGET_STDERR_PREFIXED;
        }
        log_config.target = target;

        lvl = getenv("VHDRECLAIM_LOG_LEVEL");
        if (lvl && strcmp(lvl, "debug") == 0)
                log_config.max_level = LOG_DEBUG;
}

void log_set_max_level(int level) {
        log_config.max_level = level;
}

int log_get_max_level(void) {
        return log_config.max_level;
}

static void log_write_stderr(int level, const char *msg) {
        if (log_config.target == LOG_TARGET_STDERR_PLAIN)
                fprintf(stderr, "%s: %s\n", log_config.ident, msg);
        else
                fprintf(stderr, "<%d>%s\n", level, msg);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) {
        char msg[2048];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > log_config.max_level)
                return -error;

        /* Let %m in format refer to the error we were given. */
        errno = error;
        va_start(ap, format);
        vsnprintf(msg, sizeof msg, format, ap);
        va_end(ap);

        /* File names are bytes; a log is text. journalctl shows a field that
         * is not UTF-8 as "[blob data]": bad bytes become U+FFFD, as on the
         * bus (control.c), whatever the target. */
        _cleanup_free_ char *clean = utf8_sanitize(msg);
        const char *text = clean ? clean : msg;

        if (log_config.target == LOG_TARGET_JOURNAL) {
                char lbuf[32];

                snprintf(lbuf, sizeof lbuf, "%d", line);
                if (error > 0)
                        sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", level,
                                        "ERRNO=%d", error, "CODE_FILE=%s", file,
                                        "CODE_LINE=%s", lbuf, "CODE_FUNC=%s", func,
                                        "SYSLOG_IDENTIFIER=%s", log_config.ident, NULL);
                else
                        sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", level,
                                        "CODE_FILE=%s", file, "CODE_LINE=%s", lbuf,
                                        "CODE_FUNC=%s", func,
                                        "SYSLOG_IDENTIFIER=%s", log_config.ident, NULL);
        } else
                log_write_stderr(level, text);

        return -error;
}

void log_fields(int level, const char *message, const char *const *fields) {
        size_t n = 0;

        if (level > log_config.max_level)
                return;

        if (log_config.target != LOG_TARGET_JOURNAL) {
                _cleanup_free_ char *text = utf8_sanitize(message);

                log_write_stderr(level, text ? text : message);
                return;
        }

        while (fields && fields[n])
                n++;

        struct iovec iov[n + 3];
        char *clean[n + 1];
        char prio[32], ident[256];
        _cleanup_free_ char *m = NULL, *text = utf8_sanitize(message);

        if (!text || asprintf(&m, "MESSAGE=%s", text) < 0)
                return;
        /* Fields as the message: UTF-8, so journalctl shows them as text. */
        for (size_t i = 0; i < n; i++)
                clean[i] = utf8_sanitize(fields[i]);
        snprintf(prio, sizeof prio, "PRIORITY=%d", level);
        snprintf(ident, sizeof ident, "SYSLOG_IDENTIFIER=%s", log_config.ident);
        iov[0] = (struct iovec) { m, strlen(m) };
        iov[1] = (struct iovec) { prio, strlen(prio) };
        iov[2] = (struct iovec) { ident, strlen(ident) };
        for (size_t i = 0; i < n; i++) {
                const char *f = clean[i] ? clean[i] : fields[i];

                iov[i + 3] = (struct iovec) { (void *) f, strlen(f) };
        }
        sd_journal_sendv(iov, (int) (n + 3));
        for (size_t i = 0; i < n; i++)
                free(clean[i]);
}
