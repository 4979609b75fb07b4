/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdint.h>
#include <stdio.h>

/* Just enough JSON output for reports: a string with RFC 8259 escaping. */
void json_write_string(FILE *f, const char *s);
