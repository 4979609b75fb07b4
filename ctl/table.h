/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* An aligned text table: a header line, then one line per row, columns
 * separated by two spaces, each as wide as its widest cell (counted in
 * UTF-8 characters). Text columns are left-aligned, numbers right-aligned;
 * lines carry no trailing blanks. */

#include <stddef.h>
#include <stdio.h>

typedef enum TableAlign {
        TABLE_ALIGN_LEFT,
        TABLE_ALIGN_RIGHT,
} TableAlign;

typedef struct TableColumn {
        const char *header;
        TableAlign align;
} TableColumn;

typedef struct Table Table;

/* The column definitions are copied. Returns 0 or -ENOMEM. */
int table_new(Table **ret, const TableColumn *columns, size_t n_columns);
Table *table_free(Table *t);

/* Appends a row of exactly as many cells as the table has columns (NULL
 * cells print as "-"); the strings are copied. Returns 0 or -ENOMEM. */
int table_add_row(Table *t, const char *const *cells);
size_t table_rows(const Table *t);

/* Returns 0 or -EIO when writing failed. */
int table_print(const Table *t, FILE *f);

static inline void table_freep(Table **t) {
        table_free(*t);
}
#define _cleanup_table_ __attribute__((cleanup(table_freep)))
