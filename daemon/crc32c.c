/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <ext2fs/ext2fs.h>

#include "crc32c.h"

/* libext2fs already carries a tuned CRC-32C (ext4 metadata checksums use it);
 * it computes the raw register, so the VHDX pre- and post-inversion are ours. */
uint32_t crc32c(const void *buf, size_t len) {
        return ~ext2fs_crc32c_le(~UINT32_C(0), (unsigned char const *) buf, len);
}
