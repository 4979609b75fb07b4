#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark of issue 12, "work that grows with what changed": vhdreclaimd
managing 10,000 images in two watched folders.

The images are sparse files, half VHDX (qemu-img create, a little data
written with qemu-io, then cloned extent by extent) and half raw (.img:
truncate plus a few written pieces): 10 GiB virtual each, 100 TiB in all,
a few GB really allocated. The daemon runs with a short interval so that
periodic cycles come quickly; every cycle goes through the same periodic
path (spread slots, idleDelay, the unchanged shortcut) as a daily one.

  cycle 1: the first passes (full ones)
  cycle 2: after 1% of the images were written (qemu-io, or a write to a raw one)
  cycle 3: nothing changed

For each cycle: wall time (from the cycle's first pass to every image having
had it), bytes the daemon read (read_bytes of /proc/PID/io, with the images'
pages dropped from the page cache before the cycle), its CPU time, passes
run in full and passes that ended as "unchanged since". Then the daemon's
RSS, `vhdreclaimctl --json status` latency, startup time to READY=1 (cold,
and restarted on 10,000 state files), and idle wake-ups (context switches
of all threads) over an idle period with a daily interval.

Usage: bench/bench-scale.py [--images N] [--interval S] [--idle-seconds S] [--dir DIR] [--json]
Needs about 15 GB free in DIR (default /var/tmp)."""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import daemonlib  # noqa: E402
from daemonlib import Daemon, config  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


class NotifyListener:
    """The sd_notify socket: when READY=1 came."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.ready = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            if self.ready is None and "READY=1" in data.decode(errors="replace").split("\n"):
                self.ready = time.monotonic()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def proc_io(pid):
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def extents(path):
    """The data pieces of a sparse file: [(offset, bytes)]."""
    out = []
    with open(path, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, os.pread(fd, end - start, start)))
            pos = end
    return out


def clone(template, path):
    size, pieces = template
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, data in pieces:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def make_templates(tmp):
    out = []
    for i, (virt, writes) in enumerate([(10, ["0 256k", "3G 128k"]), (8, ["0 128k"]), (12, ["1G 256k", "11G 64k"])]):
        p = os.path.join(tmp, f"t{i}.vhdx")
        subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", p, f"{virt}G"], check=True)
        subprocess.run(["qemu-io", "-f", "vhdx"] + sum((["-c", f"write -q -P 0x{0x31 + i:x} {w}"]
                                                      for w in writes), []) + [p], check=True, capture_output=True)
        out.append((os.path.getsize(p), extents(p)))
    for i, virt in enumerate((10, 10)):
        pieces = [(k * GiB + 4096 * i, bytes([0x41 + k]) * (128 * 1024)) for k in range(3)]
        pieces.append((5 * GiB, b"\0" * (256 * 1024)))      # zeros: reclaimable
        out.append((virt * GiB, pieces))
    return out


def drop_cache(paths):
    os.sync()   # DONTNEED leaves dirty pages
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def status_json(ctl, sock):
    out = subprocess.run([ctl, "--socket", sock, "--json", "status"], check=True, capture_output=True).stdout
    return json.loads(out)


def log_size(d):
    return os.path.getsize(d.log)


def pass_lines(d, offset):
    """The daemon's pass-end log lines ("NAME: RESULT, reclaimed N bytes[: message]") since offset."""
    with open(d.log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if ", reclaimed " in line and " bytes" in line]


def run_cycle(d, ctl, t_start, log_offset, timeout):
    """A cycle: until every image has had a pass that started after t_start
    (realtime usec). Passes counted from the daemon's log: full ones and
    those that ended as unchanged."""
    pid = d.proc.pid
    io0, cpu0, t0 = proc_io(pid), cpu_seconds(pid), time.monotonic()
    end = t0 + timeout
    while True:
        disks = status_json(ctl, d.sock)
        if all(x["last_pass"] >= t_start for x in disks):
            break
        if time.monotonic() > end:
            behind = [x["name"] for x in disks if x["last_pass"] < t_start]
            raise SystemExit(f"cycle: {len(behind)} images still without a pass, e.g. {behind[:3]}")
        time.sleep(1)
    io1, cpu1 = proc_io(pid), cpu_seconds(pid)
    lines = pass_lines(d, log_offset)
    unchanged = sum(1 for line in lines if "unchanged since the pass of" in line)
    first = min(x["last_pass"] for x in disks)
    last = max(x["last_pass"] for x in disks)
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "pass_starts_spread_s": round((last - first) / 1e6, 1),
        "read_bytes": io1["read_bytes"] - io0["read_bytes"],
        "rchar": io1["rchar"] - io0["rchar"],
        "cpu_s": round(cpu1 - cpu0, 2),
        "passes_full": len(lines) - unchanged,
        "passes_unchanged": unchanged,
        "results": sorted({line.split(": ", 1)[1].split(",")[0] for line in lines if ": " in line}),
    }


def start_timed(d, tmp):
    path = os.path.join(tmp, "notify")
    if os.path.exists(path):
        os.unlink(path)
    listener = NotifyListener(path)
    t0 = time.monotonic()
    d.env = dict(d.env or os.environ, NOTIFY_SOCKET=path)
    d.start()
    end = time.monotonic() + 60
    while listener.ready is None and time.monotonic() < end:
        time.sleep(0.01)
    listener.close()
    return round(listener.ready - t0, 3) if listener.ready else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--interval", type=int, default=120, help="seconds between periodic passes of an image")
    ap.add_argument("--max-parallel", type=int, default=2, help="passes at a time (all images are on one file system)")
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = os.path.abspath(os.path.join(HERE, ".."))
    daemonlib.VHDRECLAIMD = os.environ.get("VHDRECLAIMD", os.path.join(root, "build", "daemon", "vhdreclaimd"))
    ctl = os.environ.get("VHDRECLAIMCTL", os.path.join(os.path.dirname(os.path.dirname(daemonlib.VHDRECLAIMD)),
                                                       "ctl", "vhdreclaimctl"))
    tmp = tempfile.mkdtemp(prefix="vhdreclaim-bench-scale-", dir=args.dir)
    res = {"images": args.images, "interval_s": args.interval, "max_parallel": args.max_parallel}
    d = None
    try:
        templates = make_templates(tmp)
        t0 = time.monotonic()
        dirs = [os.path.join(tmp, "profiles"), os.path.join(tmp, "vms")]
        paths = []
        for folder in dirs:
            os.mkdir(folder)
        for i in range(args.images):
            t = templates[i % len(templates)]
            ext = "vhdx" if i % len(templates) < 3 else "img"
            p = os.path.join(dirs[i % 2], f"disk{i:05d}.{ext}")
            clone(t, p)
            paths.append(p)
        res["create_s"] = round(time.monotonic() - t0, 1)
        res["virtual_tib"] = round(sum(templates[i % len(templates)][0] for i in range(args.images)) / (1 << 40), 1)
        res["allocated_gib_before"] = round(sum(os.stat(p).st_blocks * 512 for p in paths) / GiB, 2)
        time.sleep(3)   # idleDelay (2s) after their creation

        watches = "".join(f"\n[watch.w{i}]\ndir={folder}\npattern=disk*\n" for i, folder in enumerate(dirs))
        conf = config(tmp, [], reclaim={"interval": f"{args.interval}s", "randomizedDelay": "0", "idleDelay": "2s",
                                        "minReclaim": "0", "maxParallel": str(args.max_parallel)}, extra=watches)
        d = Daemon(tmp, conf)
        drop_cache(paths)
        t_daemon = time.monotonic()
        res["startup_to_ready_cold_s"] = start_timed(d, tmp)

        res["cycle1_first"] = run_cycle(d, ctl, 1, 0, 7200)
        res["cycle1_first"]["wall_s"] = round(time.monotonic() - t_daemon, 1)
        res["allocated_gib_after_first"] = round(sum(os.stat(p).st_blocks * 512 for p in paths) / GiB, 2)
        res["rss_kib"] = rss_kib(d.proc.pid)

        # 1% of the images written, VHDX ones with qemu-io, raw ones with a
        # plain write; the cycle counts from before the writes (their idle
        # passes come idleDelay after each close).
        drop_cache(paths)
        off, t = log_size(d), time.time_ns() // 1000
        io_before, cpu_before = proc_io(d.proc.pid), cpu_seconds(d.proc.pid)
        changed = paths[::200] + paths[3::200]      # 1%: half VHDX (i % 5 == 0), half raw (i % 5 == 3)
        for p in changed:
            if p.endswith(".vhdx"):
                subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -q -P 0x77 2G 64k", p], check=True)
            else:
                with open(p, "r+b") as f:
                    f.seek(2 * GiB)
                    f.write(b"\x77" * 65536)
        res["changed_images"] = len(changed)
        res["changed_vhdx"] = sum(1 for p in changed if p.endswith(".vhdx"))
        c2 = run_cycle(d, ctl, t, off, 3600)
        io_after = proc_io(d.proc.pid)
        c2["read_bytes"] = io_after["read_bytes"] - io_before["read_bytes"]
        c2["rchar"] = io_after["rchar"] - io_before["rchar"]
        c2["cpu_s"] = round(cpu_seconds(d.proc.pid) - cpu_before, 2)
        res["cycle2_after_1pct_written"] = c2

        drop_cache(paths)
        off, t = log_size(d), time.time_ns() // 1000
        res["cycle3_unchanged"] = run_cycle(d, ctl, t, off, 3600)
        res["vhdx_images"] = sum(1 for p in paths if p.endswith(".vhdx"))

        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([ctl, "--socket", d.sock, "--json", "status"], check=True, capture_output=True)
            times.append((time.perf_counter() - t) * 1000)
        res["ctl_status_json_ms_passes_running"] = {"median": round(statistics.median(times), 1), "max": round(max(times), 1)}
        res["rss_kib_end"] = rss_kib(d.proc.pid)
        d.stop()

        # Restarted on 10,000 state files, daily: startup, then idle.
        d.write_config(config(tmp, [], reclaim={"interval": "1d", "randomizedDelay": "0", "idleDelay": "2s",
                                                "minReclaim": "0"}, extra=watches))
        res["startup_to_ready_warm_s"] = start_timed(d, tmp)
        time.sleep(5)
        # Everything the restart read, from the process's start: its probes
        # open no image that is as the last pass left it.
        res["restart_read_bytes"] = proc_io(d.proc.pid)["read_bytes"]
        res["restart_cpu_s"] = round(cpu_seconds(d.proc.pid), 2)
        io0 = proc_io(d.proc.pid)
        c0 = context_switches(d.proc.pid)
        time.sleep(args.idle_seconds)
        c1 = context_switches(d.proc.pid)
        res["idle_context_switches"] = c1 - c0
        res["idle_seconds"] = args.idle_seconds
        res["idle_read_bytes"] = proc_io(d.proc.pid)["read_bytes"] - io0["read_bytes"]
        res["rss_kib_restarted"] = rss_kib(d.proc.pid)
        # The status latency at rest (no pass running or queued), after the
        # idle window so that its calls do not count as wake-ups there.
        times = []
        for _ in range(10):
            t = time.perf_counter()
            subprocess.run([ctl, "--socket", d.sock, "--json", "status"], check=True, capture_output=True)
            times.append((time.perf_counter() - t) * 1000)
        res["ctl_status_json_ms_at_rest"] = {"median": round(statistics.median(times), 1),
                                             "min": round(min(times), 1), "max": round(max(times), 1)}
        d.stop()
    finally:
        if d and d.alive():
            d.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:30} {v}")


if __name__ == "__main__":
    main()
