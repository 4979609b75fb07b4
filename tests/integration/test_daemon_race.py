#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A writer opens the image while the daemon runs a pass on it (issue 6;
DESIGN.md safety rule 4: the pass holds a write lease, and when someone
opens the image it stops all I/O and releases it within one second; the
opener proceeds and nothing is lost).

test_race.py does this for `vhdreclaimd --once`; this is the same race
through the daemon, with test_race's image, slots and patterns reused: a
VHDX whose first 24 MiB alternate 4 KiB of data and 4 KiB of zeros followed
by zero blocks, all allocated, so a pass (minHole 4K) punches thousands of
zero runs. Each round puts a fresh copy in place, asks the daemon for a pass
(`vhdreclaimctl --json reclaim DISK --wait`, in the background), and after a
random delay within a whole pass's duration opens the image O_RDWR, timing
how long open() blocks, writes 4 KiB patterns unique to the round into zero
runs of present blocks (what the pass is about to punch) for 300 ms, fsyncs
and closes. When the job has ended: every pattern reads back, open() waited
at most one second, the job ended in skipped-in-use, success or
nothing-to-do, qemu-img check is clean, and the daemon is alive and idle.

RACE_ROUNDS (default 10) sets the rounds; the long run is RACE_ROUNDS=100.
Prints the worst, median and 99th-percentile wait and the job results.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import oncetest
import test_race
from daemonlib import Daemon, config, require_tools, skip
from test_daemon_kill import DELETERS, replace_image

t = test_race.t
rng = test_race.rng
VHDRECLAIMCTL = os.environ.get("VHDRECLAIMCTL", "")
MAX_WAIT = 1.0
WRITE_FOR = 0.3


def ctl(d, *args, timeout=120):
    return subprocess.run([VHDRECLAIMCTL, "--socket", d.sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def start_pass(d):
    return subprocess.Popen([VHDRECLAIMCTL, "--socket", d.sock, "--json", "reclaim", "r", "--wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def job_result(p):
    out, err = p.communicate(timeout=120)
    try:
        jobs = json.loads(out)
        return jobs[0].get("result"), jobs[0].get("message"), p.returncode
    except (ValueError, IndexError, AttributeError):
        return None, f"{out!r} {err!r}", p.returncode


def pass_duration(d, base, img):
    durations = []
    for _ in range(2):
        replace_image(base, img)
        start = time.monotonic()
        result, message, rc = job_result(start_pass(d))
        durations.append(time.monotonic() - start)
        t.check(result == "success", f"reference pass through the daemon: {result} ({message})")
    return statistics.mean(durations)


def run_round(rnd, d, base, img, slots, duration, stats):
    replace_image(base, img)
    p = start_pass(d)
    time.sleep(rng.uniform(0, duration))

    t0 = time.monotonic()
    fd = os.open(img, os.O_RDWR)
    wait = time.monotonic() - t0
    try:
        written = test_race.write_while(fd, rnd, slots, WRITE_FOR)
    finally:
        os.close(fd)
    result, message, rc = job_result(p)

    lost = test_race.lost_patterns(img, written)
    stats.append({"wait": wait, "written": len(written), "lost": len(lost), "result": result})
    t.check(not lost, f"round {rnd}: {len(written)} patterns written after open, none lost"
            + (f"; lost at {[hex(o) for o in lost[:5]]}" if lost else ""))
    t.check(wait <= MAX_WAIT, f"round {rnd}: open() waited {wait * 1000:.1f} ms (at most {MAX_WAIT * 1000:.0f} ms); "
            f"the job: {result}")
    t.check(result in ("skipped-in-use", "success", "nothing-to-do"),
            f"round {rnd}: job result {result} ({message}, exit {rc})")
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"round {rnd}: qemu-img check clean" + ("" if ok else f": {out}"))
    t.check(d.alive(), f"round {rnd}: the daemon is alive")


def main():
    oncetest.require_tools("qemu-img")
    require_tools()
    if not VHDRECLAIMCTL or not os.access(VHDRECLAIMCTL, os.X_OK):
        skip("VHDRECLAIMCTL is not set to the built vhdreclaimctl")
    rounds = int(os.environ.get("RACE_ROUNDS", "10"))
    work = oncetest.workdir("test-daemon-race-")
    os.chmod(work, 0o755)
    d = None
    try:
        base = test_race.make_image(work)
        slots = test_race.zero_slots(base)
        img = os.path.join(work, "disk.vhdx")
        oncetest.clone_sparse(base, img)
        dtmp = os.path.join(work, "daemon")
        os.mkdir(dtmp)
        d = Daemon(dtmp, config(dtmp, [("r", img)], reclaim={"discard": "safe", "minHole": "4K"})).start()
        duration = pass_duration(d, base, img)
        stats = []
        for rnd in range(1, rounds + 1):
            run_round(rnd, d, base, img, slots, duration, stats)
        d.stop()
        waits = sorted(s["wait"] for s in stats)
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        results = {}
        for s in stats:
            results[s["result"]] = results.get(s["result"], 0) + 1
        print(f"\nDAEMON RACE SUMMARY: {rounds} rounds, whole pass {duration * 1000:.0f} ms; open() wait: worst "
              f"{waits[-1] * 1000:.1f} ms, median {statistics.median(waits) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
              f"{sum(s['written'] for s in stats)} patterns written, {sum(s['lost'] for s in stats)} lost; "
              f"job results: {results}")
    except Exception as e:  # noqa: BLE001 - report and fail
        t.check(False, f"{type(e).__name__}: {e}")
    finally:
        if d and d.alive():
            d.proc.kill()
            d.proc.wait()
        for deleter in DELETERS:
            deleter.join()
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    sys.exit(main())
