#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A writer opens the image while `vhdreclaimd --once` runs a pass on it
(DESIGN.md, safety rule 4: the pass holds a write lease; when someone opens
the image it stops all I/O and releases it within one second, and nothing is
lost).

The image: a VHDX whose first 24 MiB of guest data alternate 4 KiB of data
and 4 KiB of zeros, followed by zero blocks, all allocated (qemu-img convert
-S 0), so the pass spends about a second punching thousands of small zero
runs (--min-hole=4K). Each round copies it, starts a pass, and after a random
delay within the pass's duration a plain writer (this script) opens the file
O_RDWR, timing how long open() blocks, then keeps writing 4 KiB patterns,
unique to the round and offset, into zero runs inside present blocks (exactly
what the pass is about to punch) for 300 ms, and closes. After the pass
exits, every pattern must read back (zero lost writes), every open must have
waited at most one second, and qemu-img check must be clean. A pass that
took the lease reports skipped-in-use; one that found the file already open
reports skipped-in-use too; one that finished first, success.

The same race runs on an NTFS image with the free tier (--discard=free):
mkntfs, files written through a read-write ntfs-3g mount and most deleted,
converted with qemu-img convert -S 0; the writer's slots are 4 KiB pieces of
clusters that $Bitmap (read with ntfscat) calls free, inside present blocks:
exactly what the free tier is about to punch. Needs FUSE (skipped without,
failed under CI).

RACE_ROUNDS (default 10) sets the rounds (half as many on NTFS); the long
run is RACE_ROUNDS=100.
Prints the worst, median and 99th-percentile wait.
"""

import os
import random
import shutil
import statistics
import subprocess
import time

import ntfstest
import oncetest
import vhdxtool
from oncetest import MiB

t = oncetest.Checker()
rng = random.Random(os.environ.get("RACE_SEED", str(time.time_ns())))
MAX_WAIT = 1.0
WRITE_FOR = 0.3


def lost_patterns(img, written):
    """Offsets of the written patterns ({offset: bytes}) that do not read back."""
    lost = []
    with open(img, "rb") as f:
        for off, data in written.items():
            f.seek(off)
            if f.read(len(data)) != data:
                lost.append(off)
    return lost


def make_image(work):
    raw = os.path.join(work, "race.raw")
    img = os.path.join(work, "race.vhdx")
    with open(raw, "wb") as f:
        f.truncate(48 * MiB)
        block = (b"\xa5" * 4096 + bytes(4096)) * (MiB // 8192)
        for i in range(24):
            os.pwrite(f.fileno(), block, i * MiB)
    oncetest.run(["qemu-img", "convert", "-S", "0", "-O", "vhdx", "-o", "block_size=1M", raw, img], check=True)
    os.unlink(raw)
    return img


def zero_slots(img):
    """File offsets of 4 KiB zero pieces inside present blocks: the odd
    pieces of the patterned blocks and every piece of the zero blocks."""
    v = vhdxtool.Vhdx.open(img)
    slots = []
    for b in v.blocks_in_state(vhdxtool.PAYLOAD_FULLY_PRESENT):
        base = v.block_file_offset(b)
        step = range(4096, MiB, 8192) if b < 24 else range(0, MiB, 4096)
        slots += [base + off for off in step]
    return slots


def make_ntfs_image(work):
    raw = os.path.join(work, "ntfs.raw")
    img = os.path.join(work, "ntfs.vhdx")
    ntfstest.mkntfs(raw, 48)
    with ntfstest.Mount(raw, os.path.join(work, "mnt")) as mnt:
        names = []
        for i in range(300):
            names.append(os.path.join(mnt, f"f{i:03d}"))
            with open(names[-1], "wb") as f:
                f.write(rng.randbytes(rng.randint(1, 32) * 4096))
        for name in names[::3] + names[1::3]:
            os.unlink(name)
    os.rmdir(os.path.join(work, "mnt"))
    bitmap = subprocess.run(["ntfscat", raw, "$Bitmap"], check=True, capture_output=True).stdout
    cluster = int(oncetest.run(["ntfsinfo", "-m", raw], check=True).stdout.split("Cluster Size:")[1].split()[0])
    oncetest.run(["qemu-img", "convert", "-S", "0", "-O", "vhdx", "-o", "block_size=1M", raw, img], check=True)
    size = os.path.getsize(raw)
    os.unlink(raw)
    free = [lcn * cluster for lcn in range(min(len(bitmap) * 8, size // cluster))
            if not bitmap[lcn // 8] & (1 << (lcn % 8))]
    return img, free


def free_slots(img, free_offsets):
    """File offsets of 4 KiB pieces of guest-free clusters in present blocks."""
    v = vhdxtool.Vhdx.open(img)
    slots = []
    for vo in free_offsets:
        b = vo // MiB
        if v.block_state(b) == vhdxtool.PAYLOAD_FULLY_PRESENT:
            slots.append(v.block_file_offset(b) + vo % MiB)
    return slots


def pattern(rnd, offset):
    head = f"round {rnd} offset {offset:#x} ".encode()
    return (head * (4096 // len(head) + 1))[:4096]


def start_pass(img, discard="safe"):
    return subprocess.Popen([oncetest.binary(), "--once", "--json", "--discard=" + discard, "--min-hole=4K", img],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pass_duration(base, work, discard):
    durations = []
    for _ in range(3):
        img = os.path.join(work, "ref.vhdx")
        oncetest.clone_sparse(base, img)
        start = time.monotonic()
        p = start_pass(img, discard)
        p.communicate()
        durations.append(time.monotonic() - start)
        os.unlink(img)
    return statistics.median(durations)


def write_while(fd, rnd, slots, seconds):
    """Writes patterns into random zero slots for `seconds`; returns {offset: bytes}."""
    written = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        off = rng.choice(slots)
        data = pattern(rnd, off)
        os.pwrite(fd, data, off)
        written[off] = data
    os.fsync(fd)
    return written


def run_round(rnd, base, slots, duration, work, stats, discard):
    img = os.path.join(work, "img.vhdx")
    oncetest.clone_sparse(base, img)
    p = start_pass(img, discard)
    time.sleep(rng.uniform(0, duration))

    t0 = time.monotonic()
    fd = os.open(img, os.O_RDWR)
    wait = time.monotonic() - t0
    try:
        written = write_while(fd, rnd, slots, WRITE_FOR)
    finally:
        os.close(fd)
    out, err = p.communicate(timeout=120)
    run = oncetest.OnceRun(subprocess.CompletedProcess(p.args, p.returncode, out, err))

    lost = lost_patterns(img, written)
    result = run.report.get("result")
    stats.append({"wait": wait, "written": len(written), "lost": len(lost), "result": result})
    t.check(not lost, f"round {rnd}: {len(written)} patterns written after open, none lost"
            + (f"; lost at {[hex(o) for o in lost[:5]]}" if lost else ""))
    t.check(wait <= MAX_WAIT, f"round {rnd}: open() waited {wait * 1000:.1f} ms (at most {MAX_WAIT * 1000:.0f} ms); "
            f"the pass: {result}")
    t.check(result in ("skipped-in-use", "success", "nothing-to-do"),
            f"round {rnd}: pass result {result} ({run.report.get('message')})")
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"round {rnd}: qemu-img check clean" + ("" if ok else f": {out}"))
    os.unlink(img)


def race(name, base, slots, discard, rounds, work):
    duration = pass_duration(base, work, discard)
    stats = []
    for rnd in range(1, rounds + 1):
        run_round(rnd, base, slots, duration, work, stats, discard)
    summarize(name, rounds, duration, stats)


def main():
    oncetest.require_tools("qemu-img")
    rounds = int(os.environ.get("RACE_ROUNDS", "10"))
    work = oncetest.workdir("test-race-")
    try:
        base = make_image(work)
        race("zero runs, --discard=safe", base, zero_slots(base), "safe", rounds, work)
        os.unlink(base)
        reason = ntfstest.fuse_problem() or (None if shutil.which("ntfscat") else "ntfscat is missing")
        if reason:
            t.check(not oncetest.in_ci(), "NTFS race: " + reason)
            print("skipping the NTFS race: " + reason)
        else:
            base, free = make_ntfs_image(work)
            slots = free_slots(base, free)
            t.check(len(slots) > 1000, f"NTFS image: {len(slots)} free 4 KiB pieces in present blocks")
            race("NTFS free space, --discard=free", base, slots, "free", max(3, rounds // 2), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


def summarize(name, rounds, duration, stats):
    waits = sorted(s["wait"] for s in stats)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    results = {}
    for s in stats:
        results[s["result"]] = results.get(s["result"], 0) + 1
    print(f"\nRACE SUMMARY ({name}): {rounds} rounds, whole pass {duration * 1000:.0f} ms; open() wait: worst "
          f"{waits[-1] * 1000:.1f} ms, median {statistics.median(waits) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
          f"{sum(s['written'] for s in stats)} patterns written, {sum(s['lost'] for s in stats)} lost; "
          f"pass results: {results}")


if __name__ == "__main__":
    main()
