#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading an image leaves its atime as it was (O_NOATIME): smbd refuses to
reconnect a client's durable handle when any of the file's times changed
while the client was away, and under relatime a plain read moves atime
whenever it is older than mtime (test_samba_durable shows the refusal).
Checked for each way the daemon reads an image or its neighbours: the probe
at start, a full pass, a dry run, the estimate of a watch-only disk, the
search for differencing children among the other images of the folder,
and `--once`/`--inspect`. The images' atimes are set two days before their
mtimes, so that any read through a descriptor without O_NOATIME moves them."""

import os
import subprocess
import time

from daemonlib import VHDRECLAIMD, Daemon, config, main, require_tools, standard_image, wait_for

DAY = 86400


def age_atime(*paths):
    for p in paths:
        st = os.stat(p)
        os.utime(p, ns=(st.st_mtime_ns - 2 * DAY * 10**9, st.st_mtime_ns))


def atimes(*paths):
    return {p: os.stat(p).st_atime_ns for p in paths}


def require_relatime(path):
    """The test means something only where a read moves atime."""
    age_atime(path)
    before = os.stat(path).st_atime_ns
    with open(path, "rb") as f:
        f.read(4096)
    assert os.stat(path).st_atime_ns != before, \
        f"{path}: a plain read did not move atime (noatime mount?): this test would prove nothing"


def test_daemon_reads_leave_atime(tmp):
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    b = standard_image(os.path.join(tmp, "b.vhdx"))     # a neighbour: read by the children search
    w = standard_image(os.path.join(tmp, "w.vhdx"))     # watch-only: estimated
    require_relatime(a)
    time.sleep(1.2)     # idleDelay after their creation
    age_atime(a, b, w)
    before = atimes(a, b, w)
    conf = config(tmp, [("a", a), ("b", b, "sparse=false"), ("w", w, "sparse=false")],
                  reclaim={"interval": "2s", "randomizedDelay": "0", "idleDelay": "1s", "discard": "free"})
    d = Daemon(tmp, conf).start()
    d.wait_probed("a", "b", "w")
    d.reclaim("a", dry_run=True)
    # The dry run and a full periodic pass (which reclaims the zeros), in either order.
    wait_for(lambda: len(d.history("a")) >= 2 and any(e["result"] == "success" for e in d.history("a")), 30,
             what="a dry run and a full pass of a")
    d.wait_passes("w", 1, timeout=30)           # an estimate
    d.stop()
    assert atimes(a, b, w) == before, (before, atimes(a, b, w))


def test_once_reads_leave_atime(tmp):
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    require_relatime(a)
    age_atime(a)
    before = atimes(a)
    for args in (["--inspect", a], ["--once", "--dry-run", a], ["--once", a]):
        p = subprocess.run([VHDRECLAIMD] + args, capture_output=True, text=True)
        assert p.returncode == 0, (args, p.returncode, p.stderr)
        assert atimes(a) == before, (args, before, atimes(a))


def test_watch_only_estimate_waits_idle_delay(tmp):
    """An estimate opens the image too: like a pass, it waits idleDelay
    after the last change or close (it did not)."""
    idle = 5
    w = standard_image(os.path.join(tmp, "w.vhdx"))
    changed = os.stat(w).st_ctime
    conf = config(tmp, [("w", w, "sparse=false")],
                  reclaim={"interval": "1s", "randomizedDelay": "0", "idleDelay": f"{idle}s"})
    d = Daemon(tmp, conf).start()
    x = d.wait_passes("w", 1, timeout=idle * 3)
    assert x["state"] == "watch-only", x
    assert x["last_pass"] >= (changed + idle - 0.1) * 10**6, (changed, x)
    with open(w, "r+b") as f:           # a writer comes and goes
        f.seek(2 << 20)
        f.write(b"\x42" * 4096)
    closed = time.time()
    x = d.wait_passes("w", 2, timeout=idle * 3)
    assert x["last_pass"] >= (closed + idle - 0.3) * 10**6, (closed, x)
    d.stop()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    main([test_daemon_reads_leave_atime, test_once_reads_leave_atime, test_watch_only_estimate_waits_idle_delay])
