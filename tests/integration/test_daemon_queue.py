#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""maxParallel counts per host file system (issue 12): with maxParallel=1,
two images on two file systems are passed at the same time, two on one
are not; and `vhdreclaimctl status` shows the queue (the table's Queue:
line, queue_position in --json). The second file system is /dev/shm
(tmpfs: leases, SEEK_DATA and hole punching work there as on ext4)."""

import json
import os
import shutil
import subprocess
import tempfile

from daemonlib import Daemon, assert_same_content, config, main, require_tools, skip, standard_image, wait_for

CTL = os.environ.get("VHDRECLAIMCTL", "")


def ctl(d, *args):
    return subprocess.run([CTL, "--socket", d.sock, *args], capture_output=True, text=True, check=True).stdout


def test_parallel_per_device_and_queue(tmp):
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp).st_dev:
        skip("no /dev/shm on another file system than the temporary directory")
    shm = tempfile.mkdtemp(prefix="vhdreclaim-test-", dir="/dev/shm")
    try:
        paths = {"a1": os.path.join(tmp, "a1.vhdx"), "a2": os.path.join(tmp, "a2.vhdx"),
                 "a3": os.path.join(tmp, "a3.vhdx"), "b1": os.path.join(shm, "b1.vhdx")}
        copies = {}
        for name, p in paths.items():
            standard_image(p)
            copies[name] = os.path.join(tmp, name + ".orig")
            shutil.copyfile(p, copies[name])
        # Slow passes (ioLimit), one at a time per file system.
        conf = config(tmp, [(n, p) for n, p in paths.items()], reclaim={"ioLimit": "2M", "maxParallel": "1"})
        d = Daemon(tmp, conf).start()
        d.wait_probed(*paths)
        d.reclaim("a1", "a2", "a3", "b1")
        disks = wait_for(lambda: (lambda x: x if x["a1"]["state"] == "reclaiming" else None)(d.disks()), 10,
                         what="a1's pass to start")
        states = {n: x["state"] for n, x in disks.items()}
        assert states == {"a1": "reclaiming", "a2": "queued", "a3": "queued", "b1": "reclaiming"}, states

        status = {x["name"]: x for x in json.loads(ctl(d, "--json", "status"))}
        pos = {n: x["queue_position"] for n, x in status.items()}
        assert pos == {"a1": 0, "a2": 1, "a3": 2, "b1": 0}, pos
        table = ctl(d, "status")
        assert "Queue: 2 running (a1, b1), 2 waiting: next a2, a3." in table, table
        d.stop()    # cancels the passes: they resume next time
        for name, p in paths.items():
            assert_same_content(p, copies[name])
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_real_request_upgrades_queued_dry_run(tmp):
    """A dry run waiting in the queue, then a real pass asked for: the
    queued job becomes the real pass (it was answered with the dry run,
    and nothing was punched)."""
    paths = {"a1": os.path.join(tmp, "a1.vhdx"), "a2": os.path.join(tmp, "a2.vhdx")}
    for p in paths.values():
        standard_image(p)
    d = Daemon(tmp, config(tmp, list(paths.items()), reclaim={"ioLimit": "4M", "maxParallel": "1"})).start()
    d.wait_probed(*paths)
    d.reclaim("a1")
    wait_for(lambda: d.disk("a1")["state"] == "reclaiming", 10, what="a1's pass to start")
    dry = d.reclaim("a2", dry_run=True)[0]
    assert d.disk("a2")["state"] == "queued", d.disk("a2")
    real = d.reclaim("a2")[0]
    assert real == dry, (real, dry)            # the same job, now a real pass
    x = d.wait_passes("a2", 1, timeout=60)
    assert x["last_result"] == "success" and x["reclaimed_last"] > 0, x   # a dry run reclaims nothing
    d.stop()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    if not CTL or not os.access(CTL, os.X_OK):
        skip("VHDRECLAIMCTL is not set to the built client")
    main([test_parallel_per_device_and_queue, test_real_request_upgrades_queued_dry_run])
