#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vhdreclaimctl against the real vhdreclaimd, on images made by qemu-img.

- status: for qemu-img-made VHDX and raw images, the sizes match `qemu-img
  info` and `stat`; the table has its columns, sizes as `numfmt --to=iec
  --round=up` (df -h's rounding) prints them; --json parses; busctl sees the
  same disks.
- reclaim via ctl reclaims (qemu-img compare: the guest view is unchanged),
  and status totals, history and metrics follow the measured st_blocks.
- --wait: plain progress lines when piped, a progress bar redrawn in place
  under a pseudo-terminal; --json results.
- reload with a broken configuration prints FILE:LINE and exits 1, the old
  configuration stays; a new [disk] is picked up.
- a user neither root nor in the admin group (setpriv to nobody) reads
  status and is refused reclaim with exit 1.
- errors: unknown disk (1, named), unknown job (1), usage (2), daemon not
  running (3, the socket named).

Needs root (setpriv) and qemu-img: skips (77) without them, fails in CI.
"""

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

from oncetest import Checker, skip_or_fail

MiB = 1024 * 1024

t = Checker()

DAEMON = os.environ.get("VHDRECLAIMD")
BUILD_ROOT = os.environ.get("BUILD_ROOT", "")
CTL = os.environ.get("VHDRECLAIMCTL") or os.path.join(BUILD_ROOT, "ctl", "vhdreclaimctl")

if not DAEMON or not os.access(DAEMON, os.X_OK) or not os.access(CTL, os.X_OK):
    print(f"vhdreclaimd ({DAEMON}) or vhdreclaimctl ({CTL}) not built", flush=True)
    sys.exit(1)
if os.geteuid() != 0:
    skip_or_fail("needs root (setpriv to another user)")
for tool in ("qemu-img", "setpriv", "numfmt"):
    if not shutil.which(tool):
        skip_or_fail(f"{tool} is not installed")

tmp = tempfile.mkdtemp(prefix="vhdreclaim-ctl-")
sock = os.path.join(tmp, "control.sock")
state_dir = os.path.join(tmp, "state")
conf = os.path.join(tmp, "vhdreclaim.conf")
daemon_log = os.path.join(tmp, "daemon.log")
daemon = None


# ---- images ----

def write_pattern(path, pieces):
    """pieces of (kind, MiB): "data" random bytes, "zero" zero bytes written
    (allocated, for the daemon to punch)."""
    with open(path, "wb") as f:
        for kind, n in pieces:
            for _ in range(n):
                f.write(os.urandom(MiB) if kind == "data" else bytes(MiB))


def make_images():
    raw_src = os.path.join(tmp, "src.raw")
    write_pattern(raw_src, [("data", 2), ("zero", 2)] * 8)      # 32 MiB, half zeros
    images = {}
    # -S 0: qemu-img writes the zero data too, so the VHDX blocks hold it.
    images["vhdx"] = os.path.join(tmp, "a.vhdx")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-S", "0", raw_src, images["vhdx"]],
                   check=True)
    images["raw"] = os.path.join(tmp, "b.raw")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "raw", "-S", "0", raw_src, images["raw"]],
                   check=True)
    # Paced by ioLimit, for --wait to show progress.
    for name in ("slow1", "slow2"):
        images[name] = os.path.join(tmp, name + ".raw")
        write_pattern(images[name], [("data", 4), ("zero", 4)] * 4)
    # A path that needs escaping in Prometheus labels and JSON.
    images["odd"] = os.path.join(tmp, 'we"ird\\name.raw')
    write_pattern(images["odd"], [("data", 1), ("zero", 1)])
    images["new"] = os.path.join(tmp, "new.raw")
    write_pattern(images["new"], [("data", 1), ("zero", 1)])
    os.unlink(raw_src)
    return images


def config_text(images, extra_disk=False, broken=False):
    # interval=0 at first: no periodic pass, so the daemon does not reclaim
    # every image right at start (a disk never reclaimed is due at once);
    # the reloaded configuration schedules them a week after their last pass.
    lines = [
        "[daemon]",
        f"socket={sock}",
        f"stateDir={state_dir}",
        "",
        "[reclaim]",
        "interval=" + ("1w" if extra_disk else "0"),
        "randomizedDelay=0",
        "idleDelay=1h",
        "discard=safe",
        "minReclaim=0",
    ]
    if broken:
        lines.append("ioLimit=banana")
    lines.append("")
    for name in ("vhdx", "raw", "slow1", "slow2", "odd"):
        lines += [f"[disk.{name}]", f"path={images[name]}"]
        if name.startswith("slow"):
            lines.append("ioLimit=8MB")
        lines.append("")
    if extra_disk:
        lines += ["[disk.new]", f"path={images['new']}", ""]
    return "\n".join(lines), (lines.index("ioLimit=banana") + 1 if broken else None)


def write_config(images, **kw):
    text, bad_line = config_text(images, **kw)
    with open(conf, "w") as f:
        f.write(text)
    return bad_line


# ---- running things ----

def ctl(*args, nobody=False, timeout=60, env=None):
    cmd = [CTL, "--socket", sock, *args]
    if nobody:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p


def ctl_json(*args, **kw):
    p = ctl("--json", *args, **kw)
    try:
        return p, json.loads(p.stdout)
    except json.JSONDecodeError:
        return p, None


def start_daemon():
    global daemon
    log = open(daemon_log, "ab")
    daemon = subprocess.Popen([DAEMON, "-c", conf, "--socket", sock, "--state-dir", state_dir],
                              stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            break
        # Up once it answers, and has read every image's format (on its worker threads).
        if os.path.exists(sock):
            p, disks = ctl_json("status")
            if p.returncode == 0 and all(x.get("format") != "unknown" for x in disks or []):
                return True
        time.sleep(0.1)
    return False


def stop_daemon():
    if daemon and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def stat_sizes(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def iec(n):
    """What df -h prints, from coreutils' numfmt (the same rounding up)."""
    if n < 1024:
        return str(n)
    return subprocess.run(["numfmt", "--to=iec", "--round=up", str(n)], capture_output=True, text=True,
                          check=True).stdout.strip()


def disks_by_name(disks):
    return {d["name"]: d for d in disks}


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.2)
    return None


# ---- the checks ----

STATUS_COLUMNS = ["NAME", "STATE", "VIRTUAL", "FILE", "ALLOCATED", "RECLAIMABLE", "LAST-RESULT", "RECLAIMED", "NEXT"]
DISK_FIELDS = {
    "name": str, "path": str, "origin": str, "format": str, "sparse": bool, "state": str,
    "virtual_size": int, "file_size": int, "allocated": int, "reclaimable": int, "reclaimed_last": int,
    "reclaimed_total": int, "last_result": str, "last_message": str, "last_pass": int, "next_pass": int,
    "job_done": int, "job_total": int, "passes": int,
}


def table_rows(text):
    """Lines of an aligned table, cells split on runs of two or more blanks."""
    lines = [l for l in text.splitlines() if l.strip()]
    return [re.split(r" {2,}", l.strip()) for l in lines]


def check_status_matches_peers(images):
    p, disks = ctl_json("status")
    t.equal(p.returncode, 0, "status --json exit code")
    if not t.check(isinstance(disks, list), "status --json is a JSON array"):
        return {}
    by = disks_by_name(disks)
    t.equal(sorted(by), sorted(["vhdx", "raw", "slow1", "slow2", "odd"]), "status lists the configured disks")
    for d in disks:
        t.check(all(isinstance(d.get(k), ty) for k, ty in DISK_FIELDS.items()),
                f"{d.get('name')}: every field with its type")

    for name in ("vhdx", "raw"):
        d = by.get(name, {})
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", images[name]],
                                         capture_output=True, text=True, check=True).stdout)
        size, allocated = stat_sizes(images[name])
        t.equal(d.get("format"), info["format"], f"{name}: format as qemu-img info says")
        t.equal(d.get("virtual_size"), info["virtual-size"], f"{name}: virtual size as qemu-img info says")
        t.equal(d.get("file_size"), size, f"{name}: file size as stat says")
        t.equal(d.get("allocated"), allocated, f"{name}: allocated as stat's st_blocks says")
        t.equal(d.get("path"), images[name], f"{name}: path")

    # The table: its header, and the sizes as df -h would print them.
    p = ctl("status")
    t.equal(p.returncode, 0, "status exit code")
    rows = table_rows(p.stdout)
    t.equal(rows[0] if rows else None, STATUS_COLUMNS, "status table header")
    row = next((r for r in rows if r[0] == "vhdx"), None)
    if t.check(row is not None and len(row) == len(STATUS_COLUMNS), f"status row of vhdx: {row}"):
        d = by["vhdx"]
        t.equal(row[1], "idle", "vhdx: state in words")
        t.equal(row[2:5], [iec(d["virtual_size"]), iec(d["file_size"]), iec(d["allocated"])],
                "vhdx: VIRTUAL, FILE, ALLOCATED as df -h prints them")
        t.equal(row[6], "-", "vhdx: no last result yet")
        t.equal(row[8], "-", "vhdx: no pass scheduled (interval=0)")
    # Alignment: text columns start under their header, sizes end under it.
    lines = p.stdout.splitlines()[:len(disks) + 1]
    spans = [[m.span() for m in re.finditer(r"\S+(?: \S+)*", l)] for l in lines]
    right = {"VIRTUAL", "FILE", "ALLOCATED", "RECLAIMABLE", "RECLAIMED"}
    aligned = all(len(s) == len(STATUS_COLUMNS) for s in spans)
    for i, col in enumerate(STATUS_COLUMNS):
        edge = 1 if col in right else 0
        aligned &= all(s[i][edge] == spans[0][i][edge] for s in spans if len(s) == len(STATUS_COLUMNS))
    t.check(aligned, "status table: text columns left-aligned, sizes right-aligned under their headers")
    t.check(all(l == l.rstrip() for l in p.stdout.splitlines()), "no trailing blanks")
    return by


def check_busctl(by):
    if not shutil.which("busctl"):
        t.skip("busctl not installed: the busctl cross-check")
        return
    p = subprocess.run(["busctl", f"--address=unix:path={sock}", "--json=short", "call", "org.vhdreclaim.Manager1",
                        "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1", "ListDisks", "as", "0"],
                       capture_output=True, text=True, timeout=30)
    if not t.equal(p.returncode, 0, f"busctl call ListDisks ({p.stderr.strip()})"):
        return
    data = json.loads(p.stdout)["data"][0]
    t.equal(sorted(d[0] for d in data), sorted(by), "busctl sees the disks ctl shows")


def check_reclaim(images):
    before_alloc = stat_sizes(images["vhdx"])[1]
    copy = os.path.join(tmp, "vhdx-before.vhdx")
    shutil.copyfile(images["vhdx"], copy)

    p = ctl("reclaim", "vhdx", "--wait")
    t.equal(p.returncode, 0, f"reclaim vhdx --wait exit code ({p.stderr.strip()})")
    t.check(re.search(r"^job \d+ vhdx: success, reclaimed \S+", p.stdout, re.M) is not None,
            f"reclaim --wait names the result: {p.stdout.strip()!r}")

    after_alloc = stat_sizes(images["vhdx"])[1]
    t.check(after_alloc < before_alloc, f"vhdx: st_blocks went down ({before_alloc} -> {after_alloc})")
    cmp = subprocess.run(["qemu-img", "compare", "-q", copy, images["vhdx"]], capture_output=True)
    t.equal(cmp.returncode, 0, "qemu-img compare: the guest reads the same")
    chk = subprocess.run(["qemu-img", "check", "-q", images["vhdx"]], capture_output=True)
    t.equal(chk.returncode, 0, "qemu-img check is clean")
    os.unlink(copy)

    _, disks = ctl_json("status", "vhdx")
    d = (disks or [{}])[0]
    t.equal(d.get("last_result"), "success", "status: last result")
    t.equal(d.get("passes"), 1, "status: one pass")
    t.equal(d.get("reclaimed_last"), before_alloc - after_alloc, "status: reclaimed as st_blocks measured")
    t.equal(d.get("reclaimed_total"), before_alloc - after_alloc, "status: reclaimed in total")
    t.equal(d.get("allocated"), after_alloc, "status: allocated follows")
    t.check(d.get("last_pass", 0) > 0, "status: last pass time set")

    # Without --wait: the job is listed, then runs to its end.
    p, jobs = ctl_json("reclaim", "raw")
    t.equal(p.returncode, 0, "reclaim raw --json exit code")
    t.check(isinstance(jobs, list) and len(jobs) == 1 and isinstance(jobs[0].get("job"), int),
            f"reclaim --json lists the job: {jobs}")
    raw = wait_for(lambda: next((x for x in (ctl_json("status", "raw")[1] or []) if x["passes"] == 1), None))
    t.check(raw is not None and raw["last_result"] == "success", f"raw: the queued pass ran: {raw}")

    # The human table follows.
    rows = table_rows(ctl("status").stdout)
    row = next((r for r in rows if r[0] == "vhdx"), [])
    t.equal(row[6:8] if len(row) > 7 else row, ["success", iec(before_alloc - after_alloc)],
            "status table: LAST-RESULT and RECLAIMED")
    _, disks = ctl_json("status")
    total = sum(x["reclaimed_total"] for x in disks or [])
    footer = ctl("status").stdout.splitlines()[-1]
    t.equal(footer, f"{len(disks or [])} disks, {iec(total)} reclaimed in total, "
                    f"{iec(sum(x['reclaimable'] for x in disks or []))} reclaimable.", "status footer: the totals")
    return d, raw


def check_history(vhdx, raw):
    p, entries = ctl_json("history")
    t.equal(p.returncode, 0, "history --json exit code")
    if not t.check(isinstance(entries, list), "history --json is an array"):
        return
    names = [e.get("name") for e in entries]
    t.check("vhdx" in names and "raw" in names, f"history has both passes: {names}")
    e = next((e for e in entries if e.get("name") == "vhdx"), {})
    t.equal(e.get("result"), "success", "history: result")
    t.equal(e.get("reclaimed"), vhdx.get("reclaimed_last"), "history: reclaimed as status says")
    # All eleven fields of History() arrive (the discard mode is the last).
    t.equal(e.get("discard"), "safe", "history: the pass's discard mode")
    t.check(isinstance(e.get("free_bytes"), int), f"history: free_bytes is a number: {e}")
    _, only = ctl_json("history", "vhdx")
    t.check(isinstance(only, list) and only and all(x["name"] == "vhdx" for x in only), "history DISK filters")
    p = ctl("history")
    rows = table_rows(p.stdout)
    t.equal(rows[0][:6] if rows else None, ["TIME", "DISK", "RESULT", "DISCARD", "RECLAIMED", "DURATION"],
            "history table header")


def check_metrics(images, by):
    p = ctl("metrics")
    t.equal(p.returncode, 0, "metrics exit code")
    lines = p.stdout.splitlines()
    types, samples, order_ok = {}, {}, True
    sample_re = re.compile(r'^([a-z_]+)\{disk="((?:[^"\\]|\\.)*)",path="((?:[^"\\]|\\.)*)"\} (\d+)$')
    for line in lines:
        if line.startswith("# TYPE "):
            _, _, name, ty = line.split(" ")
            types[name] = ty
        elif line.startswith("# HELP "):
            continue
        elif line.startswith("vhdreclaim_trimmed"):
            continue
        else:
            m = sample_re.match(line)
            if not t.check(m is not None, f"metrics sample syntax: {line!r}"):
                continue
            order_ok &= m.group(1) in types
            path = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(3))
            samples[(m.group(1), m.group(2))] = (path, int(m.group(4)))
    t.check(order_ok, "every sample follows its TYPE line")
    expected = {
        "vhdreclaim_virtual_size_bytes": ("gauge", "virtual_size"),
        "vhdreclaim_file_size_bytes": ("gauge", "file_size"),
        "vhdreclaim_allocated_bytes": ("gauge", "allocated"),
        "vhdreclaim_reclaimable_bytes": ("gauge", "reclaimable"),
        "vhdreclaim_reclaimed_bytes_total": ("counter", "reclaimed_total"),
        "vhdreclaim_passes_total": ("counter", "passes"),
    }
    _, disks = ctl_json("status")
    now = disks_by_name(disks or [])
    for metric, (ty, field) in expected.items():
        t.equal(types.get(metric), ty, f"{metric} TYPE")
        t.check(any(l.startswith(f"# HELP {metric} ") for l in lines), f"{metric} HELP")
        for name in ("vhdx", "odd"):
            got = samples.get((metric, name))
            t.equal(got, (images[name], now.get(name, {}).get(field)), f"{metric} of {name} (path unescaped)")
    t.check('path="' + images["odd"].replace("\\", "\\\\").replace('"', '\\"') + '"' in p.stdout,
            "a path with a quote and a backslash is escaped in the label")


def read_pty(master, proc, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out.decode(errors="replace")


def check_wait_output():
    # Piped: plain lines, at most one per second per job, no escape sequences.
    start = time.monotonic()
    p = ctl("reclaim", "slow1", "--wait")
    elapsed = time.monotonic() - start
    t.equal(p.returncode, 0, f"reclaim slow1 --wait (piped) exit code ({p.stderr.strip()})")
    progress = re.findall(r"^job \d+ slow1: \S+/\S+ +\d+% \S+/s ETA \S+$", p.stdout, re.M)
    t.check(len(progress) >= 2, f"piped: progress lines ({len(progress)} in {elapsed:.1f}s): {p.stdout!r}")
    t.check(len(progress) <= elapsed + 1, "piped: at most one progress line per second")
    t.check("\r" not in p.stdout and "\x1b" not in p.stdout, "piped: no carriage returns or escapes")
    t.check(re.search(r"^job \d+ slow1: success, reclaimed \S+$", p.stdout, re.M) is not None,
            "piped: the result line")

    # A terminal: one bar, redrawn in place.
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([CTL, "--socket", sock, "reclaim", "slow2", "--wait"], stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    out = read_pty(master, proc, 60)
    rc = proc.wait(timeout=10)
    os.close(master)
    t.equal(rc, 0, "reclaim slow2 --wait (terminal) exit code")
    bars = re.findall(r"\r(\[[#-]+\] [^\r\x1b]*)\x1b\[K", out)
    t.check(len(bars) >= 2, f"terminal: the bar is redrawn in place ({len(bars)} draws)")
    t.check(any(re.search(r"\d+% \S+/s ETA \S+ +slow2", b) for b in bars),
            f"terminal: bytes, rate and ETA on the bar: {bars[-1:]!r}")
    t.check(all(len(b) < 100 for b in bars), "terminal: the bar fits the terminal width")
    t.check(re.search(r"job \d+ slow2: success, reclaimed \S+", out) is not None, "terminal: the result line")

    # --json --wait: the results for scripts.
    p, res = ctl_json("reclaim", "--all", "--dry-run", "--wait")
    t.equal(p.returncode, 0, "reclaim --all --dry-run --wait --json exit code")
    t.check(isinstance(res, list) and len(res) == 5 and
            all(r.get("result") in ("success", "nothing-to-do") and isinstance(r.get("job"), int) for r in res),
            f"--json --wait: one result per disk: {res}")


def check_cancel_and_sparse(images):
    # A pass paced by ioLimit, cancelled while it runs.
    p, jobs = ctl_json("reclaim", "slow1", "--dry-run")
    job = (jobs or [{}])[0].get("job")
    t.check(isinstance(job, int), f"reclaim slow1 --dry-run started a job: {jobs}")
    p = ctl("cancel", str(job))
    t.equal(p.returncode, 0, f"cancel {job} exit code ({p.stderr.strip()})")
    idle = wait_for(lambda: (ctl_json("status", "slow1")[1] or [{}])[0].get("state") == "idle", timeout=10)
    t.check(bool(idle), "the cancelled job ends")

    # set-sparse false gives the image its space back; true lets it be reclaimed again.
    p = ctl("set-sparse", "odd", "false")
    t.equal(p.returncode, 0, f"set-sparse odd false exit code ({p.stderr.strip()})")
    size, allocated = stat_sizes(images["odd"])
    t.check(allocated >= size, f"odd: fully allocated again ({allocated} of {size})")
    _, disks = ctl_json("status", "odd")
    d = (disks or [{}])[0]
    t.check(d.get("sparse") is False and d.get("allocated") == allocated, f"status: odd not sparse: {d}")
    row = next((r for r in table_rows(ctl("status").stdout) if r[0] == "odd"), [])
    t.equal(row[1:2], ["watch-only"], "status: a disk that is not sparse is watch-only")
    p = ctl("set-sparse", "odd", "true")
    t.equal(p.returncode, 0, "set-sparse odd true exit code")
    t.equal((ctl_json("status", "odd")[1] or [{}])[0].get("sparse"), True, "status: odd sparse again")
    p = ctl("set-sparse", "nosuchdisk", "true")
    t.check(p.returncode == 1 and "nosuchdisk" in p.stderr, "set-sparse of an unknown disk: exit 1, named")


def check_errors():
    p = ctl("status", "nosuchdisk")
    t.equal(p.returncode, 1, "status of an unknown disk exits 1")
    t.check("nosuchdisk" in p.stderr, f"... and names it: {p.stderr.strip()!r}")
    p = ctl("reclaim", "nosuchdisk")
    t.equal(p.returncode, 1, "reclaim of an unknown disk exits 1")
    t.check("nosuchdisk" in p.stderr, "... and names it")
    p = ctl("history", "nosuchdisk")
    t.check(p.returncode == 1 and "nosuchdisk" in p.stderr, f"history of an unknown disk: exit 1, named ({p.stderr.strip()!r})")
    p = ctl("cancel", "987654321")
    t.equal(p.returncode, 1, "cancel of an unknown job exits 1")
    t.check("987654321" in p.stderr, f"... and names it: {p.stderr.strip()!r}")
    for args in (("frobnicate",), ("reclaim",), ("reclaim", "vhdx", "--all"), ("cancel", "x"),
                 ("set-sparse", "vhdx", "maybe"), ("status", "--wait"), ("--bogus", "status"), ()):
        p = ctl(*args)
        t.check(p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--help" in p.stderr,
                f"usage error {args}: exit {p.returncode}, one line pointing at --help: {p.stderr.strip()!r}")
    p = ctl("--help")
    t.check(p.returncode == 0 and "Exit status" in p.stdout and "reclaim DISK...|--all" in p.stdout,
            "--help documents the commands and exit codes")
    # No [trim] in this configuration: the timer's `trim --wait` must not fail.
    p = ctl("trim", "--wait")
    t.check(p.returncode == 0 and "Nothing to trim" in p.stdout,
            f"trim with nothing configured: exit 0, said so ({p.returncode}, {p.stdout.strip()!r}, {p.stderr.strip()!r})")
    p = ctl("version")
    t.equal(p.returncode, 0, "version exit code")
    t.check(re.search(r"^vhdreclaimctl \S+\nvhdreclaimd \S+$", p.stdout.strip()) is not None,
            f"version: client and daemon: {p.stdout.strip()!r}")


def check_reload(images):
    bad_line = write_config(images, extra_disk=True, broken=True)
    p = ctl("reload")
    t.equal(p.returncode, 1, "reload of a broken configuration exits 1")
    t.check(f"{conf}:{bad_line}" in p.stderr, f"... and prints FILE:LINE ({conf}:{bad_line}): {p.stderr.strip()!r}")
    _, disks = ctl_json("status")
    t.check(disks is not None and "new" not in disks_by_name(disks) and len(disks) == 5,
            "the old configuration stays")

    write_config(images, extra_disk=True)
    p = ctl("reload")
    t.equal(p.returncode, 0, f"reload of a fixed configuration ({p.stderr.strip()})")
    _, disks = ctl_json("status")
    new = disks_by_name(disks or []).get("new")
    t.check(new is not None and new["path"] == images["new"], "the new [disk] is picked up")
    _, disks = ctl_json("status", "vhdx")
    d = (disks or [{}])[0]
    t.equal(d.get("passes"), 1, "disks kept their state across the reload")
    week = 7 * 86400 * 1000000
    nxt, last = d.get("next_pass", 0), d.get("last_pass", 0)
    t.check(last + week // 2 <= nxt < last + week * 3 // 2,
            f"interval=1w: the next pass on the image's slot, half a week to a week and a half after the last ({nxt - last})")
    row = next((r for r in table_rows(ctl("status").stdout) if r[0] == "vhdx"), [])
    t.check(row[-1:] and re.fullmatch(r"in (\d+)d", row[-1]) and 3 <= int(row[-1][3:-1]) <= 11,
            f"status: NEXT relative, in whole days: {row[-1:]}")


def check_unprivileged():
    # Open the socket to everyone, as an administrator could: reading is
    # allowed to whoever can connect.
    os.chmod(tmp, 0o755)
    os.chmod(sock, 0o666)
    p, disks = ctl_json("status", nobody=True)
    t.equal(p.returncode, 0, f"nobody: status exit code ({p.stderr.strip()})")
    t.check(isinstance(disks, list) and len(disks) == 6, "nobody: status lists the disks")
    t.equal(ctl("history", nobody=True).returncode, 0, "nobody: history exit code")
    t.equal(ctl("metrics", nobody=True).returncode, 0, "nobody: metrics exit code")
    for args in (("reclaim", "vhdx"), ("reload",), ("set-sparse", "vhdx", "false"), ("trim",)):
        p = ctl(*args, nobody=True)
        t.equal(p.returncode, 1, f"nobody: {' '.join(args)} is refused with exit 1")
        t.check("permission denied" in p.stderr, f"... saying permission denied: {p.stderr.strip()!r}")
    _, disks = ctl_json("status", "vhdx")
    t.equal((disks or [{}])[0].get("passes"), 1, "nobody's reclaim started nothing")


def check_daemon_gone():
    stop_daemon()
    t.equal(daemon.returncode, 0, "the daemon stops on SIGTERM")
    p = ctl("status")
    t.equal(p.returncode, 3, "status without a daemon exits 3")
    t.check(sock in p.stderr and "is vhdreclaimd running?" in p.stderr, f"... naming the socket: {p.stderr.strip()!r}")
    p = ctl("version")
    t.equal(p.returncode, 3, "version without a daemon exits 3")
    t.check(p.stdout.startswith("vhdreclaimctl "), "... after printing the client's version")
    env = dict(os.environ, VHDRECLAIM_SOCKET=os.path.join(tmp, "other.sock"))
    p = subprocess.run([CTL, "status"], capture_output=True, text=True, env=env, timeout=30)
    t.check(p.returncode == 3 and "other.sock" in p.stderr, "VHDRECLAIM_SOCKET is the default socket")


def main():
    images = make_images()
    write_config(images)
    if not t.check(start_daemon(), "the daemon answers on its socket"):
        return
    by = check_status_matches_peers(images)
    check_busctl(by)
    check_errors()
    vhdx, raw = check_reclaim(images)
    check_history(vhdx, raw or {})
    check_metrics(images, by)
    check_wait_output()
    check_cancel_and_sparse(images)
    check_reload(images)
    check_unprivileged()
    check_daemon_gone()


try:
    main()
finally:
    stop_daemon()
    if t.failures and os.path.exists(daemon_log):
        print("\n--- daemon log ---")
        with open(daemon_log, errors="replace") as f:
            print(f.read()[-20000:])
    shutil.rmtree(tmp, ignore_errors=True)

if t.failures:
    print(f"\n{len(t.failures)} check(s) failed:")
    for f in t.failures:
        print("  " + f)
    sys.exit(1)
print("\nall checks passed")
