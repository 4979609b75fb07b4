#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark of issue 3: vhdreclaimd managing 1,000 images.

Measures, on qemu-img-made VHDX images in a temporary directory:
  - the daemon's RSS once every image has had its first pass,
  - idle wake-ups: context switches of all its threads over an idle period
    (/proc/PID/task/*/status), reported per minute (target: 0 besides timers),
  - ListDisks latency for all images: a raw D-Bus client already connected
    (the daemon's own cost), `busctl call` end to end, and
    `vhdreclaimctl status --json` when it is built (target < 100 ms).

Usage: bench/bench-daemon.py [--images N] [--idle-seconds S] [--json]
       (VHDRECLAIMD and optionally VHDRECLAIMCTL name the binaries; by default
       the ones in build/.)"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import daemonlib  # noqa: E402
from daemonlib import Daemon, config, make_vhdx  # noqa: E402
from test_control_busctl import authenticate, dbus_call, read_message  # noqa: E402


def context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raw_list_disks_latency(sock_path, rounds):
    """Milliseconds per ListDisks call on one connection, Hello done beforehand."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    authenticate(s)
    s.sendall(b"BEGIN\r\n" + dbus_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                                       dest="org.freedesktop.DBus"))
    buf = b""
    mtype, serial, _, buf = read_message(s, buf)
    times = []
    size = 0
    for i in range(rounds):
        t0 = time.perf_counter()
        s.sendall(dbus_call(10 + i, "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1", "ListDisks",
                            sig="as", body=b"\0\0\0\0"))
        while True:
            mtype, serial, body, buf = read_message(s, buf)
            if mtype == 2 and serial == 10 + i:
                break
        times.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    s.close()
    return times, size


def timed(cmd, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def summary(times):
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = os.path.abspath(os.path.join(HERE, ".."))
    daemonlib.VHDRECLAIMD = os.environ.get("VHDRECLAIMD", os.path.join(root, "build", "daemon", "vhdreclaimd"))
    ctl = os.environ.get("VHDRECLAIMCTL", os.path.join(os.path.dirname(os.path.dirname(daemonlib.VHDRECLAIMD)),
                                                       "ctl", "vhdreclaimctl"))
    tmp = tempfile.mkdtemp(prefix="vhdreclaim-bench-")
    results = {"images": args.images}
    d = None
    try:
        imgdir = os.path.join(tmp, "images")
        os.mkdir(imgdir)
        proto = make_vhdx(os.path.join(tmp, "proto.vhdx"), "64M",
                          [("P", "0xab", 0, "1M"), ("P", "0", "1M", "2M")])
        disks = []
        for i in range(args.images):
            p = os.path.join(imgdir, f"img{i:04d}.vhdx")
            shutil.copyfile(proto, p)
            disks.append((f"img{i:04d}", p))
        # Daily passes; the first one of each image at start, then quiet.
        d = Daemon(tmp, config(tmp, disks, reclaim={"interval": "1d", "idleDelay": "10m"}))
        t0 = time.monotonic()
        d.start()
        results["startup_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        daemonlib.wait_for(lambda: all(x["passes"] >= 1 for x in d.disks().values()), 600, 0.5,
                           what="every image's first pass")
        results["first_passes_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1)
        results["rss_kib"] = rss_kib(d.proc.pid)

        c0 = context_switches(d.proc.pid)
        time.sleep(args.idle_seconds)
        c1 = context_switches(d.proc.pid)
        results["idle_context_switches"] = c1 - c0
        results["idle_wakeups_per_minute"] = round((c1 - c0) * 60 / args.idle_seconds, 1)

        times, size = raw_list_disks_latency(d.sock, 20)
        results["listdisks_raw"] = summary(times)
        results["listdisks_reply_bytes"] = size
        results["listdisks_busctl"] = summary(timed(
            ["busctl", f"--address=unix:path={d.sock}", "--json=short", "call", "org.vhdreclaim",
             "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1", "ListDisks", "as", "0"], 10))
        if os.access(ctl, os.X_OK):
            try:
                results["ctl_status_json"] = summary(timed([ctl, "--socket", d.sock, "--json", "status"], 10))
            except subprocess.CalledProcessError as e:
                results["ctl_status_json"] = f"failed: {e.stderr.decode().strip()[:200]}"
        results["rss_kib_after_calls"] = rss_kib(d.proc.pid)
        d.stop()
    finally:
        if d and d.alive():
            d.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(results))
    else:
        for k, v in results.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
