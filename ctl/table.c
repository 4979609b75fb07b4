/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "table.h"

struct Table {
        TableColumn *columns;   /* headers copied */
        size_t n_columns;
        char **cells;           /* row-major, n_rows * n_columns */
        size_t n_rows;
        size_t allocated_rows;
};

/* Characters, not bytes, so that names with accents keep the columns
 * aligned; every character is taken as one cell wide. */
static size_t text_width(const char *s) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xC0) != 0x80)
                        n++;
        return n;
}

int table_new(Table **ret, const TableColumn *columns, size_t n_columns) {
        Table *t;

        t = calloc(1, sizeof(Table));
        if (!t)
                return -ENOMEM;
        t->columns = calloc(n_columns, sizeof(TableColumn));
        if (!t->columns) {
                free(t);
                return -ENOMEM;
        }
        t->n_columns = n_columns;
        for (size_t i = 0; i < n_columns; i++) {
                t->columns[i].align = columns[i].align;
                t->columns[i].header = strdup(columns[i].header ? columns[i].header : "");
                if (!t->columns[i].header) {
                        table_free(t);
                        return -ENOMEM;
                }
        }
        *ret = t;
        return 0;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
        for (size_t i = 0; i < t->n_columns; i++)
                free((char *) t->columns[i].header);
        free(t->columns);
        free(t);
        return NULL;
}

int table_add_row(Table *t, const char *const *cells) {
        if (t->n_rows == t->allocated_rows) {
                size_t n = MAX(t->allocated_rows * 2, (size_t) 16);
                char **c = reallocarray(t->cells, n * t->n_columns, sizeof(char *));

                if (!c)
                        return -ENOMEM;
                t->cells = c;
                t->allocated_rows = n;
        }

        char **row = t->cells + t->n_rows * t->n_columns;
        for (size_t i = 0; i < t->n_columns; i++) {
                row[i] = strdup(cells[i] ? cells[i] : "-");
                if (!row[i]) {
                        while (i > 0)
                                free(row[--i]);
                        return -ENOMEM;
                }
        }
        t->n_rows++;
        return 0;
}

size_t table_rows(const Table *t) {
        return t->n_rows;
}

static void print_line(const Table *t, const char *const *cells, const size_t *widths, FILE *f) {
        size_t last = t->n_columns;

        /* Trailing empty left-aligned cells would leave only blanks. */
        while (last > 0 && t->columns[last - 1].align == TABLE_ALIGN_LEFT && cells[last - 1][0] == '\0')
                last--;

        for (size_t i = 0; i < last; i++) {
                size_t pad = widths[i] - text_width(cells[i]);

                if (i > 0)
                        fputs("  ", f);
                if (t->columns[i].align == TABLE_ALIGN_RIGHT)
                        fprintf(f, "%*s", (int) pad, "");
                fputs(cells[i], f);
                if (t->columns[i].align == TABLE_ALIGN_LEFT && i + 1 < last)
                        fprintf(f, "%*s", (int) pad, "");
        }
        fputc('\n', f);
}

int table_print(const Table *t, FILE *f) {
        _cleanup_free_ size_t *widths = calloc(MAX(t->n_columns, (size_t) 1), sizeof(size_t));
        _cleanup_free_ const char **headers = calloc(MAX(t->n_columns, (size_t) 1), sizeof(char *));

        if (!widths || !headers)
                return -ENOMEM;

        for (size_t i = 0; i < t->n_columns; i++) {
                headers[i] = t->columns[i].header;
                widths[i] = text_width(headers[i]);
                for (size_t r = 0; r < t->n_rows; r++)
                        widths[i] = MAX(widths[i], text_width(t->cells[r * t->n_columns + i]));
        }

        print_line(t, headers, widths, f);
        for (size_t r = 0; r < t->n_rows; r++)
                print_line(t, (const char *const *) t->cells + r * t->n_columns, widths, f);

        return ferror(f) ? -EIO : 0;
}
