#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What needs root (mount, FITRIM): [trim] on a real file system, an ext4
image on a loop device mounted twice (one pass per file system), FITRIM in
chunks through the Trim call, the loop device passing the discards on as
holes in its backing file, the status reporting the bytes trimmed; and
SetSparse false on a host file system too full to re-allocate the holes."""

import os
import subprocess
import time

import shutil

from daemonlib import (Daemon, MiB, allocated, assert_same_content, config, main, make_vhdx, require_tools, run,
                       skip, wait_for)


class LoopFs:
    def __init__(self, tmp):
        self.backing = os.path.join(tmp, "fs.img")
        self.mnt = os.path.join(tmp, "mnt")
        self.mnt2 = os.path.join(tmp, "mnt2")
        os.mkdir(self.mnt)
        os.mkdir(self.mnt2)
        with open(self.backing, "wb") as f:
            f.truncate(256 * MiB)
        run("mkfs.ext4", "-q", "-E", "nodiscard", self.backing)
        run("mount", "-o", "loop", self.backing, self.mnt)
        run("mount", "--bind", self.mnt, self.mnt2)

    def close(self):
        subprocess.run(["umount", self.mnt2], capture_output=True)
        subprocess.run(["umount", self.mnt], capture_output=True)


def fill_and_free(mnt, size):
    path = os.path.join(mnt, "junk")
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        os.fsync(f.fileno())
    os.unlink(path)
    os.sync()


def test_trim(tmp):
    fs = LoopFs(tmp)
    try:
        fill_and_free(fs.mnt, 96 * MiB)
        before = allocated(fs.backing)
        extra = f"\n[trim]\nmounts={fs.mnt}\nchunk=32M\npause=50ms\ninterval=0\n"
        d = Daemon(tmp, config(tmp, extra=extra)).start()
        job = d.call("Trim", "asb", 0, "false")[0]
        assert job > 0
        status = wait_for(lambda: (lambda s: s if s and s[0][1] > 0 else None)(d.call("GetTrimStatus")[0]), 20,
                          what="the trim to finish")
        mount, last, trimmed_last, trimmed_total, result = status[0]
        assert mount == fs.mnt and result == "success", status
        assert trimmed_last >= 64 * MiB and trimmed_total == trimmed_last, status
        assert abs(last / 1e6 - time.time()) < 30, status
        after = allocated(fs.backing)
        assert before - after >= 64 * MiB, (before, after)
        # Both mount points of the one file system: one pass.
        job = d.call("Trim", "asb", 2, fs.mnt, fs.mnt2, "false")[0]
        wait_for(lambda: d.call("GetTrimStatus")[0][0][3] > trimmed_total
                 or d.call("ListJobs")[0] == [], 20, what="the second trim")
        status = d.call("GetTrimStatus")[0]
        assert [s[0] for s in status] == [fs.mnt], status
        # A path on no file system we know of is refused.
        p = d.call("Trim", "asb", 1, "relative/path", "false", check=False)
        assert p.returncode != 0, p
        # The status survives a restart.
        d.stop()
        d.start()
        assert d.call("GetTrimStatus")[0][0][3] >= trimmed_total
        # Cancel a running trim: long pauses keep it running.
        d.stop()
        d.write_config(config(tmp, extra=f"\n[trim]\nmounts={fs.mnt}\nchunk=1M\npause=1s\n"))
        d.start()
        job = d.call("Trim", "asb", 0, "false")[0]
        wait_for(lambda: any(j[3] == "running" for j in d.call("ListJobs")[0]), 5, what="the trim to run")
        d.call("Cancel", "t", job)
        wait_for(lambda: d.call("ListJobs")[0] == [], 3, what="the cancel")
        assert d.call("GetTrimStatus")[0][0][4] == "cancelled"
        assert d.stop() < 2
    finally:
        fs.close()


def test_set_sparse_without_space(tmp):
    host = os.path.join(tmp, "host")
    os.mkdir(host)
    run("mount", "-t", "tmpfs", "-o", "size=80M", "tmpfs", host)
    try:
        img = make_vhdx(os.path.join(host, "a.vhdx"), "1G", [("P", "0x33", 0, "1M"), ("P", "0", "1M", "40M")])
        copy = os.path.join(tmp, "a.orig.vhdx")
        shutil.copyfile(img, copy)
        d = Daemon(tmp, config(tmp, [("a", img)])).start()
        d.reclaim("a")
        d.wait_passes("a", 1)
        holes = os.stat(img).st_size - allocated(img)
        assert holes >= 36 * MiB, holes
        # Leave less free space than the holes need.
        filler = os.path.join(host, "filler")
        with open(filler, "wb") as f:
            f.write(b"\1" * (80 * MiB - allocated(img) - holes // 2))
        before = allocated(img)
        p = d.call("SetSparse", "sb", "a", "false", check=False)
        assert p.returncode != 0 and "free space" in p.stderr, p.stderr
        assert allocated(img) == before, (allocated(img), before)
        assert d.disk("a")["sparse"] is True
        assert_same_content(img, copy)
        # With the space back, it works and nothing changes but the allocation.
        os.unlink(filler)
        d.call("SetSparse", "sb", "a", "false")
        assert allocated(img) >= os.stat(img).st_size
        assert d.disk("a")["sparse"] is False
        assert_same_content(img, copy)
        d.stop()
    finally:
        subprocess.run(["umount", host], capture_output=True)


if __name__ == "__main__":
    require_tools("busctl", "mkfs.ext4", "mount")
    if os.geteuid() != 0:
        skip("FITRIM and loop mounts need root")
    probe = subprocess.run(["losetup", "-f"], capture_output=True)
    if probe.returncode != 0:
        skip("no loop device available")
    main([test_trim, test_set_sparse_without_space])
