#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Zero-tier scanner against its peers, side by side in one run.

Generates a file (default 4 GiB) with a mix of random data, zero runs of many
sizes and existing holes; each round copies it, holes and zeros as they are,
once per contender, warms the page cache, then times:

  scan       bench/scan-bench (the daemon's scanner, min_hole 64K) on copy A
  dig-holes  fallocate --dig-holes on copy B
  read       a plain sequential read of copy A (cat and dd; the faster counts)

and prints wall times, the ratio, bytes reclaimed (from st_blocks) and rates.
Targets (issue 2): scan >= 3x faster than dig-holes, scan rate >= half the
plain read rate, reclaimed within 2% of dig-holes.

    bench/bench-scan.py [--size 4G] [--build BUILD_DIR] [--dir WORK_DIR] [--seed N] [--rounds N]
                        [--mix DATA,ZERO,HOLE] [--loop]
"""
import argparse
import contextlib
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_size(s):
    units = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}
    s = s.strip().upper().rstrip("B").rstrip("I")
    return int(float(s[:-1]) * units[s[-1]]) if s and s[-1] in units else int(s)


def loguniform(rng, lo, hi):
    return int(lo * (hi / lo) ** rng.random())


# Length ranges of each kind of segment (log-uniform), and the default share
# of segments of each kind: about 43% data, 47% zeros, 10% holes by bytes.
SEGMENT_LENGTHS = {"data": (4 * KiB, 8 * MiB), "zero": (4 * KiB, 16 * MiB), "hole": (64 * KiB, 16 * MiB)}
DEFAULT_PROBS = (0.60, 0.35, 0.05)


def probs_for_shares(shares):
    """Segment probabilities that give these byte shares (data, zero, hole)."""
    means = [(hi - lo) / math.log(hi / lo) for lo, hi in SEGMENT_LENGTHS.values()]
    w = [s / m for s, m in zip(shares, means)]
    return tuple(x / sum(w) for x in w)


def layout(size, seed, probs=DEFAULT_PROBS):
    """Yields (kind, offset, length): 'data', 'zero' or 'hole'. Lengths are
    512-byte multiples, so runs are sector- but not always block-aligned, as
    in a real disk image."""
    rng = random.Random(seed)
    pos = 0
    while pos < size:
        r = rng.random()
        kind = "data" if r < probs[0] else "zero" if r < probs[0] + probs[1] else "hole"
        length = loguniform(rng, *SEGMENT_LENGTHS[kind])
        length = min(max(512, length // 512 * 512), size - pos)
        yield kind, pos, length
        pos += length


def generate(path, size, seed, probs=DEFAULT_PROBS):
    rng = random.Random(seed ^ 0x5EED)
    pool = rng.randbytes(64 * MiB)
    zeros = bytes(8 * MiB)
    counts = {"data": 0, "zero": 0, "hole": 0}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for kind, off, length in layout(size, seed, probs):
            counts[kind] += length
            if kind == "hole":
                continue
            done = 0
            while done < length:
                n = min(length - done, 8 * MiB)
                if kind == "zero":
                    buf = memoryview(zeros)[:n]
                else:
                    start = rng.randrange(0, len(pool) - n + 1)
                    buf = memoryview(pool)[start:start + n]
                os.pwrite(fd, buf, off + done)
                done += n
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return counts


def copy_keeping_layout(src, dst):
    """Copies holes as holes and data as data, zeros included (cp --sparse
    would turn the zero runs into holes and spoil the benchmark)."""
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = os.fstat(fi).st_size
        os.ftruncate(fo, size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fi, pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fi, data, os.SEEK_HOLE)
            while data < hole:
                n = min(hole - data, 8 * MiB)
                os.pwrite(fo, os.pread(fi, n, data), data)
                data += n
            pos = hole
        os.fsync(fo)
        os.posix_fadvise(fi, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fi)
        os.close(fo)


def allocated(path):
    return os.stat(path).st_blocks * 512


def timed(argv, **kw):
    t = time.monotonic()
    p = subprocess.run(argv, check=True, **kw)
    return time.monotonic() - t, p


def timed_cpu(argv, **kw):
    """Wall time, and the CPU time (user + system) the command used: the
    latter holds steady when other work shares the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, p = timed(argv, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return t, cpu, p


def warm(path):
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)


def one_round(orig, a, b, scanner, min_hole):
    """Fresh identical copies, page cache warm, then each contender once."""
    copy_keeping_layout(orig, a)
    copy_keeping_layout(orig, b)
    before = allocated(a)
    assert before == allocated(b) == allocated(orig), "copies differ in allocation"
    for p in (a, b):
        warm(p)
    t_cat, c_cat, _ = timed_cpu(["cat", a], stdout=subprocess.DEVNULL)
    t_dd, c_dd, _ = timed_cpu(["dd", f"if={a}", "of=/dev/null", "bs=1M", "status=none"])
    for p in (a, b):
        warm(p)
    t_scan, c_scan, p = timed_cpu([scanner, "--min-hole", str(min_hole), a], stdout=subprocess.PIPE, text=True)
    scan = json.loads(p.stdout)
    t_dig, c_dig, _ = timed_cpu(["fallocate", "--dig-holes", b])
    # Both only punch zeros: the copies must still read the same.
    subprocess.run(["cmp", a, b], check=True)
    return {"cat": t_cat, "dd": t_dd, "scan": t_scan, "dig": t_dig, "scan_json": scan,
            "cpu": {"cat": c_cat, "dd": c_dd, "scan": c_scan, "dig": c_dig},
            "rec_scan": before - allocated(a), "rec_dig": before - allocated(b)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--build", default=os.environ.get("BUILD_ROOT", "build"))
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"))
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--min-hole", default="64K")
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds (default 3)")
    ap.add_argument("--mix", help="byte shares data,zero,hole, e.g. 75,15,10 (default about 43,47,10)")
    ap.add_argument("--loop", action="store_true",
                    help="run on a fresh ext4 mounted from a loop device (root): without the "
                         "'discard' mount option, whose synchronous discards would dominate every punch")
    args = ap.parse_args()
    if args.loop:
        with loop_ext4(args.dir, parse_size(args.size) * 3 + GiB) as mnt:
            args.dir = mnt
            return run(args)
    return run(args)


@contextlib.contextmanager
def loop_ext4(parent, size):
    base = tempfile.mkdtemp(prefix="bench-scan-fs-", dir=parent)
    image, mnt = os.path.join(base, "fs.img"), os.path.join(base, "mnt")
    os.mkdir(mnt)
    dev, mounted = None, False
    try:
        with open(image, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        # Direct I/O to the backing file: the page cache holds the benchmark
        # files once, not twice.
        dev = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", image],
                             check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
        subprocess.run(["mount", dev, mnt], check=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
        if dev:
            subprocess.run(["losetup", "--detach", dev], check=False)
        shutil.rmtree(base, ignore_errors=True)


def mount_options(path):
    """Type and options of the mount that holds path."""
    path, best = os.path.realpath(path), ("", "?")
    for line in open("/proc/mounts"):
        _, mnt, fstype, opts = line.split()[:4]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, f"{fstype} {opts}")
    return best[1]


def run(args):
    print(f"file system of {args.dir}: {mount_options(args.dir)}", flush=True)

    size = parse_size(args.size)
    min_hole = parse_size(args.min_hole)
    scanner = os.path.join(args.build, "bench", "scan-bench")
    if not os.access(scanner, os.X_OK):
        sys.exit(f"{scanner} not found: build first (ninja -C {args.build} bench/scan-bench)")
    for tool in ("fallocate", "cat", "dd", "cmp"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")

    work = tempfile.mkdtemp(prefix="bench-scan-", dir=args.dir)
    rounds = []
    try:
        orig = os.path.join(work, "orig.img")
        a, b = os.path.join(work, "scan.img"), os.path.join(work, "dig.img")
        print(f"generating {size / GiB:.2f} GiB in {work} ...", flush=True)
        probs = probs_for_shares([float(x) for x in args.mix.split(",")]) if args.mix else DEFAULT_PROBS
        counts = generate(orig, size, args.seed, probs)
        print("layout: " + ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in counts.items()), flush=True)
        for i in range(args.rounds):
            r = one_round(orig, a, b, scanner, min_hole)
            print(f"round {i + 1} (wall/cpu s): scan {r['scan']:.3f}/{r['cpu']['scan']:.3f}, "
                  f"dig-holes {r['dig']:.3f}/{r['cpu']['dig']:.3f}, cat {r['cat']:.3f}/{r['cpu']['cat']:.3f}, "
                  f"dd {r['dd']:.3f}/{r['cpu']['dd']:.3f}; load {os.getloadavg()[0]:.1f}", flush=True)
            rounds.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(r[k] for r in rounds) for k in ("cat", "dd", "scan", "dig")}
    cpu = {k: min(r["cpu"][k] for r in rounds) for k in ("cat", "dd", "scan", "dig")}
    last = rounds[-1]
    t_scan, t_dig, t_cat, t_dd = best["scan"], best["dig"], best["cat"], best["dd"]
    rec_scan, rec_dig = last["rec_scan"], last["rec_dig"]

    def rate(t):
        return size / t / MiB

    # The machine may be busy: each round's contenders ran back to back, so
    # per-round ratios are steadier than ratios of best times.
    ratios = sorted(r["dig"] / r["scan"] for r in rounds)
    shares = sorted(min(r["cat"], r["dd"]) / r["scan"] for r in rounds)
    ratio, read_share = ratios[len(ratios) // 2], shares[len(shares) // 2]
    rec_diff = (rec_scan - rec_dig) / rec_dig if rec_dig else 0.0
    print()
    print(f"best of {len(rounds)} rounds, page cache warm, {size / GiB:.2f} GiB file, "
          f"in {args.dir}")
    print(f"{'':24}{'wall s':>10}{'MiB/s':>10}{'cpu s':>10}{'reclaimed MiB':>16}")
    print(f"{'scan (min_hole ' + args.min_hole + ')':24}{t_scan:10.3f}{rate(t_scan):10.0f}{cpu['scan']:10.3f}"
          f"{rec_scan / MiB:16.1f}")
    print(f"{'fallocate --dig-holes':24}{t_dig:10.3f}{rate(t_dig):10.0f}{cpu['dig']:10.3f}{rec_dig / MiB:16.1f}")
    print(f"{'cat > /dev/null':24}{t_cat:10.3f}{rate(t_cat):10.0f}{cpu['cat']:10.3f}{'':>16}")
    print(f"{'dd bs=1M':24}{t_dd:10.3f}{rate(t_dd):10.0f}{cpu['dd']:10.3f}{'':>16}")
    print()
    print(f"scan counted {last['scan_json']['punched'] / MiB:.1f} MiB punched, "
          f"read {last['scan_json']['read'] / MiB:.1f} MiB")
    print(f"per round, dig-holes time / scan time: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"scan rate / plain read rate: {', '.join(f'{x:.2f}' for x in shares)}")
    print(f"speed-up over dig-holes (median round): {ratio:.2f}x (target >= 3x) {'OK' if ratio >= 3 else 'MISSED'}")
    print(f"scan rate / plain read rate (median round): {read_share:.2f} (target >= 0.5) "
          f"{'OK' if read_share >= 0.5 else 'MISSED'}")
    print(f"reclaimed vs dig-holes: {rec_diff * 100:+.2f}% (target within 2%) "
          f"{'OK' if abs(rec_diff) <= 0.02 else 'MISSED'}")
    return 0 if ratio >= 3 and read_share >= 0.5 and abs(rec_diff) <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
