#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""NTFS free-tier benchmark (issue 11), side by side in one run.

An 8 GiB NTFS volume (mkntfs, the whole disk) gets 4 GiB of files written
through a read-write ntfs-3g mount, then 3 GiB of them are deleted; the raw
disk is converted to a dynamic VHDX. Three identical copies are reclaimed:

  ours:      vhdreclaimd --once (free tier, in place)
  fstrim:    what a Linux admin does today: qemu-img convert to raw, loop
             device, ntfs-3g mount, fstrim, unmount, qemu-img convert back
  zero-fill: the Windows way done on Linux: convert to raw, ntfs-3g mount,
             fill the free space with a zero file, delete it, unmount,
             fallocate --dig-holes, convert back

and the wall times, the reclaimed bytes against the fstrim reference and the
peak memory (the largest single process, /usr/bin/time -v) are reported.
Needs root (loop device, FUSE). Usage: bench-ntfs.py [--fs-gib 8]
[--files-gib 4] [--delete-gib 3] [--block-size 32M] [--dir /var/tmp]"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
GiB = 1 << 30


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def peak_kib(*args):
    """Runs a command under /usr/bin/time -v; (stdout, peak RSS in KiB)."""
    p = subprocess.run(["/usr/bin/time", "-v", *args], check=True, capture_output=True, text=True)
    return p.stdout, int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))


def allocated(path):
    return os.stat(path).st_blocks * 512


def timed(fn):
    t = time.monotonic()
    result = fn()
    return time.monotonic() - t, result


class NtfsMount:
    def __init__(self, dev, mnt):
        self.dev, self.mnt = dev, mnt

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        sh("ntfs-3g", self.dev, self.mnt)
        return self.mnt

    def __exit__(self, *exc):
        sh("umount", self.mnt)


def build_image(work, fs_gib, files_gib, delete_gib, block_size):
    raw = os.path.join(work, "fs.raw")
    with open(raw, "wb") as f:
        f.truncate(fs_gib * GiB)
    sh("mkntfs", "-q", "-F", "-f", raw)
    with NtfsMount(raw, os.path.join(work, "mnt")) as mnt, open("/dev/urandom", "rb") as rnd:
        for i in range(files_gib * 16):                 # 64 MiB files
            with open(os.path.join(mnt, "f%04d" % i), "wb") as f:
                for _ in range(64):
                    f.write(rnd.read(MiB))
        for i in range(delete_gib * 16):
            os.unlink(os.path.join(mnt, "f%04d" % i))
    vhdx = os.path.join(work, "base.vhdx")
    sh("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=" + block_size, raw, vhdx)
    os.unlink(raw)
    return vhdx


def to_raw(image, raw):
    sh("qemu-img", "convert", "-O", "raw", image, raw)


def back_to_vhdx(raw, out, block_size):
    sh("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=" + block_size, raw, out)
    os.unlink(raw)


def run_ours(daemon, image):
    out, kib = peak_kib(daemon, "--once", "--json", image)
    return json.loads(out), kib


def run_fstrim(work, image, block_size):
    raw = os.path.join(work, "trim.raw")
    to_raw(image, raw)
    loop = sh("losetup", "-f", "--show", raw).stdout.strip()
    try:
        with NtfsMount(loop, os.path.join(work, "mnt")) as mnt:
            sh("fstrim", mnt)
    finally:
        sh("losetup", "-d", loop)
    out = os.path.join(work, "trim-new.vhdx")
    back_to_vhdx(raw, out, block_size)
    return out


def run_zero_fill(work, image, block_size):
    raw = os.path.join(work, "zero.raw")
    to_raw(image, raw)
    with NtfsMount(raw, os.path.join(work, "mnt")) as mnt:
        zero = os.path.join(mnt, "zero.fill")
        # dd stops at ENOSPC, which is what it is for here.
        subprocess.run(["dd", "if=/dev/zero", "of=" + zero, "bs=4M", "status=none"], capture_output=True)
        os.unlink(zero)
    sh("fallocate", "--dig-holes", raw)
    out = os.path.join(work, "zero-new.vhdx")
    back_to_vhdx(raw, out, block_size)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fs-gib", type=int, default=8)
    ap.add_argument("--files-gib", type=int, default=4)
    ap.add_argument("--delete-gib", type=int, default=3)
    ap.add_argument("--block-size", default="32M")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--daemon", default=os.environ.get("VHDRECLAIMD", "build/daemon/vhdreclaimd"))
    a = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        sys.exit("bench-ntfs needs root and /dev/fuse (ntfs-3g mounts, loop device)")

    work = tempfile.mkdtemp(prefix="bench-ntfs-", dir=a.dir)
    try:
        print("building a %d GiB NTFS VHDX (%s blocks) with %d GiB of files, %d GiB deleted ..."
              % (a.fs_gib, a.block_size, a.files_gib, a.delete_gib), flush=True)
        base = build_image(work, a.fs_gib, a.files_gib, a.delete_gib, a.block_size)
        copies = {}
        for name in ("ours", "fstrim", "zero"):
            copies[name] = os.path.join(work, name + ".vhdx")
            sh("cp", "--sparse=always", base, copies[name])
        os.unlink(base)
        # Neither contender should pay for writing back the copies.
        sh("sync")
        start_alloc = allocated(copies["ours"])

        t_ours, (report, rss_kib) = timed(lambda: run_ours(a.daemon, copies["ours"]))
        t_trim, trim_out = timed(lambda: run_fstrim(work, copies["fstrim"], a.block_size))
        t_zero, zero_out = timed(lambda: run_zero_fill(work, copies["zero"], a.block_size))
        ours_gain = start_alloc - allocated(copies["ours"])
        trim_gain = start_alloc - allocated(trim_out)
        zero_gain = start_alloc - allocated(zero_out)

        sh("qemu-img", "check", copies["ours"])
        print("image allocated before:   %.2f GiB" % (start_alloc / GiB))
        print("vhdreclaimd --once:       %8.2f s, reclaimed %.2f GiB (free %.2f GiB, zero %.2f GiB), peak RSS %.1f MiB"
              % (t_ours, ours_gain / GiB, report["free_bytes"] / GiB, report["zero_bytes"] / GiB, rss_kib / 1024))
        print("convert+fstrim+convert:   %8.2f s, reclaimed %.2f GiB" % (t_trim, trim_gain / GiB))
        print("convert+zero-fill+dig:    %8.2f s, reclaimed %.2f GiB" % (t_zero, zero_gain / GiB))
        faster = min(t_trim, t_zero)
        print("wall-time ratio (faster of the two / ours): %.1fx  (target >= 10x)" % (faster / t_ours))
        print("reclaimed ratio (ours / fstrim reference): %.3f  (target >= 0.95)" % (ours_gain / trim_gain))
    finally:
        for mnt in (os.path.join(work, "mnt"),):
            if os.path.ismount(mnt):
                subprocess.run(["umount", mnt])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
