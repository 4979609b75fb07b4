#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL the daemon at random moments of its passes, every tier (issue 6,
DESIGN.md safety rule 5), and restart it on the same state directory.

The images and the checks after a kill are test_kill.py's (the one-shot
kill test), reused: safe tier, a VHDX with thousands of small zero runs and
stale blocks (--min-hole 4K); free tier, ext4 from mkfs.ext4 -d with every
other file deleted by debugfs, converted to VHDX by qemu-img. After each kill:
qemu-img check clean; safe: qemu-img compare identical to the copy made
before and both headers byte-identical; free: e2fsck -fn clean, every file
identical, both headers valid or the old one current (and a new
DataWriteGuid when free space was punched).

Each round: a fresh copy of the image replaces the disk's file, the running
daemon is asked for a pass (`vhdreclaimctl reclaim DISK`), and SIGKILLed
after a random delay within the time a whole pass takes (measured first,
from the request to the job's end; narrowed by 10% whenever a pass ends
before its kill, so that the kills land mid-pass). Then the daemon is restarted on the same
configuration, socket and state directory: it must start (no state file
malformed or unreadable in its log), report the disk with the totals it had
saved, answer `history`, and complete the next pass (`reclaim --wait`:
success or nothing-to-do), after which the checks hold again.

KILL_ROUNDS (default 5) sets the kills that must land mid-pass per tier
(at most twice as many rounds are run); KILL_TIERS (default "safe
free") the tiers. The long run is KILL_ROUNDS=100.
"""

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import oncetest
import test_kill
from daemonlib import Daemon, config, require_tools, skip

t = test_kill.t
rng = random.Random(os.environ.get("KILL_SEED", str(time.time_ns())))
VHDRECLAIMCTL = os.environ.get("VHDRECLAIMCTL", "")
DELETERS = []
STATE_PROBLEMS = ("state file is malformed", "cannot read its state", "trim.state is malformed")


def ctl(d, *args, timeout=120):
    return subprocess.run([VHDRECLAIMCTL, "--socket", d.sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def disk_status(d):
    p = ctl(d, "--json", "status", "k")
    if p.returncode != 0:
        raise AssertionError(f"status: {p.returncode} {p.stderr}")
    return json.loads(p.stdout)[0]


def replace_image(base, img):
    """A fresh copy of the base image, renamed over the disk's file. The old
    file, punched into thousands of extents, is freed in the background:
    freeing it takes the host file system seconds."""
    tmp = img + ".new"
    oncetest.clone_sparse(base, tmp)
    old = None
    if os.path.exists(img):
        old = f"{img}.old{time.monotonic_ns()}"
        os.link(img, old)
    os.rename(tmp, img)
    if old:
        deleter = threading.Thread(target=os.unlink, args=(old,))
        deleter.start()
        DELETERS.append(deleter)


def measure(d, base, img):
    """The time a whole pass takes, as the daemon's history records it (the
    median of two, after a first pass that warms the page cache), and the
    allocation a whole pass leaves."""
    durations = []
    for i in range(3):
        replace_image(base, img)
        p = ctl(d, "reclaim", "k", "--wait")
        t.check(p.returncode == 0, f"reference pass through the daemon: exit {p.returncode} {p.stderr.strip()}")
        h = json.loads(ctl(d, "--json", "history", "k").stdout)
        if i:
            durations.append(h[-1]["duration_usec"] / 1e6)
    return statistics.median(durations), oncetest.allocated(img)


def restart(d, name):
    """Starts the daemon again on its state directory; checks the state it reads."""
    log_before = len(d.read_log())
    d.start()
    new_log = d.read_log()[log_before:]
    bad = [p for p in STATE_PROBLEMS if p in new_log]
    t.check(not bad, f"{name}: the restarted daemon reads its state files" + (f": {new_log[-800:]}" if bad else ""))
    p = ctl(d, "history", "k")
    t.check(p.returncode == 0, f"{name}: history answers after the restart ({p.stderr.strip()})")
    return disk_status(d)


def run_round(tier, n, d, base, files, work, before_raw, duration, final_alloc, landings, totals):
    name = f"daemon {tier} kill {n}"
    img = d.image
    replace_image(base, img)
    before_headers = test_kill.headers_raw(img)
    alloc0 = oncetest.allocated(img)

    delay = rng.uniform(0, duration)
    start = time.monotonic()
    p = ctl(d, "reclaim", "k")
    t.check(p.returncode == 0, f"{name}: reclaim request accepted ({p.stderr.strip()})")
    time.sleep(max(0.0, delay - (time.monotonic() - start)))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.logf.close()
    d.check_sanitizers()
    done = (alloc0 - oncetest.allocated(img)) / max(1, alloc0 - final_alloc)

    good, step = test_kill.check_image(name, tier, img, base, before_headers, files, work, before_raw)

    st = restart(d, name)
    # A pass that ended before the kill saved its state: the restarted daemon counts it.
    finished = st["passes"] > totals["passes"]
    landings.append({"delay": delay, "finished": finished, "done": done, "step": step, "good": good})
    t.check(st["reclaimed_total"] >= totals["reclaimed_total"] and st["passes"] >= totals["passes"],
            f"{name}: saved totals kept (reclaimed {totals['reclaimed_total']} -> {st['reclaimed_total']}, "
            f"passes {totals['passes']} -> {st['passes']})")
    p = ctl(d, "--json", "reclaim", "k", "--wait")
    t.check(p.returncode == 0, f"{name}: the next pass completes (exit {p.returncode}: {p.stdout.strip()[-300:]} "
            f"{p.stderr.strip()})")
    st = disk_status(d)
    t.check(st["last_result"] in ("success", "nothing-to-do"), f"{name}: the next pass: {st['last_result']} "
            f"({st.get('last_message')})")
    totals.update(reclaimed_total=st["reclaimed_total"], passes=st["passes"])
    test_kill.check_image(name + ", after the next pass", tier, img, base, before_headers, files, work, before_raw)


def run_tier(tier, rounds, work):
    make, options = test_kill.TIERS[tier]
    base, files = make(work)
    before_raw = None
    if tier == "free":
        before_raw = os.path.join(work, "before.raw")
        oncetest.run(["qemu-img", "convert", "-O", "raw", base, before_raw], check=True)
    dtmp = os.path.join(work, "daemon-" + tier)
    os.mkdir(dtmp)
    img = os.path.join(work, f"{tier}-disk.vhdx")
    oncetest.clone_sparse(base, img)
    d = Daemon(dtmp, config(dtmp, [("k", img)], reclaim={"discard": tier, "minHole": "4K"}))
    d.image = img
    d.start()
    try:
        duration, final_alloc = measure(d, base, img)
        t.check(oncetest.allocated(base) > final_alloc, f"{tier}: a whole pass through the daemon reclaims space "
                f"({oncetest.allocated(base)} -> {final_alloc} bytes allocated)")
        st = disk_status(d)
        totals = {"reclaimed_total": st["reclaimed_total"], "passes": st["passes"]}
        landings = []
        window = duration
        # Rounds until `rounds` kills landed mid-pass (at most twice as many
        # rounds): a pass that ended before its kill narrows the window.
        n = 0
        while sum(1 for l in landings if not l["finished"]) < rounds and n < 2 * rounds:
            n += 1
            run_round(tier, n, d, base, files, work, before_raw, window, final_alloc, landings, totals)
            if landings[-1]["finished"]:
                window *= 0.9
        killed = sum(1 for l in landings if not l["finished"])
        t.check(killed >= max(1, rounds // 2), f"{tier}: {killed} kills landed mid-pass (of {n} rounds)")
        print(f"\nDAEMON KILL SUMMARY {tier} (SIGKILL of vhdreclaimd mid-pass, restarted on its state; "
              f"kill window {duration * 1000:.0f} ms narrowed to {window * 1000:.0f} ms):")
        test_kill.summarize(tier, n, duration, landings)
        d.stop()
    finally:
        if d.alive():
            d.proc.kill()
            d.proc.wait()
    for f in (base, img, before_raw):
        if f:
            os.unlink(f)


def main():
    oncetest.require_tools("qemu-img", "qemu-io", "mkfs.ext4", "debugfs", "e2fsck")
    require_tools()
    if not VHDRECLAIMCTL or not os.access(VHDRECLAIMCTL, os.X_OK):
        skip("VHDRECLAIMCTL is not set to the built vhdreclaimctl")
    rounds = int(os.environ.get("KILL_ROUNDS", "5"))
    tiers = os.environ.get("KILL_TIERS", "safe free").split()
    work = oncetest.workdir("test-daemon-kill-")
    os.chmod(work, 0o755)
    try:
        for tier in tiers:
            run_tier(tier, rounds, work)
    except Exception as e:  # noqa: BLE001 - report and fail
        t.check(False, f"{type(e).__name__}: {e}")
    finally:
        for deleter in DELETERS:
            deleter.join()
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    sys.exit(main())
