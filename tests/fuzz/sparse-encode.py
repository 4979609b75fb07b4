#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Encodes an image file as a fuzz input in the sparse form of
tests/fuzz/fuzz-sparse.h: size, flags, then (offset, length, bytes) patches
for the non-zero stretches. A 4 MiB VHDX made by qemu-img becomes a few
hundred bytes.

    sparse-encode.py [--flags N] [--limit BYTES] IMAGE OUTPUT

--limit drops everything past BYTES (payload data a parser never reads)
while keeping the declared size."""

import argparse
import os
import struct

# Zero gaps shorter than this stay inside one patch: a patch head is 6 bytes.
MERGE_GAP = 16
MAX_PATCH = 0xFFFF


def nonzero_runs(data, base):
    """(offset, bytes) for each non-zero stretch of data, gaps < MERGE_GAP merged."""
    runs = []
    i, n = 0, len(data)
    while i < n:
        while i < n and data[i] == 0:
            i += 1
        if i >= n:
            break
        start = end = i
        while i < n:
            if data[i] != 0:
                i += 1
                end = i
            elif i - end >= MERGE_GAP:
                break
            else:
                i += 1
        runs.append((base + start, data[start:end]))
    return runs


def data_extents(f, size):
    """(offset, length) of the allocated parts, holes skipped."""
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            return
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            hole = size
        yield data, hole - data
        pos = hole


def encode(path, flags, limit):
    size = os.path.getsize(path)
    out = bytearray(struct.pack("<QB", size, flags))
    with open(path, "rb") as f:
        for offset, length in data_extents(f, min(size, limit)):
            length = min(length, limit - offset)
            f.seek(offset)
            chunk = f.read(length)
            for start, run in nonzero_runs(chunk, offset):
                if start >= 1 << 32:
                    raise SystemExit(f"{path}: non-zero data past 4 GiB cannot be encoded")
                for i in range(0, len(run), MAX_PATCH):
                    piece = run[i:i + MAX_PATCH]
                    out += struct.pack("<IH", start + i, len(piece)) + piece
    return bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flags", type=lambda s: int(s, 0), default=0)
    ap.add_argument("--limit", type=int, default=1 << 62)
    ap.add_argument("image")
    ap.add_argument("output")
    a = ap.parse_args()
    with open(a.output, "wb") as f:
        f.write(encode(a.image, a.flags, a.limit))


if __name__ == "__main__":
    main()
