#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL `vhdreclaimd --once` at random moments of each tier; after every
kill the image must be valid and nothing lost (DESIGN.md, safety rule 5).

Tiers and images:
- safe (stale + zero): a VHDX made by qemu-img convert -S 0 from a raw disk
  whose first 24 MiB alternate 4 KiB of data and 4 KiB of zeros (thousands of
  small zero runs, punched one by one with --min-hole=4K) followed by zeros,
  with eight zero blocks then marked NOT_PRESENT (stale space).
- ntfs (the free tier on NTFS): mkntfs, 600 files of 4-32 KiB written
  through a read-write ntfs-3g mount, every other one deleted, converted to
  VHDX; checked with ntfsfix -n and a read-only ntfs-3g mount (every file
  identical). Needs FUSE: without it the tier is skipped (failed under CI).
- free (stale + zero + free): ext4 made by mkfs.ext4 -d from 2000 files of
  4-32 KiB, every other one deleted with debugfs, converted with qemu-img
  convert -O vhdx: the freed blocks still hold the deleted data, so the free
  tier punches ~1000 ranges after renewing DataWriteGuid with the two-step
  header update.

A reference pass measures how long a whole pass takes (T); each round
copies the image, starts a pass, kills it with SIGKILL after a uniformly
random delay in [0, T], and checks:
- qemu-img check clean;
- safe: qemu-img compare identical to the copy made before, and both headers
  byte-identical (the safe tiers never write them);
- free: on a raw conversion, e2fsck -fn clean and every remaining file
  identical; both headers valid, or the old one still current; and if any
  guest byte changed (free space punched), the current header carries a new
  DataWriteGuid;
- a pass run to completion afterwards succeeds, and the checks hold again.

Where each kill landed is recorded as the share of the pass's reclaim done
when it hit (st_blocks), and for the free tier which header update steps were
durable; a summary is printed per tier.

KILL_ROUNDS (default 5) sets the rounds per tier; KILL_TIERS (default "safe
free ntfs") the tiers. The long run is KILL_ROUNDS=100.
"""

import hashlib
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
rng = random.Random(os.environ.get("KILL_SEED", str(time.time_ns())))


# ---------------------------------------------------------------- images

def make_safe_image(work):
    raw = os.path.join(work, "safe.raw")
    img = os.path.join(work, "safe.vhdx")
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        block = (b"\xa5" * 4096 + bytes(4096)) * (MiB // 8192)
        for i in range(24):
            os.pwrite(f.fileno(), block, i * MiB)
    oncetest.run(["qemu-img", "convert", "-S", "0", "-O", "vhdx", "-o", "block_size=1M", raw, img], check=True)
    os.unlink(raw)
    # Blocks 40-47 hold zeros: marked NOT_PRESENT, they read the same and
    # their file space becomes stale.
    v = vhdxtool.Vhdx.open(img)
    for b in range(40, 48):
        vhdxtool.set_bat_entry(img, v.bat_index(b), vhdxtool.bat_entry(vhdxtool.PAYLOAD_NOT_PRESENT))
    return img, []


def make_free_image(work):
    tree = os.path.join(work, "tree")
    raw = os.path.join(work, "free.raw")
    img = os.path.join(work, "free.vhdx")
    os.mkdir(tree)
    files = {}
    for i in range(FREE_FILES):
        data = rng.randbytes(rng.randint(1, 8) * 4096)
        with open(os.path.join(tree, f"f{i:03d}"), "wb") as f:
            f.write(data)
        files[f"/f{i:03d}"] = data
    oncetest.run(["mkfs.ext4", "-q", "-F", "-d", tree, raw, "96M"], check=True)
    shutil.rmtree(tree)
    cmds = os.path.join(work, "rm.cmds")
    with open(cmds, "w") as f:
        for name in sorted(files)[::2]:
            f.write(f"rm {name}\n")
            del files[name]
    oncetest.run(["debugfs", "-w", "-f", cmds, raw], check=True)
    oncetest.run(["qemu-img", "convert", "-O", "vhdx", "-o", "block_size=1M", raw, img], check=True)
    os.unlink(raw)
    return img, files


def make_ntfs_image(work):
    raw = os.path.join(work, "ntfs.raw")
    img = os.path.join(work, "ntfs.vhdx")
    ntfstest.mkntfs(raw, 96)
    files = {}
    with ntfstest.Mount(raw, os.path.join(work, "mnt")) as mnt:
        for i in range(NTFS_FILES):
            data = rng.randbytes(rng.randint(1, 8) * 4096)
            with open(os.path.join(mnt, f"f{i:03d}"), "wb") as f:
                f.write(data)
            files[f"f{i:03d}"] = hashlib.sha256(data).hexdigest()
        for name in sorted(files)[::2]:
            os.unlink(os.path.join(mnt, name))
            del files[name]
    os.rmdir(os.path.join(work, "mnt"))
    oncetest.run(["qemu-img", "convert", "-O", "vhdx", "-o", "block_size=1M", raw, img], check=True)
    os.unlink(raw)
    return img, files


FREE_FILES = 2000
NTFS_FILES = 600

TIERS = {
    "safe": (make_safe_image, ["--discard=safe", "--min-hole=4K"]),
    "free": (make_free_image, ["--discard=free", "--min-hole=4K"]),
    "ntfs": (make_ntfs_image, ["--discard=free", "--min-hole=4K"]),
}


# ---------------------------------------------------------------- checks

def headers_raw(path):
    return [vhdxtool.read_at(path, off, vhdxtool.HEADER_SIZE) for off in vhdxtool.HEADER_OFFSETS]


def current_header(raws):
    hs = [vhdxtool.Header(i, raw) for i, raw in enumerate(raws)]
    valid = [h for h in hs if h.valid]
    return hs, (max(valid, key=lambda h: h.sequence) if valid else None)


def header_step(before, after):
    """How far the two-step header update got: 0 untouched, 1 the first
    header written, 2 both."""
    return sum(1 for a, b in zip(before, after) if a != b)


def fs_check(name, img, files, work):
    """e2fsck -fn and every file, on a raw conversion."""
    raw = os.path.join(work, "check.raw")
    oncetest.run(["qemu-img", "convert", "-O", "raw", img, raw], check=True)
    p = oncetest.run(["e2fsck", "-fn", raw])
    ok = t.check(p.returncode == 0, f"{name}: e2fsck -fn clean" + ("" if p.returncode == 0 else f": {p.stdout}"))
    out = os.path.join(work, "dump")
    os.mkdir(out)
    cmds = os.path.join(work, "dump.cmds")
    with open(cmds, "w") as f:
        for fname in files:
            f.write(f"dump {fname} {out}{fname}\n")
    oncetest.run(["debugfs", "-f", cmds, raw], check=True)
    bad = [fname for fname, data in files.items()
           if not os.path.exists(out + fname) or open(out + fname, "rb").read() != data]
    ok &= t.check(not bad, f"{name}: all {len(files)} files identical" + (f"; differ: {bad[:5]}" if bad else ""))
    shutil.rmtree(out)
    os.unlink(cmds)
    return raw, ok


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(4 * MiB), fb.read(4 * MiB)
            if x != y:
                return False
            if not x:
                return True


def ntfs_check(name, img, files, work):
    """ntfsfix -n and every file through a read-only ntfs-3g mount, on a raw
    conversion."""
    raw = os.path.join(work, "check.raw")
    oncetest.run(["qemu-img", "convert", "-O", "raw", img, raw], check=True)
    problems = ntfstest.check_volume(raw, files)
    ok = t.check(not problems, f"{name}: ntfsfix -n clean and all {len(files)} files identical"
                 + (f": {problems}" if problems else ""))
    return raw, ok


def check_image(name, tier, img, before, before_headers, files, work, before_raw):
    ok, out = oncetest.qemu_img_check(img)
    good = t.check(ok, f"{name}: qemu-img check clean" + ("" if ok else f": {out}"))
    after = headers_raw(img)
    if tier == "safe":
        ok, out = oncetest.qemu_img_compare(before, img)
        good &= t.check(ok, f"{name}: qemu-img compare identical" + ("" if ok else f": {out}"))
        good &= t.check(after == before_headers, f"{name}: both headers byte-identical")
        return good, 0
    hs, cur = current_header(after)
    _, old = current_header(before_headers)
    both_valid = all(h.valid for h in hs)
    old_current = cur is not None and cur.raw == old.raw
    good &= t.check(both_valid or old_current, f"{name}: both headers valid, or the old one current")
    raw, fs_ok = (ntfs_check if tier == "ntfs" else fs_check)(name, img, files, work)
    good &= fs_ok
    if not same_file(raw, before_raw):
        good &= t.check(cur is not None and cur.data_write_guid != old.data_write_guid,
                        f"{name}: guest bytes changed (free space), so DataWriteGuid is renewed")
    os.unlink(raw)
    return good, header_step(before_headers, after)


# ---------------------------------------------------------------- rounds

def start_pass(img, options):
    return subprocess.Popen([oncetest.binary(), "--once", "--json", *options, img],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reference(base, options, work):
    """(median duration of a whole pass, st_blocks after it)."""
    durations = []
    for _ in range(3):
        img = os.path.join(work, "ref.vhdx")
        oncetest.clone_sparse(base, img)
        start = time.monotonic()
        p = start_pass(img, options)
        out, err = p.communicate()
        durations.append(time.monotonic() - start)
        t.check(p.returncode == 0, f"reference pass exits 0 ({out.strip()} {err.strip()})")
        final = oncetest.allocated(img)
        os.unlink(img)
    return statistics.median(durations), final


def run_round(tier, n, base, options, files, work, before_raw, duration, final_alloc, landings):
    name = f"{tier} kill {n}"
    img = os.path.join(work, "img.vhdx")
    oncetest.clone_sparse(base, img)
    before_headers = headers_raw(img)
    alloc0 = oncetest.allocated(img)

    delay = rng.uniform(0, duration)
    p = start_pass(img, options)
    time.sleep(delay)
    finished = p.poll() is not None
    if not finished:
        p.kill()
    p.communicate()
    done = (alloc0 - oncetest.allocated(img)) / max(1, alloc0 - final_alloc)

    good, step = check_image(name, tier, img, base, before_headers, files, work, before_raw)
    landings.append({"delay": delay, "finished": finished, "done": done, "step": step, "good": good})

    # The next pass completes from wherever this one stopped.
    run = oncetest.run_once(img, *options)
    t.check(run.rc == 0 and run.report.get("result") in ("success", "nothing-to-do"),
            f"{name}: the next pass completes ({run.report.get('result')}: {run.report.get('message')})")
    check_image(name + ", after the next pass", tier, img, base, before_headers, files, work, before_raw)
    os.unlink(img)


def summarize(tier, rounds, duration, landings):
    killed = [l for l in landings if not l["finished"]]
    bins = [0] * 11
    for l in killed:
        bins[min(10, int(max(0.0, l["done"]) * 10))] += 1
    hist = ", ".join(f"{i * 10}-{i * 10 + 9}%: {c}" for i, c in enumerate(bins[:10]) if c)
    if bins[10]:
        hist += f", all reclaimed: {bins[10]}"
    print(f"\nKILL SUMMARY {tier}: {rounds} rounds, whole pass {duration * 1000:.0f} ms, "
          f"{len(killed)} killed mid-pass, {rounds - len(killed)} finished before the kill; "
          f"{sum(1 for l in landings if l['good'])} of {rounds} images valid with nothing lost")
    print(f"  reclaim done when killed: {hist or 'n/a'}")
    if tier == "free":
        steps = [sum(1 for l in killed if l["step"] == s) for s in (0, 1, 2)]
        print(f"  header update when killed: untouched {steps[0]}, first header written {steps[1]}, both {steps[2]}")
    delays = ", ".join("%.0f" % (l["delay"] * 1000) for l in landings[:20])
    print(f"  delays (ms): {delays}{' ...' if rounds > 20 else ''}")


def run_tier(tier, rounds, work):
    make, options = TIERS[tier]
    base, files = make(work)
    before_raw = None
    if tier in ("free", "ntfs"):
        before_raw = os.path.join(work, "before.raw")
        oncetest.run(["qemu-img", "convert", "-O", "raw", base, before_raw], check=True)
        _, ok = (ntfs_check if tier == "ntfs" else fs_check)(f"{tier} image before any pass", base, files, work)
        if not ok:
            return
    duration, final_alloc = reference(base, options, work)
    t.check(oncetest.allocated(base) > final_alloc, f"{tier}: a whole pass reclaims space "
            f"({oncetest.allocated(base)} -> {final_alloc} bytes allocated)")
    landings = []
    for n in range(1, rounds + 1):
        run_round(tier, n, base, options, files, work, before_raw, duration, final_alloc, landings)
    summarize(tier, rounds, duration, landings)
    os.unlink(base)
    if before_raw:
        os.unlink(before_raw)


def main():
    oncetest.require_tools("qemu-img", "qemu-io", "mkfs.ext4", "debugfs", "e2fsck")
    rounds = int(os.environ.get("KILL_ROUNDS", "5"))
    tiers = os.environ.get("KILL_TIERS", "safe free ntfs").split()
    if "ntfs" in tiers:
        reason = ntfstest.fuse_problem()
        if reason:
            t.check(not oncetest.in_ci(), "ntfs tier: " + reason)
            print("skipping the ntfs tier: " + reason)
            tiers.remove("ntfs")
    work = oncetest.workdir("test-kill-")
    try:
        for tier in tiers:
            run_tier(tier, rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
