#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A watch-only disk (sparse=false, or discard=none) under a short interval
with no random delay: its estimate stands for its pass, so it runs once per
interval and only when the file changed since the last one, instead of the
back-to-back dry runs a disk never marked as passed got. Status says
watch-only, history grows by one record per estimate, the image stays as it
was, and a sparse disk beside it keeps its periodic passes."""

import os
import shutil
import subprocess
import time

from daemonlib import Daemon, allocated, assert_same_content, config, main, require_tools, run, standard_image, \
    wait_for

CTL = os.environ.get("VHDRECLAIMCTL", "")
INTERVAL = 2


def image_with_copy(tmp, name):
    img = standard_image(os.path.join(tmp, f"{name}.vhdx"))
    copy = os.path.join(tmp, f"{name}.orig.vhdx")
    shutil.copyfile(img, copy)
    return img, copy


def ctl_state(d, name):
    """The STATE column of `vhdreclaimctl status`."""
    out = subprocess.run([CTL, "--socket", d.sock, "status"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return next(r[1] for r in rows if r and r[0] == name)


def test_watch_only_estimates_once_per_change(tmp):
    ro, ro_copy = image_with_copy(tmp, "ro")
    keep, keep_copy = image_with_copy(tmp, "keep")
    ro_alloc, keep_alloc = allocated(ro), allocated(keep)
    # idleDelay holds estimates too (test_noatime): short here.
    d = Daemon(tmp, config(tmp, [("ro", ro, "sparse=false"), ("keep", keep, "discard=none")],
                           reclaim={"interval": f"{INTERVAL}s", "randomizedDelay": "0", "idleDelay": "1s"})).start()
    # Never passed: one estimate each, idleDelay after their creation.
    wait_for(lambda: all(len(d.history(n)) >= 1 for n in ("ro", "keep")), 30, 0.1, what="the first estimates")
    # Five intervals with nothing changed: nothing more.
    time.sleep(5 * INTERVAL)
    for name in ("ro", "keep"):
        h = d.history(name)
        x = d.disk(name)
        assert len(h) == 1, (name, len(h), h[:3])
        assert x["passes"] == 1, x
        assert x["state"] == "watch-only", x
        assert x["last_pass"] > 0 and x["next_pass"] > x["last_pass"], x
        assert x["reclaimable"] > 0 and x["reclaimed_total"] == 0, x
        assert ctl_state(d, name) == "watch-only"
    assert d.call("ListJobs") == [[]]
    # A change: one more estimate, within the next interval or so.
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x77 40M 1M", ro)
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x77 40M 1M", ro_copy)
    wait_for(lambda: len(d.history("ro")) == 2, 4 * INTERVAL, 0.1, what="the estimate of the changed image")
    time.sleep(3 * INTERVAL)
    assert len(d.history("ro")) == 2, d.history("ro")
    assert len(d.history("keep")) == 1, d.history("keep")
    wait_for(lambda: d.call("ListJobs") == [[]], 10, what="no job")
    d.stop()
    # Measured, never modified.
    assert_same_content(ro, ro_copy)
    assert_same_content(keep, keep_copy)
    assert allocated(keep) == keep_alloc and allocated(ro) >= ro_alloc, (allocated(keep), keep_alloc)
    # The last estimate is on record: restarted with a longer interval, none is due.
    d.write_config(config(tmp, [("ro", ro, "sparse=false"), ("keep", keep, "discard=none")],
                          reclaim={"interval": "1h", "randomizedDelay": "0"}))
    d.start()
    time.sleep(INTERVAL)
    assert len(d.history("ro")) == 2 and len(d.history("keep")) == 1, d.history()
    assert d.call("ListJobs") == [[]]


def test_sparse_disk_still_passes(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)], reclaim={"interval": f"{INTERVAL}s", "randomizedDelay": "0",
                                                     "idleDelay": "1s"})).start()
    x = d.wait_passes("a", 1, timeout=30)
    assert x["state"] == "idle" and x["last_result"] == "success", x
    # Periodic passes go on whether or not the file changed (they may punch what an estimate only counts).
    d.wait_passes("a", 3, timeout=10 * INTERVAL)
    d.stop()
    assert_same_content(a, copy)


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    if not CTL or not os.access(CTL, os.X_OK):
        from daemonlib import skip
        skip("VHDRECLAIMCTL is not set to the built client")
    main([test_watch_only_estimates_once_per_change, test_sparse_disk_still_passes])
