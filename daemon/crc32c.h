/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli) as MS-VHDX uses it: initial value ~0, final xor ~0. */
uint32_t crc32c(const void *buf, size_t len);
