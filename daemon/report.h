/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdio.h>

#include "pass.h"

/* The one-line JSON object of DESIGN.md's one-shot mode. */
void report_write_json(const PassReport *r, FILE *f);
/* A human line: "PATH: RESULT: reclaimed 30.0M (stale 0, zero 30.0M, free 0) in 12 ms". */
/* What --compact does to a raw image: the text report and the pass's message say it. */
#define REPORT_RAW_NOT_COMPACTED "not compacted: a raw image has no blocks to move (the holes punched are what it gives back)"

void report_write_text(const PassReport *r, FILE *f);
