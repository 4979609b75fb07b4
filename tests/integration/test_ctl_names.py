#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vhdreclaimctl against a real daemon, on what a new user's host holds.

- test_non_utf8_file_name: a watched folder holds an image whose file name
  is not UTF-8 beside a good one. D-Bus strings must be UTF-8, and sd-bus
  refuses a whole reply with one bad string: status, status --json,
  metrics and reclaim --all must still work for every disk, list the bad
  one with U+FFFD for each bad byte, and reclaim it (by --all and by that
  sanitised name); the guest content is unchanged (qemu-img compare).
- test_dry_run_marked_in_status: a watch-only disk's estimate is a dry run:
  status says "success (dry run)", --json has last_dry_run true; a real
  pass of another disk says "success" and last_dry_run false.

- test_history_by_any_spelling: history takes a disk's name in any case,
  as status does.

Needs qemu-img and qemu-io: skips (77) without them, fails in CI.
"""

import json
import os
import shutil
import subprocess

from daemonlib import (Daemon, assert_same_content, config, main, require_tools, standard_image,
                       wait_for)

CTL = os.environ.get("VHDRECLAIMCTL", "")
U_FFFD = "\ufffd"


def ctl(d, *args, timeout=60):
    return subprocess.run([CTL, "--socket", d.sock, *args], capture_output=True, text=True,
                          errors="surrogateescape", timeout=timeout)


def ctl_ok(d, *args):
    p = ctl(d, *args)
    assert p.returncode == 0, f"vhdreclaimctl {' '.join(args)}: rc {p.returncode}: {p.stderr.strip()}\n" \
                              f"{d.read_log()[-3000:]}"
    return p


def test_non_utf8_file_name(tmp):
    folder = os.path.join(tmp, "profiles")
    os.mkdir(folder)
    good = standard_image(os.path.join(folder, "good.vhdx"))
    bad = os.path.join(os.fsencode(folder), b"bad\xff\xfename.vhdx")
    standard_image(os.fsdecode(bad))
    copy = os.path.join(tmp, "bad.orig.vhdx")
    shutil.copyfile(bad, copy)
    extra = f"\n[watch.profiles]\ndir={folder}\npattern=*.vhdx\n"
    d = Daemon(tmp, config(tmp, extra=extra)).start()
    shown = f"profiles/bad{U_FFFD}{U_FFFD}name.vhdx"

    # Both disks are listed, with their formats read (on worker threads).
    def listed():
        p = ctl(d, "--json", "status")
        if p.returncode != 0:
            raise AssertionError(f"status --json: rc {p.returncode}: {p.stderr.strip()}")
        disks = {x["name"]: x for x in json.loads(p.stdout)}
        return disks if len(disks) == 2 and all(x["format"] == "vhdx" for x in disks.values()) else None

    disks = wait_for(listed, 10, 0.1, what="both disks with their formats")
    assert set(disks) == {"profiles/good.vhdx", shown}, disks
    assert disks[shown]["path"] == os.path.join(folder, f"bad{U_FFFD}{U_FFFD}name.vhdx"), disks[shown]

    table = ctl_ok(d, "status").stdout
    assert shown in table and "profiles/good.vhdx" in table, table
    metrics = ctl_ok(d, "metrics").stdout
    assert "bad" in metrics and "good.vhdx" in metrics, metrics

    # --all covers it, as the weekly timer's oneshot runs it.
    p = ctl_ok(d, "reclaim", "--all", "--dry-run", "--wait")
    assert shown in p.stdout and "good.vhdx" in p.stdout, p.stdout
    # The name status shows reaches it.
    p = ctl_ok(d, "reclaim", shown, "--wait")
    assert "success" in p.stdout, p.stdout
    x = json.loads(ctl_ok(d, "--json", "status", shown).stdout)[0]
    assert x["last_result"] == "success" and x["reclaimed_total"] > 0, x
    assert_same_content(os.fsdecode(bad), copy)
    assert os.path.exists(good)
    hist = ctl_ok(d, "history", shown).stdout
    assert shown in hist, hist
    assert d.alive()


def test_dry_run_marked_in_status(tmp):
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    w = standard_image(os.path.join(tmp, "w.vhdx"))
    d = Daemon(tmp, config(tmp, [("a", a), ("w", w, "sparse=false")])).start()
    d.wait_probed("a", "w")
    ctl_ok(d, "reclaim", "a", "w", "--wait")
    rows = {r.split()[0]: r for r in ctl_ok(d, "status").stdout.splitlines()[1:] if r.strip()}
    assert "success (dry run)" in rows["w"], rows
    assert "success" in rows["a"] and "dry run" not in rows["a"], rows
    disks = {x["name"]: x for x in json.loads(ctl_ok(d, "--json", "status").stdout)}
    assert disks["w"]["last_result"] == "success" and disks["w"]["last_dry_run"] is True, disks["w"]
    assert disks["a"]["last_result"] == "success" and disks["a"]["last_dry_run"] is False, disks["a"]
    # It survives a restart (the state file keeps the flag).
    d.stop()
    d.start()
    disks = {x["name"]: x for x in json.loads(ctl_ok(d, "--json", "status").stdout)}
    assert disks["w"]["last_dry_run"] is True and disks["a"]["last_dry_run"] is False, disks


def test_history_by_any_spelling(tmp):
    """`status` takes a name in any case (section names ignore case);
    `history` took only the spelling the daemon uses, and showed nothing."""
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    d = Daemon(tmp, config(tmp, [("Alice", a)])).start()
    d.reclaim("Alice")
    d.wait_passes("Alice", 1)
    for spelling in ("Alice", "alice", "ALICE"):
        out = json.loads(ctl_ok(d, "--json", "history", spelling).stdout)
        assert len(out) == 1 and out[0]["name"] == "Alice", (spelling, out)
    d.stop()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io")
    if not CTL or not os.access(CTL, os.X_OK):
        raise SystemExit(f"vhdreclaimctl ({CTL}) not built")
    main([test_non_utf8_file_name, test_dry_run_marked_in_status, test_history_by_any_spelling])
