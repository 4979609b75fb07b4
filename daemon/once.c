/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "log.h"
#include "macro.h"
#include "once.h"
#include "report.h"

int once_run(const OnceOptions *o, char **images, int n_images) {
        int status = 0;

        for (int i = 0; i < n_images; i++) {
                PassReport rep;
                int r = pass_run(images[i], &o->pass, &rep);
                if (r < 0)
                        return log_error_errno(r, "%s: %m", images[i]), 1;
                if (o->json)
                        report_write_json(&rep, stdout);
                else
                        report_write_text(&rep, stdout);
                fflush(stdout);
                if (pass_result_is_failure(rep.result))
                        status = 1;
                pass_report_done(&rep);
        }
        return status;
}

static void print_sizes(const Image *img, int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return;
        printf("format              %s\n", image_format_to_string(img->format));
        printf("virtual size        %" PRIu64 " bytes\n", img->virtual_size);
        printf("file size           %" PRIu64 " bytes (apparent)\n", (uint64_t) st.st_size);
        printf("allocated           %" PRIu64 " bytes\n", (uint64_t) st.st_blocks * 512);
}

static void print_layout(const Image *img) {
        ExtentList structures = {}, data = {}, stale = {};

        if (image_file_ranges(img, &structures, &data, &stale) >= 0)
                printf("file ranges         structures %" PRIu64 ", present data %" PRIu64 ", stale %" PRIu64 " bytes\n",
                       extent_list_total(&structures), extent_list_total(&data), extent_list_total(&stale));
        extent_list_done(&structures);
        extent_list_done(&data);
        extent_list_done(&stale);
}

int once_inspect(const char *path) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_error_errno(errno, "%s: cannot open: %m", path), 1;
        r = image_open(fd, &img, &error);
        if (r < 0) {
                log_error_errno(r, "%s: %s", path, error ? error : strerror(-r));
                return 1;
        }
        printf("path                %s\n", path);
        print_sizes(img, fd);
        if (img->vhdx)
                vhdx_print_inspect(img->vhdx, stdout);
        print_layout(img);
        image_free(img);
        return 0;
}
