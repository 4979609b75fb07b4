#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Encodes an image file as a fuzz-ntfs input (fuzz-sparse.h, flag 0x02):
4 KiB pages that are all zero are left out, pages that repeat one byte
become 3-byte run patches (byte, le16 page count), the rest are literal.

    sparse-encode-runs.py [--flags N] IMAGE OUTPUT"""

import argparse
import struct

PAGE = 4096


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flags", type=lambda s: int(s, 0), default=0x02)
    ap.add_argument("image")
    ap.add_argument("output")
    a = ap.parse_args()
    data = open(a.image, "rb").read()
    out = [struct.pack("<QB", len(data), a.flags | 0x02)]
    pos = 0
    while pos < len(data):
        page = data[pos:pos + PAGE]
        if page.count(page[0]) == len(page) and len(page) == PAGE:
            end = pos
            while end < len(data) and data[end:end + PAGE] == page and (end - pos) // PAGE < 0xffff:
                end += PAGE
            if page[0] != 0:
                out.append(struct.pack("<IHBH", pos, 3, page[0], (end - pos) // PAGE))
            pos = end
            continue
        # Literal bytes, trimmed of zeros at both ends (never 3 bytes long).
        lo = len(page) - len(page.lstrip(b"\0"))
        hi = len(page.rstrip(b"\0"))
        if hi - lo == 3:
            hi += 1
        out.append(struct.pack("<IH", pos + lo, hi - lo) + page[lo:hi])
        pos += PAGE
    open(a.output, "wb").write(b"".join(out))


if __name__ == "__main__":
    main()
