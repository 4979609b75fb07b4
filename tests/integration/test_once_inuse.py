#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The in-use guard of `vhdreclaimd --once` (DESIGN.md, safety model item 4).

- Another process holding the image open (read-only or read-write), or
  holding a read lease of its own: the pass is skipped-in-use, exit 0, and
  the image is untouched (sha256, st_blocks). Once it lets go, a pass runs.
- Another process opening the image mid-pass, read-only and read-write (a
  2 GiB raw image, evicted from the page cache, so that the zero tier takes
  over a second): its open() returns
  within one second, the pass reports skipped-in-use with "stopped" in the
  message, and the image reads the same as before (sha256 of the content).
- Leases need the file's owner or CAP_LEASE: as root, the pass is also run as
  an unprivileged user on a file that user may write but does not own: it must
  end in a clear error, not act without the lease.

Needs qemu-img/qemu-io; skips (77) without, fails in CI.
"""

import fcntl
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time

import oncetest
from oncetest import KiB, MiB, GiB

t = oncetest.Checker()


# A child that opens the file (and optionally takes a read lease, as Samba
# does for an oplock), says "ready", and answers each line on stdin with its
# lease state (F_GETLEASE) and whether the kernel asked it to break the lease
# (SIGIO, which it catches: by default SIGIO would kill it).
HOLDER = r"""
import fcntl, os, signal, sys
broken = []
signal.signal(signal.SIGIO, lambda *a: broken.append(1))
path, mode, lease = sys.argv[1], sys.argv[2], sys.argv[3] == "lease"
fd = os.open(path, os.O_RDWR if mode == "rw" else os.O_RDONLY)
if lease:
    fcntl.fcntl(fd, getattr(fcntl, "F_SETLEASE", 1024), fcntl.F_RDLCK)
print("ready", flush=True)
for line in sys.stdin:
    print(fcntl.fcntl(fd, getattr(fcntl, "F_GETLEASE", 1025)), "sigio" if broken else "quiet", flush=True)
"""

# A child that times its own open().
OPENER = r"""
import os, sys, time
t = time.monotonic()
fd = os.open(sys.argv[1], os.O_RDWR if sys.argv[2] == "rw" else os.O_RDONLY)
print(f"{time.monotonic() - t:.3f}", flush=True)
os.close(fd)
"""


def hold(path, mode, lease=False):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, path, mode, "lease" if lease else "no"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        raise RuntimeError(f"holder did not start: {line!r}")
    return p


def holder_state(p):
    """(F_GETLEASE value, whether SIGIO arrived) of a holder."""
    p.stdin.write("?\n")
    p.stdin.flush()
    lease, sigio = p.stdout.readline().split()
    return int(lease), sigio == "sigio"


def release(p):
    p.stdin.close()
    p.wait(timeout=10)


def test_held_open(work):
    image = os.path.join(work, "held.vhdx")
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", image, "64M"], check=True)
    oncetest.qemu_io(image, "vhdx", ["write -q -P 0x5a 0 4M", "write -q -P 0 1M 2M"])
    sha, blocks = oncetest.sha256(image), oncetest.allocated(image)

    for mode, lease, what in (("ro", False, "open read-only"), ("rw", False, "open read-write"),
                              ("ro", True, "holding a read lease")):
        for extra in ([], ["--dry-run"]):
            label = f"another process {what}{' (--dry-run)' if extra else ''}"
            holder = hold(image, mode, lease)
            try:
                run = oncetest.run_once(image, "--discard=safe", *extra)
                state = holder_state(holder)
            finally:
                release(holder)
            rep = run.report
            t.check(run.rc == 0 and rep.get("result") == "skipped-in-use", f"{label}: skipped-in-use, exit 0: {run}")
            t.equal(oncetest.json_fields_problems(rep), [], f"{label}: JSON fields")
            t.equal((rep.get("stale_bytes"), rep.get("zero_bytes"), rep.get("reclaimed")), (0, 0, 0),
                    f"{label}: nothing punched")
            t.check(oncetest.sha256(image) == sha and oncetest.allocated(image) == blocks,
                    f"{label}: image untouched (sha256, st_blocks)")
            if lease:
                # Skipping must not disturb the holder: breaking its lease
                # would make Samba drop its clients' oplocks (and SIGIO kills
                # a process that does not handle it).
                t.equal(state, (fcntl.F_RDLCK, False),
                        f"{label}: the holder keeps its read lease, no break was started (F_GETLEASE, SIGIO)")

    run = oncetest.run_once(image, "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") == "success" and run.report.get("zero_bytes", 0) >= 2 * MiB,
            f"once the other process closed it, the pass runs: {run}")
    ok, out = oncetest.qemu_img_check(image)
    t.check(ok, "after that pass: qemu-img check clean" + ("" if ok else f": {out}"))


def make_big_raw(path, size):
    """Nonzero data with a 256 KiB zero run in every 8 MiB and a hole every
    128 MiB; returns the sha256 of its content. Written, flushed and evicted
    from the page cache, so that a pass reads it from the disk."""
    rng = random.Random(7)
    pattern = bytearray(rng.randbytes(8 * MiB))
    pattern[1 * MiB:1 * MiB + 256 * KiB] = bytes(256 * KiB)
    hole = bytes(8 * MiB)
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off in range(0, size, 8 * MiB):
            if (off // (8 * MiB)) % 16 == 15:
                h.update(hole)
                continue
            os.pwrite(fd, pattern, off)
            h.update(pattern)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return h.hexdigest()


def lease_holders(path):
    """PIDs holding a lease on path, from /proc/locks."""
    ino = os.stat(path).st_ino
    pids = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "LEASE" in fields and any(x.endswith(f":{ino}") for x in fields):
                pids.append(int(fields[fields.index("LEASE") + 3]))
    return pids


def evict(path):
    """Drops the file from the page cache, so a pass reads it from the disk."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def open_mid_pass(image, opener_mode):
    """Starts a pass, waits until it holds its lease and is into the zero
    tier, then opens the image from another process. Returns (the pass's
    OnceRun, seconds the open took, whether the pass was still running)."""
    daemon = subprocess.Popen([oncetest.binary(), "--once", "--json", "--discard=safe", image],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while daemon.pid not in lease_holders(image) and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    t.check(daemon.pid in lease_holders(image), "the pass holds a write lease on the image (/proc/locks)")
    time.sleep(0.15)     # well into the zero tier
    still_running = daemon.poll() is None
    opener = subprocess.run([sys.executable, "-c", OPENER, image, opener_mode],
                            stdout=subprocess.PIPE, text=True, timeout=120)
    out, err = daemon.communicate(timeout=120)
    run = oncetest.OnceRun(subprocess.CompletedProcess(daemon.args, daemon.returncode, out, err))
    return run, float(opener.stdout.strip() or "inf"), still_running


def test_opened_mid_pass(work):
    image = os.path.join(work, "big.raw")
    size = 2 * GiB
    print(f"writing a {size // GiB} GiB raw image ...", flush=True)
    sha = make_big_raw(image, size)

    for mode in ("ro", "rw"):
        what = "read-only" if mode == "ro" else "read-write"
        run, elapsed, still_running = open_mid_pass(image, mode)
        rep = run.report
        t.check(still_running, f"opened {what}: the pass was still running when the other process opened the image "
                               "(if not, the machine reads faster than this test assumes: use a larger image)")
        t.check(elapsed <= 1.0, f"opened {what}: the other process's open() returned within 1 s: {elapsed:.3f} s")
        t.check(run.rc == 0 and rep.get("result") == "skipped-in-use" and "stopped" in rep.get("message", ""),
                f"opened {what}: the pass reports it stopped: {run}")
        t.equal(oncetest.json_fields_problems(rep), [], f"opened {what}: JSON fields of the stopped pass")
        print(f"note: the pass had punched {rep.get('zero_bytes')} bytes of zeros before it stopped")
        t.check(oncetest.sha256(image) == sha, f"opened {what}: the image's content is intact (sha256 as written)")
        evict(image)

    run = oncetest.run_once(image, "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") in ("success", "nothing-to-do"),
            f"a pass afterwards completes: {run}")
    t.check(oncetest.sha256(image) == sha, "after the completed pass, the content is still intact")
    os.unlink(image)


def test_lease_needs_owner(work):
    if os.geteuid() != 0:
        t.skip("not root: the unprivileged-lease check needs root to switch users")
        return
    d = os.path.join(work, "shared")
    os.mkdir(d)
    os.chmod(work, 0o755)
    os.chmod(d, 0o777)
    image = os.path.join(d, "root-owned.raw")
    with open(image, "wb") as f:
        f.write(b"\x5a" * MiB + bytes(MiB))
    os.chmod(image, 0o666)
    sha = oncetest.sha256(image)
    p = subprocess.run([oncetest.binary(), "--once", "--json", "--discard=safe", image],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: (os.setgroups([]), os.setgid(65534), os.setuid(65534)))
    run = oncetest.OnceRun(p)
    rep = run.report
    t.check(rep.get("result") == "error" and "lease" in rep.get("message", "") and run.rc == 1,
            f"unprivileged, on a writable file it does not own: error naming the lease, exit 1: {run}")
    t.check(oncetest.sha256(image) == sha and oncetest.allocated(image) >= 2 * MiB,
            "unprivileged, without the lease: the image is untouched")


def main():
    oncetest.require_tools("qemu-img", "qemu-io")
    work = oncetest.workdir("test-once-inuse-")
    try:
        test_held_open(work)
        test_lease_needs_owner(work)
        test_opened_mid_pass(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
