/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the configuration parser. The input is the file's text.
 *
 * config_load() reads a path, so the input is handed over through a memfd
 * named by /proc/self/fd/N. Invariants: an invalid file is reported with at
 * least one error message and a valid one with none; a valid file printed with
 * config_print() parses back, without errors, to a Config equal to the first
 * (what `vhdreclaimd --check-config` promises), and printing that again gives
 * the same text. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "macro.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

/* Loads text as a configuration file: config_load()'s result. */
static int load_text(const void *text, size_t len, Config **ret, ConfigMessages *msgs) {
        char path[64];
        int fd, r;

        fd = memfd_create("fuzz-config", MFD_CLOEXEC);
        check(fd >= 0);
        check(write(fd, text, len) == (ssize_t) len);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        r = config_load(path, ret, msgs);
        close(fd);
        return r;
}

static char *print_config(const Config *c, size_t *ret_len) {
        char *text = NULL;
        FILE *f = open_memstream(&text, ret_len);

        check(f);
        check(config_print(c, f) >= 0);
        check(fclose(f) == 0);
        return text;
}

static void dump_messages(const ConfigMessages *m) {
        (void) config_messages_print(m, stderr);
}

static void check_round_trip(const Config *c) {
        ConfigMessages msgs = {};
        Config *again = NULL;
        char *text, *text2;
        size_t len, len2;
        int r;

        text = print_config(c, &len);
        r = load_text(text, len, &again, &msgs);
        if (r < 0 || config_messages_count(&msgs, CONFIG_MESSAGE_ERROR) > 0 || !config_equal(c, again)) {
                fprintf(stderr, "printed configuration does not parse back equal (r=%d):\n%s\n", r, text);
                dump_messages(&msgs);
                abort();
        }
        text2 = print_config(again, &len2);
        check(len == len2 && memcmp(text, text2, len) == 0);

        free(text);
        free(text2);
        config_free(again);
        config_messages_done(&msgs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_CRIT);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ConfigMessages msgs = {};
        Config *c = NULL;
        int r;

        r = load_text(data, size, &c, &msgs);
        if (r == -EINVAL)
                check(config_messages_count(&msgs, CONFIG_MESSAGE_ERROR) > 0);
        else if (r >= 0) {
                check(config_messages_count(&msgs, CONFIG_MESSAGE_ERROR) == 0);
                check_round_trip(c);
        } else
                check(r == -ENOMEM);
        config_free(c);
        config_messages_done(&msgs);
        return 0;
}
