#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The real vhdreclaimd and its [watch] folders at their edges: a file that a
[disk] names is never managed by a [watch] (at start and after a reload, by
inode whatever the spelling); symlinks in a watched folder (writable by the
share's users) are not followed; a watched folder that does not exist yet,
or that a file system is mounted on later, is picked up without a reload.
Every image the daemon must leave alone is compared byte for byte."""

import hashlib
import os
import shutil
import subprocess
import time

from daemonlib import (VHDRECLAIMD, Daemon, MiB, config, main, require_tools, run, skip, standard_image,
                       wait_for)


def fingerprint(path):
    """Content and allocation: a punch of zero runs changes only the latter."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_blocks


def wait_probed(d, *names, timeout=10):
    """These disks listed with their format read, whatever else is listed."""
    return wait_for(lambda: (lambda x: x if all(n in x and x[n]["format"] != "unknown" for n in names) else None)(
        d.disks()), timeout, 0.05, what=f"the formats of {', '.join(names)}")


def watch_section(name, folder, pattern="*.vhdx"):
    return f"\n[watch.{name}]\ndir={folder}\npattern={pattern}\n"


def test_disk_added_by_reload_is_never_managed_by_the_watch(tmp):
    """FINDING 11: the watch found the file first, then a [disk] with
    sparse=false names it: the watch lets go (status lists it once, as the
    [disk]), a warning names both sections, and a writer's close no longer
    starts a pass that modifies it."""
    folder = os.path.join(tmp, "profiles")
    os.mkdir(folder)
    img = standard_image(os.path.join(folder, "with space.vhdx"))
    orig = os.path.join(tmp, "orig.vhdx")
    shutil.copyfile(img, orig)
    reclaim = {"idleDelay": "1s"}
    extra = watch_section("profiles", folder)
    d = Daemon(tmp, config(tmp, reclaim=reclaim, extra=extra)).start()
    d.wait_probed("profiles/with space.vhdx")

    # Named through another spelling (a symlink to the folder): the same inode.
    alias = os.path.join(tmp, "alias")
    os.symlink(folder, alias)
    d.write_config(config(tmp, [("dup", os.path.join(alias, "with space.vhdx"), "sparse=false")], reclaim=reclaim,
                          extra=extra))
    d.call("Reload")
    wait_probed(d, "dup")

    # A writer rewrites the image: its close must not lead to a pass that modifies it.
    shutil.copyfile(orig, img)
    before = fingerprint(img)
    time.sleep(3)
    assert fingerprint(img) == before, "the sparse=false image was modified"
    disks = d.disks()
    assert set(disks) == {"dup"}, disks
    assert disks["dup"]["state"] == "watch-only", disks
    log = d.read_log()
    assert "[disk.dup]" in log and "[watch.profiles]" in log and "managed as [disk.dup] only" in log, log
    assert "profiles/with space.vhdx" not in d.disks()
    assert all(h["name"] != "profiles/with space.vhdx" for h in d.history()), d.history()
    # A rescan (a reload) does not bring the watch's entry back.
    d.call("Reload")
    assert set(d.disks()) == {"dup"}, d.disks()

    # The [disk] gone: the watch manages the file again.
    d.write_config(config(tmp, reclaim=reclaim, extra=extra))
    d.call("Reload")
    wait_for(lambda: set(d.disks()) == {"profiles/with space.vhdx"}, 5, what="the watch to take the file back")


def test_disk_named_by_other_spelling_at_start(tmp):
    """The watch's folder reached through a symlink, the [disk] by the real
    path: at start the watch skips the file too, whatever the spelling."""
    folder = os.path.join(tmp, "share")
    os.mkdir(folder)
    img = standard_image(os.path.join(folder, "keep.vhdx"))
    standard_image(os.path.join(folder, "other.vhdx"))
    link = os.path.join(tmp, "share-link")
    os.symlink(folder, link)
    d = Daemon(tmp, config(tmp, [("keep", img, "sparse=false")], extra=watch_section("share", link))).start()
    wait_probed(d, "keep", "share/other.vhdx")
    before = fingerprint(img)
    for name in d.disks():
        d.reclaim(name)
        d.wait_passes(name, 1)
    assert fingerprint(img) == before, "the sparse=false image was modified"
    disks = d.disks()
    assert set(disks) == {"keep", "share/other.vhdx"}, disks
    log = d.read_log()
    assert "named by [disk.keep] and matched by [watch.share]" in log, log


def test_check_config_names_both_sections(tmp):
    """--check-config warns (file:line) about a [disk] in a watched folder,
    before any daemon runs; a name the pattern does not match is no overlap."""
    conf = os.path.join(tmp, "c.conf")
    with open(conf, "w") as f:
        f.write("[watch.profiles]\ndir=/srv/x\n\n[disk.dup]\npath=/srv/x/with space.vhdx\nsparse=false\n"
                "\n[disk.notes]\npath=/srv/x/notes.img\n")
    p = subprocess.run([VHDRECLAIMD, "-n", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 0, p
    assert (f"{conf}:5: warning: [disk.dup] names a file that [watch.profiles] (line 2) matches: "
            "it is managed as [disk.dup] only") in p.stderr, p.stderr
    assert "notes" not in p.stderr, p.stderr


def test_symlinks_in_watch_folder_are_not_followed(tmp):
    """FINDING 2: a user of the share links an image outside the folder (or
    any file) into it: the daemon neither lists it nor opens it for writing."""
    folder = os.path.join(tmp, "profiles")
    outside = os.path.join(tmp, "outside")
    os.mkdir(folder)
    os.mkdir(outside)
    target = standard_image(os.path.join(outside, "target.vhdx"))
    before = fingerprint(target)
    os.symlink(target, os.path.join(folder, "link.vhdx"))
    own = standard_image(os.path.join(folder, "own.vhdx"))
    d = Daemon(tmp, config(tmp, reclaim={"idleDelay": "1s"}, extra=watch_section("profiles", folder))).start()
    wait_probed(d, "profiles/own.vhdx")
    # Whatever is listed gets a pass: none may reach the target.
    for name in d.disks():
        d.reclaim(name)
        d.wait_passes(name, 1)
    assert fingerprint(target) == before, "the image outside the watched folder was modified"
    assert set(d.disks()) == {"profiles/own.vhdx"}, d.disks()
    assert "link.vhdx: a symbolic link" in d.read_log(), d.read_log()

    # One created while the daemon runs: ignored too, and named in the log.
    os.symlink(target, os.path.join(folder, "later.vhdx"))
    wait_for(lambda: "later.vhdx: a symbolic link" in d.read_log(), 5, what="the new symlink to be noticed")
    assert set(d.disks()) == {"profiles/own.vhdx"}, d.disks()

    # A managed image replaced by a symlink (renamed over it): dropped, never followed.
    tmp_link = os.path.join(tmp, "swap.vhdx")
    os.symlink(target, tmp_link)
    os.rename(tmp_link, own)
    wait_for(lambda: "profiles/own.vhdx" not in d.disks(), 5, what="the replaced image to be dropped")
    d.call("Reload")
    time.sleep(2)
    assert d.disks() == {}, d.disks()
    assert fingerprint(target) == before, "the image outside the watched folder was modified"


def test_missing_watch_folder_is_picked_up_when_it_appears(tmp):
    """FINDING 8 (A): the folder does not exist at start: a warning says the
    watch is inactive; once it is created (several levels at once) its images
    are found without a reload. Removed and created again: the same."""
    base = os.path.join(tmp, "srv")
    folder = os.path.join(base, "fslogix", "profiles")
    d = Daemon(tmp, config(tmp, extra=watch_section("profiles", folder))).start()
    time.sleep(0.5)
    assert d.disks() == {}
    os.makedirs(folder)
    standard_image(os.path.join(folder, "alice.vhdx"))
    wait_probed(d, "profiles/alice.vhdx")
    log = d.read_log()
    assert f"[watch.profiles]: {folder} does not exist: the watch is inactive" in log, log
    assert "appeared, watching it" in log, log

    # Gone and back.
    shutil.rmtree(os.path.join(base, "fslogix"))
    wait_for(lambda: d.disks() == {}, 5, what="the images of the removed folder to be dropped")
    os.makedirs(folder)
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image\n")
    standard_image(os.path.join(tmp, "bob.vhdx"))
    os.rename(os.path.join(tmp, "bob.vhdx"), os.path.join(folder, "bob.vhdx"))
    wait_probed(d, "profiles/bob.vhdx")
    assert d.alive()


def test_disk_folder_appearing_later_is_watched(tmp):
    """A [disk] whose folder does not exist at start: once the folder and
    the image appear, the image is present again and a writer's close starts
    its idle pass, without a reload."""
    folder = os.path.join(tmp, "later", "wsl")
    img = os.path.join(folder, "ext4.vhdx")
    d = Daemon(tmp, config(tmp, [("late", img)], reclaim={"idleDelay": "1s"})).start()
    wait_for(lambda: d.disk("late")["state"] == "missing", 5, what="the disk to be missing")
    staging = os.path.join(tmp, "staging")
    os.makedirs(staging)
    standard_image(os.path.join(staging, "ext4.vhdx"))
    os.makedirs(os.path.dirname(folder))
    os.rename(staging, folder)
    wait_for(lambda: d.disk("late")["state"] == "idle" and d.disk("late")["format"] == "vhdx", 10,
             what="the disk to be present again")
    # A writer's close in the new folder: the idle pass follows.
    with open(img, "r+b") as f:
        f.seek(0, os.SEEK_END)
    d.wait_passes("late", 1, timeout=15)
    run("qemu-img", "check", "-q", img)
    assert "[disk.late]: the folder" in d.read_log(), d.read_log()


def test_file_system_mounted_on_watch_folder(tmp):
    """FINDING 8 (B), the FSLogix/Samba case: the share's file system is
    mounted on the (empty) watched folder after the daemon started: its
    images are found without a reload, and a new one is picked up; unmounted,
    they are dropped and the folder underneath is watched again."""
    if os.geteuid() != 0:
        skip("mounting a loop device needs root")
    for t in ("mkfs.ext4", "mount", "umount"):
        if not shutil.which(t):
            skip(f"{t} is not installed")
    src = os.path.join(tmp, "src")
    os.mkdir(src)
    standard_image(os.path.join(src, "inmount.vhdx"))
    backing = os.path.join(tmp, "fs.img")
    with open(backing, "wb") as f:
        f.truncate(256 * MiB)
    run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", src, backing)
    folder = os.path.join(tmp, "share")
    os.mkdir(folder)
    d = Daemon(tmp, config(tmp, extra=watch_section("share", folder))).start()
    time.sleep(0.5)
    assert d.disks() == {}
    run("mount", "-o", "loop", backing, folder)
    try:
        wait_probed(d, "share/inmount.vhdx")
        # Written under another name, then renamed: found complete.
        standard_image(os.path.join(folder, "new2.tmp"))
        os.rename(os.path.join(folder, "new2.tmp"), os.path.join(folder, "new2.vhdx"))
        d.wait_probed("share/inmount.vhdx", "share/new2.vhdx", timeout=10)
    finally:
        subprocess.run(["umount", folder], capture_output=True)
    wait_for(lambda: d.disks() == {}, 10, what="the images of the unmounted file system to be dropped")
    # The folder underneath is watched again.
    standard_image(os.path.join(folder, "under.tmp"))
    os.rename(os.path.join(folder, "under.tmp"), os.path.join(folder, "under.vhdx"))
    wait_probed(d, "share/under.vhdx")
    assert d.alive()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    main([test_disk_added_by_reload_is_never_managed_by_the_watch, test_disk_named_by_other_spelling_at_start,
          test_check_config_names_both_sections, test_symlinks_in_watch_folder_are_not_followed,
          test_missing_watch_folder_is_picked_up_when_it_appears, test_disk_folder_appearing_later_is_watched,
          test_file_system_mounted_on_watch_folder])
