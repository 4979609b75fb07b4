#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Compaction benchmark (issue 14), side by side in one run.

A 16 GiB VHDX (qemu-img's default dynamic layout) holding ext4 gets 8 GiB of
files of 64 MiB; then 6 GiB of them are deleted, three of every four, so the
freed blocks are scattered over the whole file. Identical copies are then
made small:

  ours:  vhdreclaimd --once --compact (in place: punch, mark, move, cut)
  peer:  qemu-img convert -O vhdx to a new file, then rename it over the
         old one (what a Linux user does today)

Reported: the wall times and their ratio (peer / ours, per round, median),
the extra space each needed at its peak (the largest rise of its files'
allocated bytes above their lowest point before it, sampled every 2 ms), the final apparent and allocated sizes, and our
peak RSS. Usage: bench-compact.py [--disk-gib 16] [--files-gib 8]
[--delete-gib 6] [--rounds 3] [--dir /var/tmp]"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
GiB = 1 << 30


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def allocated(paths):
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


class PeakUsage:
    """Samples (every 2 ms) the bytes a contender's files hold on the host and
    keeps the largest rise above the lowest figure seen before it: the extra
    space the job needed at its peak. The files' own st_blocks, not the file
    system's free count, so other work on the machine does not count."""

    def __init__(self, paths):
        self.paths, self.peak = paths, 0
        self.low = allocated(paths)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample)

    def sample(self):
        while not self.stop.is_set():
            now = allocated(self.paths)
            self.low = min(self.low, now)
            self.peak = max(self.peak, now - self.low)
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def build_image(work, disk_gib, files_gib, delete_gib):
    tree = os.path.join(work, "tree")
    os.mkdir(tree)
    n = files_gib * 16
    with open("/dev/urandom", "rb") as rnd:
        for i in range(n):
            with open(os.path.join(tree, "f%04d" % i), "wb") as f:
                for _ in range(64):
                    f.write(rnd.read(MiB))
    raw = os.path.join(work, "fs.raw")
    sh("mkfs.ext4", "-q", "-F", "-d", tree, raw, "%dG" % disk_gib)
    shutil.rmtree(tree)
    doomed = [i for i in range(n) if i % 4 != 3][:delete_gib * 16]
    cmds = os.path.join(work, "rm.cmds")
    with open(cmds, "w") as f:
        for i in doomed:
            f.write("rm /f%04d\n" % i)
    sh("debugfs", "-w", "-f", cmds, raw)
    vhdx = os.path.join(work, "base.vhdx")
    sh("qemu-img", "convert", "-O", "vhdx", raw, vhdx)
    os.unlink(raw)
    return vhdx


def run_ours(daemon, image):
    p = subprocess.run(["/usr/bin/time", "-v", daemon, "--once", "--json", "--compact", image],
                       check=True, capture_output=True, text=True)
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return json.loads(p.stdout), rss_kib


def run_peer(image):
    tmp = image + ".new"
    sh("qemu-img", "convert", "-O", "vhdx", image, tmp)
    os.rename(tmp, image)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--disk-gib", type=int, default=16)
    ap.add_argument("--files-gib", type=int, default=8)
    ap.add_argument("--delete-gib", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--daemon", default=os.environ.get("VHDRECLAIMD", "build/daemon/vhdreclaimd"))
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench-compact-", dir=a.dir)
    try:
        print("building a %d GiB ext4 VHDX with %d GiB of files, %d GiB deleted (scattered) ..."
              % (a.disk_gib, a.files_gib, a.delete_gib), flush=True)
        base = build_image(work, a.disk_gib, a.files_gib, a.delete_gib)
        block = json.loads(subprocess.run([a.daemon, "--once", "--json", "--dry-run", "--compact", base],
                                          capture_output=True, text=True).stdout)
        print("base image: apparent %.2f GiB, allocated %.2f GiB"
              % (os.path.getsize(base) / GiB, os.stat(base).st_blocks * 512 / GiB))
        ratios, rows = [], []
        for rnd in range(a.rounds):
            ours, peer = os.path.join(work, "ours.vhdx"), os.path.join(work, "peer.vhdx")
            sh("cp", "--sparse=always", base, ours)
            sh("cp", "--sparse=always", base, peer)
            sh("sync")
            with PeakUsage([ours]) as pu_ours:
                t = time.monotonic()
                report, rss_kib = run_ours(a.daemon, ours)
                t_ours = time.monotonic() - t
            sh("sync")
            with PeakUsage([peer, peer + ".new"]) as pu_peer:
                t = time.monotonic()
                run_peer(peer)
                t_peer = time.monotonic() - t
            sh("qemu-img", "check", ours)
            ratios.append(t_peer / t_ours)
            rows.append((t_ours, t_peer, pu_ours.peak, pu_peer.peak, rss_kib,
                         os.path.getsize(ours), os.path.getsize(peer),
                         os.stat(ours).st_blocks * 512, os.stat(peer).st_blocks * 512, report))
            print("round %d: ours %.2f s (peak extra %.1f MiB, RSS %.1f MiB, %d blocks moved), "
                  "qemu-img convert+rename %.2f s (peak extra %.2f GiB), ratio %.1fx"
                  % (rnd + 1, t_ours, pu_ours.peak / MiB, rss_kib / 1024, report.get("blocks_moved", 0),
                     t_peer, pu_peer.peak / GiB, t_peer / t_ours), flush=True)
            os.unlink(ours)
            os.unlink(peer)
        last = rows[-1]
        print()
        print("final apparent size: ours %.2f GiB, qemu-img %.2f GiB (allocated: ours %.2f GiB, qemu-img %.2f GiB)"
              % (last[5] / GiB, last[6] / GiB, last[7] / GiB, last[8] / GiB))
        print("peak extra space:    ours %.1f MiB (median), qemu-img %.2f GiB (median)"
              % (statistics.median(r[2] for r in rows) / MiB, statistics.median(r[3] for r in rows) / GiB))
        print("wall-time ratio (qemu-img / ours): median %.1fx, min %.1fx, max %.1fx  (target >= 3x)"
              % (statistics.median(ratios), min(ratios), max(ratios)))
        print("dry run predicted file_size_after %.2f GiB" % (block.get("file_size_after", 0) / GiB))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
