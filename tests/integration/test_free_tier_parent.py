#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The free tier changes a file only when it punches (issue 10 items 3, 4):

- a second `--once` on an ext4 VHDX whose free space is already punched
  leaves the file byte-identical, mtime included (no header rewrite);
- an image that a differencing child names (by DataWriteGuid linkage or by
  its file name, in the child's parent locator) keeps its free tier and its
  DataWriteGuid: the pass says `skipped-differencing`, naming the child. The
  child is a qemu-img VHDX patched into a differencing disk with vhdxtool,
  looked for in the parent's folder (`--once`) and, through the daemon, among
  the managed images of another folder.

Real peers: mkfs.ext4 -d, debugfs, qemu-img convert/check/compare."""

import os
import shutil
import struct
import subprocess
import sys
import time
import traceback
import uuid

import daemonlib
import oncetest
import vhdxtool
from oncetest import MiB

t = oncetest.Checker()

PARENT_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")


def make_ext_vhdx(work, name):
    """An ext4 file system with files written and some deleted, as a dynamic
    VHDX with 1 MiB blocks: its free space still holds data."""
    tree = os.path.join(work, name + ".tree")
    os.makedirs(tree)
    for i in range(12):
        with open(os.path.join(tree, f"f{i}"), "wb") as f:
            f.write(os.urandom((i + 1) * 256 * 1024))
    raw = os.path.join(work, name + ".raw")
    oncetest.run(["mkfs.ext4", "-q", "-F", "-d", tree, raw, "48M"], check=True)
    shutil.rmtree(tree)
    for i in range(0, 12, 2):
        oncetest.run(["debugfs", "-w", "-R", f"rm /f{i}", raw], check=True)
    vhdx = os.path.join(work, name + ".vhdx")
    oncetest.run(["qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, vhdx],
                 check=True)
    return raw, vhdx


def parent_locator(entries):
    head = PARENT_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(entries))
    table, strings = b"", b""
    base = len(head) + 12 * len(entries)
    for key, value in entries:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table += struct.pack("<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v))
        strings += k + v
    return head + table + strings


def make_child(path, entries):
    """A qemu-img VHDX turned into a differencing disk whose parent locator
    holds entries."""
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", path, "48M"],
                 check=True)
    v = vhdxtool.Vhdx.open(path)
    block_size, flags = struct.unpack("<II", v.item_data(vhdxtool.FILE_PARAMETERS, 8))
    vhdxtool.set_metadata_item_data(path, vhdxtool.FILE_PARAMETERS, struct.pack("<II", block_size, flags | 2))
    vhdxtool.add_metadata_entry(path, vhdxtool.PARENT_LOCATOR, parent_locator(entries), is_required=True)
    p = oncetest.run([oncetest.binary(), "--inspect", path])
    t.check(p.returncode == 0 and "differencing" in p.stdout,
            f"{os.path.basename(path)}: our reader takes it as a differencing disk ({p.stderr.strip()})")


def data_write_guid(path):
    return vhdxtool.Vhdx.open(path).header.data_write_guid


def stamp(path):
    st = os.stat(path)
    return oncetest.sha256(path), st.st_mtime_ns


def test_idle_second_pass(work):
    raw, vhdx = make_ext_vhdx(work, "idle")
    seq = vhdxtool.Vhdx.open(vhdx).header.sequence
    run = oncetest.run_once(vhdx, "--discard=free")
    t.check(run.rc == 0 and run.report.get("result") == "success" and run.report.get("free_bytes", 0) > 0,
            f"idle: the first pass punches guest free space: {run}")
    t.equal(vhdxtool.Vhdx.open(vhdx).header.sequence, seq + 2, "idle: the first pass renewed the GUIDs (two-step)")
    before = stamp(vhdx)
    seq = vhdxtool.Vhdx.open(vhdx).header.sequence
    time.sleep(0.05)    # an mtime change would show
    run = oncetest.run_once(vhdx, "--discard=free")
    t.check(run.rc == 0 and run.report.get("result") == "nothing-to-do",
            f"idle: the second pass has nothing to do: {run}")
    t.equal(vhdxtool.Vhdx.open(vhdx).header.sequence, seq, "idle: the second pass left the header sequence")
    t.equal(stamp(vhdx), before, "idle: the second pass left the file byte-identical, mtime included")
    t.check(oncetest.qemu_img_check(vhdx), "idle: qemu-img check is clean")
    # The free tier changed free space only: the guest's view is checked by e2fsck.
    guest = os.path.join(work, "idle.after.raw")
    oncetest.run(["qemu-img", "convert", "-O", "raw", vhdx, guest], check=True)
    p = oncetest.run(["e2fsck", "-fn", guest])
    t.check(p.returncode == 0, f"idle: e2fsck -fn on the guest view is clean: {p.stdout[-300:]}")


def test_threshold_with_free_tier(work):
    """minReclaim above what the free tier alone gives: the zero runs found
    decide. Below it the file stays byte-identical (no header rewrite);
    above it the GUIDs are renewed before the free ranges go, and the held
    zero runs are punched too."""
    raw, vhdx = make_ext_vhdx(work, "thr")
    dry = oncetest.run_once(vhdx, "--discard=free", "--dry-run").report
    free, zero = dry.get("free_bytes", 0), dry.get("zero_bytes", 0)
    t.check(free > 0 and zero > 0, f"threshold: the image has free space and zero runs: {dry}")
    guid = data_write_guid(vhdx)
    for label, min_reclaim, expect in (("above all", free + zero + MiB, "skipped-threshold"),
                                        ("between", free + zero // 2, "success")):
        before = stamp(vhdx)
        conf = daemonlib.config(work, [("thr", vhdx)], reclaim={
            "discard": "free", "interval": "1h", "idleDelay": "1s", "minReclaim": f"{min_reclaim}B", "minHole": "64K"})
        d = daemonlib.Daemon(work, conf)
        shutil.rmtree(d.state, ignore_errors=True)
        d.start()
        try:
            h = d.wait_history("thr", 1)[0]
        finally:
            d.stop()
        t.equal(h["result"], expect, f"threshold {label}: result ({h['message']})")
        if expect == "skipped-threshold":
            t.equal(stamp(vhdx), before, f"threshold {label}: byte-identical, mtime included")
            t.equal(data_write_guid(vhdx), guid, f"threshold {label}: DataWriteGuid kept")
        else:
            t.equal((h["free_bytes"], h["zero_bytes"]), (free, zero),
                    f"threshold {label}: (free, zero) punched as the dry run found")
            t.check(data_write_guid(vhdx) != guid, f"threshold {label}: DataWriteGuid renewed")
            t.check(oncetest.qemu_img_check(vhdx), f"threshold {label}: qemu-img check is clean")
            guest = os.path.join(work, "thr.after.raw")
            oncetest.run(["qemu-img", "convert", "-O", "raw", vhdx, guest], check=True)
            p = oncetest.run(["e2fsck", "-fn", guest])
            t.check(p.returncode == 0, f"threshold {label}: e2fsck -fn on the guest view is clean")


def check_parent_kept(label, vhdx, run, child):
    rep = run.report
    t.check(run.rc == 0 and rep.get("result") == "skipped-differencing",
            f"{label}: skipped-differencing: {run}")
    t.check(child in rep.get("message", ""), f"{label}: the message names the child ({rep.get('message')!r})")
    t.equal(rep.get("free_bytes"), 0, f"{label}: nothing of the free tier")


def test_child_in_folder(work):
    raw, vhdx = make_ext_vhdx(work, "parent")
    # The safe tiers first, so that only the free tier is left.
    run = oncetest.run_once(vhdx, "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") in ("success", "nothing-to-do"), f"parent: safe tiers: {run}")
    guid = data_write_guid(vhdx)
    cases = [
        ("by DataWriteGuid linkage", "linked.avhdx",
         [("parent_linkage", "{" + str(guid).upper() + "}"), ("relative_path", ".\\elsewhere.vhdx")]),
        ("by relative path", "named.vhdx",
         [("parent_linkage", "{" + str(uuid.uuid4()) + "}"), ("relative_path", ".\\PARENT.VHDX"),
          ("absolute_win32_path", "C:\\vms\\parent.vhdx")]),
    ]
    for label, name, entries in cases:
        child = os.path.join(work, name)
        make_child(child, entries)
        before = stamp(vhdx)
        run = oncetest.run_once(vhdx, "--discard=free")
        check_parent_kept(f"child {label}", vhdx, run, child)
        t.equal(stamp(vhdx), before, f"child {label}: the parent is byte-identical, mtime included")
        t.equal(data_write_guid(vhdx), guid, f"child {label}: the parent's DataWriteGuid is kept")
        os.unlink(child)

    # A differencing disk in the folder that names another parent is no child.
    other = os.path.join(work, "other.avhdx")
    make_child(other, [("parent_linkage", "{" + str(uuid.uuid4()) + "}"), ("relative_path", ".\\base.vhdx")])
    run = oncetest.run_once(vhdx, "--discard=free")
    t.check(run.rc == 0 and run.report.get("result") == "success" and run.report.get("free_bytes", 0) > 0,
            f"a differencing disk of another parent does not stop the free tier: {run}")
    t.check(data_write_guid(vhdx) != guid, "then the parent's DataWriteGuid is renewed")


def test_child_managed_elsewhere(work):
    """The daemon looks among its managed images too: a child in another
    folder, configured as a disk with sparse=false."""
    pdir, cdir = os.path.join(work, "parents"), os.path.join(work, "children")
    os.makedirs(pdir)
    os.makedirs(cdir)
    raw, vhdx = make_ext_vhdx(pdir, "base")
    run = oncetest.run_once(vhdx, "--discard=safe")
    guid = data_write_guid(vhdx)
    child = os.path.join(cdir, "snap.avhdx")
    make_child(child, [("parent_linkage", "{" + str(guid) + "}"),
                       ("absolute_win32_path", "D:\\images\\some-other-name.vhdx")])
    conf = daemonlib.config(work, [("base", vhdx), ("snap", child, "sparse=false")], reclaim={"discard": "free"})
    d = daemonlib.Daemon(work, conf).start()
    try:
        before = stamp(vhdx)
        d.reclaim("base")
        h = d.wait_history("base", 1)[0]
        t.check(h["result"] == "skipped-differencing" and child in h["message"],
                f"daemon: skipped-differencing naming the child managed in another folder: {h}")
        t.equal(stamp(vhdx), before, "daemon: the parent is byte-identical, mtime included")
    finally:
        d.stop()


def main():
    oncetest.require_tools("qemu-img", "mkfs.ext4", "debugfs", "e2fsck", "busctl")
    failures = 0
    work = oncetest.workdir("vhdreclaim-free-parent-")
    try:
        for test in (test_idle_second_pass, test_threshold_with_free_tier, test_child_in_folder,
                     test_child_managed_elsewhere):
            sub = os.path.join(work, test.__name__)
            os.makedirs(sub)
            print(f"--- {test.__name__}", flush=True)
            try:
                test(sub)
            except Exception as e:     # report it and go on with the others
                traceback.print_exc()
                t.check(False, f"{test.__name__}: {e!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
