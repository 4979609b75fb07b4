#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vhdreclaimctl tells the truth about dry runs and about who may do what.

Issue 10, items 5, 6 and 8, through the real daemon and client:

- `reclaim DISK --dry-run --wait` prints "(dry run), would reclaim SIZE"
  with the size the pass found (stale + zero + free), which is what
  `status` then shows as reclaimable; `--json` gives "dry_run": true and
  "would_reclaim"; `reclaim` of a sparse=false disk says it was a dry run
  (the disk is watch-only); `history` marks dry runs ("dry_run": true,
  "(dry run)" in the table, "would SIZE"); every image is unchanged;
- with adminGroup=adm the socket belongs to group adm (0660); a user who
  cannot connect is told the socket is restricted to group "adm"; a user
  who can connect but is not an admin gets the daemon's own refusal, naming
  "adm"; `reload` with adminGroup=users gives the socket to users, and the
  refusal then names "users"; a socket systemd made (systemd-socket-activate)
  is given to adminGroup too;
- a [disk] with format=raw is reclaimed as raw even when its name is .bin;
  the same image without format=raw is refused-invalid.

Needs root (setpriv, chown) and the groups adm and users: skips (77)
without them, fails in CI.
"""

import grp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
    skip_or_fail("needs root (setpriv to another user, the socket's group)")
if not shutil.which("setpriv"):
    skip_or_fail("setpriv is not installed")
try:
    GROUPS = {name: grp.getgrnam(name).gr_gid for name in ("adm", "users")}
except KeyError as e:
    skip_or_fail(f"group {e} does not exist")

tmp = tempfile.mkdtemp(prefix="vhdreclaim-ctl-truth-")
os.chmod(tmp, 0o755)    # nobody must reach the socket to be refused by it
sock = os.path.join(tmp, "control.sock")
state_dir = os.path.join(tmp, "state")
conf = os.path.join(tmp, "vhdreclaim.conf")
daemon_log = os.path.join(tmp, "daemon.log")
daemon = None


def write_pattern(path, pieces):
    with open(path, "wb") as f:
        for kind, n in pieces:
            for _ in range(n):
                f.write(os.urandom(MiB) if kind == "data" else bytes(MiB))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_config(images, group):
    lines = ["[daemon]", f"socket={sock}", f"stateDir={state_dir}", f"adminGroup={group}", "",
             "[reclaim]", "interval=0", "randomizedDelay=0", "idleDelay=1h", "discard=safe", "minReclaim=0", "",
             "[disk.busy]", f"path={images['busy']}", "",
             "[disk.watch]", f"path={images['watch']}", "sparse=false", "",
             "[disk.bin]", f"path={images['bin']}", "format=raw", "",
             "[disk.unnamed]", f"path={images['unnamed']}", ""]
    with open(conf, "w") as f:
        f.write("\n".join(lines))


def ctl(*args, nobody=False, timeout=60):
    cmd = [CTL, "--socket", sock, *args]
    if nobody:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ctl_json(*args, **kw):
    p = ctl("--json", *args, **kw)
    try:
        return p, json.loads(p.stdout)
    except json.JSONDecodeError:
        return p, None


def start_daemon():
    global daemon
    log = open(daemon_log, "ab")
    daemon = subprocess.Popen([DAEMON, "-c", conf], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and daemon.poll() is None:
        if os.path.exists(sock) and ctl("status").returncode == 0:
            return True
        time.sleep(0.1)
    return False


def stop_daemon():
    if daemon and daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def status_of(name):
    _, disks = ctl_json("status", name)
    return (disks or [{}])[0]


def check_dry_runs(images, shas):
    p = ctl("reclaim", "busy", "--dry-run", "--wait")
    m = re.search(r"^job \d+ busy: success \(dry run\), would reclaim (\S+)$", p.stdout, re.M)
    t.check(p.returncode == 0 and m is not None, f"reclaim busy --dry-run --wait: a dry-run line: {p.stdout.strip()!r}")
    t.check(m is not None and m.group(1) not in ("0", "0B"), f"... with what it would reclaim: {m and m.group(1)!r}")
    reclaimable = status_of("busy").get("reclaimable", 0)
    t.check(reclaimable >= 8 * MiB, f"status: busy reclaimable {reclaimable}")

    p, res = ctl_json("reclaim", "busy", "--dry-run", "--wait")
    r = (res or [{}])[0]
    t.check(r.get("dry_run") is True, f"--json --wait: dry_run true: {r}")
    t.equal(r.get("would_reclaim"), reclaimable, "--json --wait: would_reclaim is what status calls reclaimable")
    t.equal(r.get("reclaimed"), 0, "--json --wait: reclaimed (measured) is 0 for a dry run")

    p = ctl("reclaim", "watch", "--wait")
    t.check(p.returncode == 0 and re.search(r"^job \d+ watch: success \(dry run: the disk is watch-only\), "
                                            r"would reclaim [1-9]\S*$", p.stdout, re.M) is not None,
            f"reclaim of a sparse=false disk says it was a dry run: {p.stdout.strip()!r}")

    p, hist = ctl_json("history")
    entries = [e for e in hist or [] if e.get("name") in ("busy", "watch")]
    t.check(len(entries) == 3 and all(e.get("dry_run") is True for e in entries),
            f"history --json: the three dry runs are marked: {entries}")
    t.check(all(e.get("would_reclaim", 0) == e["stale_bytes"] + e["zero_bytes"] + e["free_bytes"] > 0
                for e in entries), "history --json: would_reclaim is stale + zero + free")
    rows = [line for line in ctl("history").stdout.splitlines() if " busy " in line or " watch " in line]
    t.check(len(rows) == 3 and all("(dry run)" in r and re.search(r"\bwould [1-9]", r) for r in rows),
            f"history table: RESULT and RECLAIMED say dry run and would: {rows}")
    for name in ("busy", "watch"):
        t.check(sha256(images[name]) == shas[name], f"{name}: unchanged by its dry runs")


def check_format_raw(images):
    p = ctl("reclaim", "bin", "--wait")
    t.check(p.returncode == 0 and re.search(r"^job \d+ bin: success, reclaimed [1-9]", p.stdout, re.M),
            f"format=raw: the .bin disk is reclaimed: {p.stdout.strip()!r} {p.stderr.strip()!r}")
    ok = subprocess.run(["cmp", images["bin"], images["bin-ref"]], capture_output=True).returncode == 0
    t.check(ok, "format=raw: the .bin disk reads the same as before")
    sha = sha256(images["unnamed"])
    p = ctl("reclaim", "unnamed", "--wait")
    t.check(p.returncode == 1 and "format=raw" in p.stdout + p.stderr,
            f"without format=raw the same kind of image is refused: {p.stdout.strip()!r}")
    t.equal(status_of("unnamed").get("last_result"), "refused-invalid", "status: refused-invalid")
    t.check(sha256(images["unnamed"]) == sha, "the refused image is unchanged")


def check_group(images, group):
    st = os.stat(sock)
    t.equal((st.st_gid, st.st_mode & 0o777), (GROUPS[group], 0o660), f"the socket belongs to group {group}, 0660")
    p = ctl("status", nobody=True)
    t.check(p.returncode == 3 and "restricted" in p.stderr and f'"{group}"' in p.stderr,
            f"nobody cannot connect: told the socket is restricted to group {group}: {p.stderr.strip()!r}")
    os.chmod(sock, 0o666)
    p = ctl("reclaim", "busy", nobody=True)
    t.check(p.returncode == 1 and f'group "{group}"' in p.stderr and "group vhdreclaim" not in p.stderr,
            f"nobody's reclaim: the daemon's refusal, naming {group}: {p.stderr.strip()!r}")
    os.chmod(sock, 0o660)


def check_activated_socket(images):
    """A socket systemd made (systemd-socket-activate here) follows adminGroup too."""
    if not shutil.which("systemd-socket-activate"):
        t.check(os.environ.get("CI") != "true", "systemd-socket-activate is installed (CI)")
        print("systemd-socket-activate is not installed: the activated socket is not tried", flush=True)
        return
    write_config(images, "adm")
    activator = subprocess.Popen(["systemd-socket-activate", "-l", sock, DAEMON, "-c", conf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        p = ctl("status")       # the first connection starts the daemon
        t.equal(p.returncode, 0, f"socket activation: status ({p.stderr.strip()})")
        t.equal(os.stat(sock).st_gid, GROUPS["adm"], "socket activation: the socket systemd made belongs to adm")
    finally:
        activator.terminate()
        activator.wait(timeout=20)
        if os.path.exists(sock):
            os.unlink(sock)


def main():
    images = {n: os.path.join(tmp, f) for n, f in (("busy", "busy.raw"), ("watch", "watch.raw"),
                                                   ("bin", "disk.bin"), ("unnamed", "other.bin"),
                                                   ("bin-ref", "ref")) }
    for name in ("busy", "watch", "bin", "unnamed"):
        write_pattern(images[name], [("data", 1), ("zero", 4)] * 2)
    shutil.copyfile(images["bin"], images["bin-ref"])
    shas = {n: sha256(images[n]) for n in ("busy", "watch")}
    write_config(images, "adm")
    if not t.check(start_daemon(), "the daemon answers on its socket"):
        return
    check_dry_runs(images, shas)
    check_format_raw(images)
    check_group(images, "adm")
    write_config(images, "users")
    p = ctl("reload")
    t.equal(p.returncode, 0, f"reload with adminGroup=users ({p.stderr.strip()})")
    check_group(images, "users")
    stop_daemon()
    check_activated_socket(images)


try:
    main()
finally:
    stop_daemon()
    if t.failures and os.path.exists(daemon_log):
        print("\n--- daemon log ---")
        with open(daemon_log, errors="replace") as f:
            print(f.read()[-8000:])
    shutil.rmtree(tmp, ignore_errors=True)
t.exit()
