#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Free-tier benchmark (issue 5), side by side in one run.

A VHDX holding an 8 GiB ext4 file system (WSL's layout: the whole disk, 1 MiB
blocks) gets 4 GiB of files, then 3 GiB of them are deleted. Two identical
copies are then reclaimed:

  ours:      vhdreclaimd --once (free tier, in place)
  reference: what a user would do otherwise: qemu-img convert to raw, loop
             mount, fstrim, unmount, qemu-img convert back to VHDX

and the wall times, reclaimed bytes and our peak memory are reported.
Needs root (loop mount). Usage: bench-free.py [--fs-gib 8] [--files-gib 4]
[--delete-gib 3] [--dir /var/tmp]"""

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


def allocated(path):
    return os.stat(path).st_blocks * 512


def timed(fn):
    t = time.monotonic()
    result = fn()
    return time.monotonic() - t, result


def build_image(work, fs_gib, files_gib, delete_gib):
    tree = os.path.join(work, "tree")
    os.mkdir(tree)
    n = files_gib * 16                     # 64 MiB files
    with open("/dev/urandom", "rb") as rnd:
        for i in range(n):
            with open(os.path.join(tree, "f%04d" % i), "wb") as f:
                for _ in range(64):
                    f.write(rnd.read(MiB))
    raw = os.path.join(work, "fs.raw")
    sh("mkfs.ext4", "-q", "-F", "-d", tree, raw, "%dG" % fs_gib)
    shutil.rmtree(tree)
    cmds = os.path.join(work, "rm.cmds")
    with open(cmds, "w") as f:
        for i in range(delete_gib * 16):
            f.write("rm /f%04d\n" % i)
    sh("debugfs", "-w", "-f", cmds, raw)
    vhdx = os.path.join(work, "base.vhdx")
    sh("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, vhdx)
    os.unlink(raw)
    return vhdx


def run_ours(daemon, image):
    p = subprocess.run(["/usr/bin/time", "-v", daemon, "--once", "--json", image],
                       check=True, capture_output=True, text=True)
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return json.loads(p.stdout), rss_kib


def run_reference(work, image):
    raw = os.path.join(work, "ref.raw")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    sh("qemu-img", "convert", "-O", "raw", image, raw)
    loop = sh("losetup", "-f", "--show", raw).stdout.strip()
    try:
        sh("mount", loop, mnt)
        try:
            sh("fstrim", mnt)
        finally:
            sh("umount", mnt)
    finally:
        sh("losetup", "-d", loop)
    out = os.path.join(work, "ref-new.vhdx")
    sh("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, out)
    os.unlink(raw)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fs-gib", type=int, default=8)
    ap.add_argument("--files-gib", type=int, default=4)
    ap.add_argument("--delete-gib", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--daemon", default=os.environ.get("VHDRECLAIMD", "build/daemon/vhdreclaimd"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-free needs root for the loop mount of the reference")

    work = tempfile.mkdtemp(prefix="bench-free-", dir=a.dir)
    try:
        print("building a %d GiB ext4 VHDX with %d GiB of files, %d GiB deleted ..."
              % (a.fs_gib, a.files_gib, a.delete_gib), flush=True)
        base = build_image(work, a.fs_gib, a.files_gib, a.delete_gib)
        ours = os.path.join(work, "ours.vhdx")
        ref = os.path.join(work, "ref.vhdx")
        sh("cp", "--sparse=always", base, ours)
        sh("cp", "--sparse=always", base, ref)
        os.unlink(base)
        # Neither contender should pay for writing back the copies.
        sh("sync")
        start_alloc = allocated(ours)

        t_ours, (report, rss_kib) = timed(lambda: run_ours(a.daemon, ours))
        t_ref, ref_out = timed(lambda: run_reference(work, ref))
        ours_gain = start_alloc - allocated(ours)
        ref_gain = allocated(ref) - allocated(ref_out)

        sh("qemu-img", "check", ours)
        print("image allocated before: %.2f GiB" % (start_alloc / GiB))
        print("vhdreclaimd --once:     %8.2f s, reclaimed %.2f GiB (free %.2f GiB, zero %.2f GiB), peak RSS %.1f MiB"
              % (t_ours, ours_gain / GiB, report["free_bytes"] / GiB, report["zero_bytes"] / GiB, rss_kib / 1024))
        print("convert+fstrim+convert: %8.2f s, reclaimed %.2f GiB" % (t_ref, ref_gain / GiB))
        print("wall-time ratio (reference / ours): %.1fx  (target >= 50x)" % (t_ref / t_ours))
        print("reclaimed ratio (ours / reference): %.3f  (target >= 0.95)" % (ours_gain / ref_gain))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
