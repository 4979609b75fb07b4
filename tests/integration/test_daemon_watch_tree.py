#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The real vhdreclaimd and a [watch] with recursive=true over an FSLogix-like
share: one folder per user (%username%_%sid%) holding Profile_%username%.VHDX
and ODFC_%username%.VHDX, made by qemu-img. Folders created later (a new
user's first sign-in; mkdir -p with the image right after), renamed, moved
in and out, removed; a symlink to a folder outside, which is never followed;
a file system mounted inside the tree, which is not crossed; reload turning
recursive on and off (images and inotify watches follow); a [disk] inside
the tree; the share appearing late; a pass on a nested image, content
compared; the inotify watch limit reached (in a user namespace of its own),
and a folder swapped for a symlink where no event tells: the pass is
refused, the file elsewhere untouched. The time to READY with 2,000 user
folders is printed, not asserted."""

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time

import daemonlib
from daemonlib import (Daemon, assert_same_content, config, drain, main, make_vhdx, require_tools, run, skip,
                       standard_image, wait_for)

WATCH = "profiles"
SID = "S-1-5-21-3623811015-3361044348-30300820"


def user_dir(user, rid):
    """FSLogix's default folder name, %username%_%sid%."""
    return f"{user}_{SID}-{rid}"


def make_user(share, user, rid, odfc=True, size="64M"):
    """A user folder as FSLogix makes it: the profile container, and the
    Office container when Office data is redirected."""
    folder = os.path.join(share, user_dir(user, rid))
    os.makedirs(folder, exist_ok=True)
    make_vhdx(os.path.join(folder, f"Profile_{user}.VHDX"), size)
    if odfc:
        make_vhdx(os.path.join(folder, f"ODFC_{user}.VHDX"), size)
    return folder


def names_of(user, rid, odfc=True):
    names = {f"{WATCH}/{user_dir(user, rid)}/Profile_{user}.VHDX"}
    if odfc:
        names.add(f"{WATCH}/{user_dir(user, rid)}/ODFC_{user}.VHDX")
    return names


def tree_config(share, recursive=True, pattern="*.vhdx", **reclaim):
    r = {"idleDelay": "1h"}
    r.update(reclaim)
    extra = f"\n[watch.{WATCH}]\ndir={share}\npattern={pattern}\n"
    if recursive is not None:
        extra += f"recursive={'true' if recursive else 'false'}\n"
    return config("", reclaim=r, extra=extra)


def fingerprint(path):
    """Content and allocation; synced first: writeback of a fresh copy can
    add an extent block to st_blocks (81920 -> 81928 seen), which is no
    change by the daemon (a punch would lower it)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        return hashlib.sha256(f.read()).hexdigest(), os.fstat(f.fileno()).st_blocks


def listed(d):
    return set(d.disks())


def wait_listed(d, names, timeout=10, what="the images"):
    names = set(names)
    return wait_for(lambda: listed(d) == names, timeout, 0.05, what=f"{what}: {sorted(names)}")


def inotify_watches(pid):
    """inotify watches the process holds, on all its inotify descriptors."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


# ---- the layout ----

def test_fslogix_layout(tmp):
    """Every container in every user folder, at start, named NAME/folder/file;
    upper-case .VHDX matches *.vhdx; a user name outside ASCII; nothing else
    (a text file, a hidden temporary file). The same config without
    recursive=true finds only the image directly in the share."""
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    expected = set()
    for rid, user in enumerate(["alice", "bob", "jürgen", "o'brien"], start=1001):
        make_user(share, user, rid)
        expected |= names_of(user, rid)
    with open(os.path.join(share, user_dir("alice", 1001), "notes.txt"), "w") as f:
        f.write("not an image\n")
    make_vhdx(os.path.join(share, user_dir("bob", 1002), ".Profile_bob.VHDX.tmp.vhdx"), "16M")
    make_vhdx(os.path.join(share, "Loose.Vhdx"), "16M")
    expected.add(f"{WATCH}/Loose.Vhdx")
    # A folder name that is not UTF-8 (a Latin-1 user name from a server
    # whose unix charset was wrong): listed with U+FFFD, reclaimed by that name.
    latin1 = os.path.join(os.fsencode(share), b"ren\xe9_" + SID.encode() + b"-1005")
    os.mkdir(latin1)
    bad = standard_image(os.fsdecode(os.path.join(latin1, b"Profile_ren\xe9.VHDX")))
    copy = standard_image(os.path.join(tmp, "bad.orig.vhdx"))
    shown = f"{WATCH}/ren\ufffd_{SID}-1005/Profile_ren\ufffd.VHDX"
    expected.add(shown)

    d = Daemon(tmp, tree_config(share)).start()
    x = d.wait_probed(*expected, timeout=20)
    assert all(v["format"] == "vhdx" and v["origin"] == f"watch.{WATCH}" for v in x.values()), x
    jp = os.path.join(share, user_dir("jürgen", 1003), "Profile_jürgen.VHDX")
    assert x[f"{WATCH}/{user_dir('jürgen', 1003)}/Profile_jürgen.VHDX"]["path"] == jp
    d.reclaim(shown)
    r = d.wait_passes(shown, 1, timeout=30)
    assert r["last_result"] == "success" and r["reclaimed_last"] > 0, r
    assert_same_content(bad, copy)
    d.stop()

    flat = Daemon(tmp, tree_config(share, recursive=None))
    flat.start()
    wait_listed(flat, {f"{WATCH}/Loose.Vhdx"})
    time.sleep(0.5)
    assert listed(flat) == {f"{WATCH}/Loose.Vhdx"}, listed(flat)


def test_late_user_folders_and_nesting(tmp):
    """A new user's first sign-in: the folder, then the containers in it, made
    while the daemon runs; mkdir -p with an image right after, at depth 3,
    twenty times: nothing created between a folder's creation and its scan
    is missed."""
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    d = Daemon(tmp, tree_config(share)).start()
    time.sleep(0.3)
    assert listed(d) == set()
    make_user(share, "carol", 1101)
    # Created after the scan of their folder: listed, and probed once their
    # writer closes them and the idle pass runs, as in a flat folder.
    wait_listed(d, names_of("carol", 1101), 15)

    src = make_vhdx(os.path.join(tmp, "src.vhdx"), "16M")
    expected = set(names_of("carol", 1101))
    for i in range(20):
        deep = os.path.join(share, f"dept{i}", "team", f"user{i}")
        os.makedirs(deep)
        shutil.copyfile(src, os.path.join(deep, f"Profile_user{i}.VHDX"))
        expected.add(f"{WATCH}/dept{i}/team/user{i}/Profile_user{i}.VHDX")
    wait_listed(d, expected, 15, "every nested image")
    log = d.read_log()
    assert "found by [watch.profiles]" in log


def test_rename_move_and_removal(tmp):
    """A user folder renamed within the tree: found under the new names, the
    old ones gone; a folder with subfolders renamed: every level follows;
    moved out of the share: dropped; moved in from outside: scanned;
    removed: dropped; and the inotify watches follow (none left behind)."""
    share = os.path.join(tmp, "share")
    outside = os.path.join(tmp, "outside")
    os.mkdir(share)
    os.mkdir(outside)
    make_user(share, "dave", 1201)
    nested = os.path.join(share, "dept", "sub")
    os.makedirs(nested)
    make_vhdx(os.path.join(nested, "Profile_erin.VHDX"), "16M")
    d = Daemon(tmp, tree_config(share)).start()
    base = names_of("dave", 1201) | {f"{WATCH}/dept/sub/Profile_erin.VHDX"}
    wait_listed(d, base)
    watches = inotify_watches(d.proc.pid)

    # Renamed (FlipFlopProfileDirectoryName turned on: %sid%_%username%).
    flipped = f"{SID}-1201_dave"
    os.rename(os.path.join(share, user_dir("dave", 1201)), os.path.join(share, flipped))
    renamed = {f"{WATCH}/{flipped}/Profile_dave.VHDX", f"{WATCH}/{flipped}/ODFC_dave.VHDX",
               f"{WATCH}/dept/sub/Profile_erin.VHDX"}
    wait_listed(d, renamed)
    # A folder with a subfolder renamed: the image two levels down follows.
    os.rename(os.path.join(share, "dept"), os.path.join(share, "department"))
    renamed = (renamed - {f"{WATCH}/dept/sub/Profile_erin.VHDX"}) | {f"{WATCH}/department/sub/Profile_erin.VHDX"}
    wait_listed(d, renamed)
    # New files in the renamed folders are seen (their watches follow).
    make_vhdx(os.path.join(share, "department", "sub", "ODFC_erin.VHDX"), "16M")
    renamed.add(f"{WATCH}/department/sub/ODFC_erin.VHDX")
    wait_listed(d, renamed)
    assert inotify_watches(d.proc.pid) == watches, (inotify_watches(d.proc.pid), watches)

    # Moved out of the share, then back in.
    os.rename(os.path.join(share, flipped), os.path.join(outside, flipped))
    after_out = renamed - {f"{WATCH}/{flipped}/Profile_dave.VHDX", f"{WATCH}/{flipped}/ODFC_dave.VHDX"}
    wait_listed(d, after_out)
    assert inotify_watches(d.proc.pid) == watches - 1
    # Written while outside: not ours, and the daemon does not touch it.
    make_vhdx(os.path.join(outside, flipped, "extra.vhdx"), "16M")
    os.rename(os.path.join(outside, flipped), os.path.join(share, flipped))
    wait_listed(d, renamed | {f"{WATCH}/{flipped}/extra.vhdx"})
    assert inotify_watches(d.proc.pid) == watches

    # Removed, with everything below it.
    shutil.rmtree(os.path.join(share, "department"))
    wait_listed(d, {f"{WATCH}/{flipped}/Profile_dave.VHDX", f"{WATCH}/{flipped}/ODFC_dave.VHDX",
                    f"{WATCH}/{flipped}/extra.vhdx"})
    wait_for(lambda: inotify_watches(d.proc.pid) == watches - 2, 5, what="the removed folders' watches to go")
    assert d.alive()


def test_symlinked_folder_is_not_followed(tmp):
    """A symlink to a folder outside (a user of the share could point one
    anywhere): neither listed nor opened, at start or made later, and said in
    the log. A user folder swapped for a symlink to a folder with a file of
    the same name: the image is dropped, and no pass reaches the file."""
    share = os.path.join(tmp, "share")
    outside = os.path.join(tmp, "outside")
    os.mkdir(share)
    os.mkdir(outside)
    target = standard_image(os.path.join(outside, "Profile_mallory.VHDX"))
    before = fingerprint(target)
    os.symlink(outside, os.path.join(share, user_dir("mallory", 1301)))
    make_user(share, "frank", 1302, odfc=False)
    d = Daemon(tmp, tree_config(share, idleDelay="1s")).start()
    wait_listed(d, names_of("frank", 1302, odfc=False))
    assert "a symbolic link to a folder below [watch.profiles], not followed" in d.read_log(), d.read_log()

    # Made while the daemon runs.
    os.symlink(outside, os.path.join(share, "later"))
    wait_for(lambda: f"{share}/later: a symbolic link to a folder" in d.read_log(), 5,
             what="the new symlink to be noticed")

    # frank's folder moved away and replaced by a symlink to a folder that
    # holds a file of the same name: the old image goes, nothing comes back.
    frank = os.path.join(share, user_dir("frank", 1302))
    shutil.copyfile(target, os.path.join(outside, "Profile_frank.VHDX"))
    decoy = fingerprint(os.path.join(outside, "Profile_frank.VHDX"))
    os.rename(frank, os.path.join(tmp, "frank-away"))
    os.symlink(outside, frank)
    wait_listed(d, set())
    d.call("Reload")
    time.sleep(1.5)
    assert listed(d) == set(), listed(d)
    assert fingerprint(target) == before, (fingerprint(target), before)
    assert fingerprint(os.path.join(outside, "Profile_frank.VHDX")) == decoy, (fingerprint(os.path.join(outside, "Profile_frank.VHDX")), decoy)


def test_mount_inside_tree_is_not_crossed(tmp):
    """A file system mounted inside the tree (tmpfs): not descended into,
    logged once (not again at a reload); mounted later over a user folder:
    the images it hides are dropped; unmounted: found again."""
    if os.geteuid() != 0:
        skip("mounting a tmpfs needs root")
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    make_user(share, "gina", 1401, odfc=False)
    mnt = os.path.join(share, "mnt")
    os.mkdir(mnt)
    run("mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", mnt)
    late = None
    try:
        make_vhdx(os.path.join(mnt, "other-fs.vhdx"), "16M")
        make_user(mnt, "hidden", 1402, odfc=False)
        d = Daemon(tmp, tree_config(share)).start()
        wait_listed(d, names_of("gina", 1401, odfc=False))
        notice = f"[watch.{WATCH}]: {mnt} is another file system, not descended into"
        wait_for(lambda: notice in d.read_log(), 5, what="the mount to be logged")
        d.call("Reload")
        time.sleep(0.5)
        assert d.read_log().count(notice) == 1, d.read_log()
        assert listed(d) == names_of("gina", 1401, odfc=False)

        # Mounted later over a user folder whose image was listed.
        late = os.path.join(share, user_dir("gina", 1401))
        run("mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", late)
        wait_listed(d, set(), 10, "the hidden image to be dropped")
        assert d.read_log().count(f"{late} is another file system") == 1
        # Created in the mounted file system: not ours either.
        make_vhdx(os.path.join(late, "on-tmpfs.vhdx"), "16M")
        time.sleep(0.5)
        assert listed(d) == set(), listed(d)
        run("umount", late)
        late = None
        wait_listed(d, names_of("gina", 1401, odfc=False), 10, "the image under the mount to be found again")
    finally:
        if late:
            subprocess.run(["umount", late], capture_output=True)
        subprocess.run(["umount", mnt], capture_output=True)


def test_reload_turns_recursive_on_and_off(tmp):
    """recursive=false (the default) to true: the nested images come, and
    their folders are watched; back to false: they go, and so do the
    watches; the image directly in the share stays throughout."""
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    make_user(share, "ivan", 1501)
    make_user(os.path.join(share, "region", "east"), "judy", 1502, odfc=False)
    make_vhdx(os.path.join(share, "top.vhdx"), "16M")
    top = {f"{WATCH}/top.vhdx"}
    nested = names_of("ivan", 1501) | {f"{WATCH}/region/east/{user_dir('judy', 1502)}/Profile_judy.VHDX"}
    d = Daemon(tmp, tree_config(share, recursive=False)).start()
    wait_listed(d, top)
    flat_watches = inotify_watches(d.proc.pid)

    d.write_config(tree_config(share, recursive=True))
    d.call("Reload")
    wait_listed(d, top | nested)
    # The share, ivan's folder, region, east and judy's folder.
    assert inotify_watches(d.proc.pid) == flat_watches + 4, inotify_watches(d.proc.pid)
    # A new nested image is seen by the watches the reload added.
    make_vhdx(os.path.join(share, "region", "east", "new.vhdx"), "16M")
    wait_listed(d, top | nested | {f"{WATCH}/region/east/new.vhdx"})

    d.write_config(tree_config(share, recursive=False))
    d.call("Reload")
    wait_listed(d, top)
    assert inotify_watches(d.proc.pid) == flat_watches, inotify_watches(d.proc.pid)
    # A nested image made now is not ours.
    make_vhdx(os.path.join(share, "region", "newer.vhdx"), "16M")
    time.sleep(0.5)
    assert listed(d) == top, listed(d)
    log = d.read_log()
    assert "no longer watched" in log, log


def test_pass_on_nested_image(tmp):
    """A nested container gets its pass, on request and after its writer
    closes it (idleDelay), and reads back exactly as before."""
    share = os.path.join(tmp, "share")
    folder = os.path.join(share, "site", user_dir("kim", 1601))
    os.makedirs(folder)
    img = standard_image(os.path.join(folder, "Profile_kim.VHDX"))
    orig = os.path.join(tmp, "orig.vhdx")
    shutil.copyfile(img, orig)
    name = f"{WATCH}/site/{user_dir('kim', 1601)}/Profile_kim.VHDX"
    d = Daemon(tmp, tree_config(share, idleDelay="1s")).start()
    d.wait_probed(name)
    d.reclaim(name)
    x = d.wait_passes(name, 1, timeout=30)
    assert x["last_result"] == "success" and x["reclaimed_last"] > 0, x
    assert_same_content(img, orig)

    # The writer (a user signing in and out) writes zeros again and closes.
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0 4M 8M", img)
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0 4M 8M", orig)
    x = d.wait_passes(name, 2, timeout=30)
    assert x["last_result"] == "success" and x["reclaimed_last"] > 0, x
    h = d.history(name)
    assert h[-1]["result"] == "success", h
    assert_same_content(img, orig)


def test_disk_in_user_folder_stays_a_disk(tmp):
    """A [disk] with sparse=false names a container in a user folder (the
    admin's word on that file): the recursive watch does not manage it, at
    start or after its folder is renamed back and forth, and it is never
    modified; --check-config says so with file and line."""
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    make_user(share, "lena", 1801, odfc=False)
    folder = make_user(share, "mike", 1802, odfc=False)
    keep = os.path.join(folder, "Profile_mike.VHDX")
    standard_image(keep)
    before = fingerprint(keep)
    text = config("", [("keep", keep, "sparse=false")], reclaim={"idleDelay": "1s"},
                  extra=f"\n[watch.{WATCH}]\ndir={share}\nrecursive=true\n")
    d = Daemon(tmp, text).start()
    wait_listed(d, {"keep"} | names_of("lena", 1801, odfc=False))
    assert (f"[disk.keep] names a file that [watch.{WATCH}] (line 19) matches: it is managed as [disk.keep] only"
            in d.read_log()), d.read_log()
    for name in d.disks():
        d.reclaim(name)
        d.wait_passes(name, 1, timeout=30)
    assert fingerprint(keep) == before, "the sparse=false image was modified"
    # Its folder moved away and back: missing, then present again as the [disk].
    os.rename(folder, os.path.join(tmp, "away"))
    wait_for(lambda: d.disk("keep")["state"] == "missing", 5, what="the disk to be missing")
    os.rename(os.path.join(tmp, "away"), folder)
    wait_for(lambda: d.disk("keep")["state"] == "watch-only", 10, what="the disk to be back")
    assert listed(d) == {"keep"} | names_of("lena", 1801, odfc=False), listed(d)
    # A writer's close: no pass modifies it.
    with open(keep, "r+b"):
        pass
    time.sleep(2.5)
    assert fingerprint(keep) == before, "the sparse=false image was modified"

    conf = os.path.join(tmp, "check.conf")
    with open(conf, "w") as f:
        f.write(f"[watch.{WATCH}]\ndir={share}\nrecursive=true\n\n[disk.keep]\npath={keep}\nsparse=false\n")
    p = subprocess.run([daemonlib.VHDRECLAIMD, "-n", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 0, p
    assert (f"{conf}:6: warning: [disk.keep] names a file that [watch.{WATCH}] (line 2) matches: "
            "it is managed as [disk.keep] only") in p.stderr, p.stderr


def test_missing_share_appears_with_its_tree(tmp):
    """The share does not exist at start: once it appears with user folders
    already in it (created several levels at once, or mounted), every
    container is found without a reload; removed and made again, the same."""
    share = os.path.join(tmp, "srv", "fslogix")
    d = Daemon(tmp, tree_config(share)).start()
    time.sleep(0.3)
    assert listed(d) == set()
    staging = os.path.join(tmp, "staging")
    make_user(staging, "nina", 1901)
    os.makedirs(os.path.dirname(share))
    os.rename(staging, share)
    wait_listed(d, names_of("nina", 1901))
    make_user(share, "omar", 1902, odfc=False)
    wait_listed(d, names_of("nina", 1901) | names_of("omar", 1902, odfc=False))
    shutil.rmtree(os.path.join(tmp, "srv"))
    wait_listed(d, set())
    os.makedirs(os.path.join(share, user_dir("nina", 1901)))
    make_user(share, "nina", 1901)
    wait_listed(d, names_of("nina", 1901))
    assert "does not exist: the watch is inactive" in d.read_log()


def start_with_watch_limit(tmp, text, limit):
    """A daemon whose user has limit inotify watches: the limit of a user
    namespace of its own (mapped to root), not the machine's."""
    if os.geteuid() != 0:
        skip("a user namespace mapped to root needs root")
    if not shutil.which("unshare"):
        skip("unshare is not installed")
    set_limit = f"echo {limit} > /proc/sys/user/max_inotify_watches"
    probe = subprocess.run(["unshare", "-U", "--map-root-user", "sh", "-c", set_limit],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        skip(f"cannot lower max_inotify_watches in a user namespace: {probe.stderr.strip()}")
    wrapper = os.path.join(tmp, "in-userns.sh")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec unshare -U --map-root-user sh -c '{set_limit} && exec \"$0\" \"$@\"' "
                f"{daemonlib.VHDRECLAIMD} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    saved = daemonlib.VHDRECLAIMD
    daemonlib.VHDRECLAIMD = wrapper
    try:
        return Daemon(tmp, text).start()
    finally:
        daemonlib.VHDRECLAIMD = saved


def test_inotify_watch_limit(tmp):
    """The limit of inotify watches reached: a warning names the first
    folder left unwatched and the sysctl, another the count; the images are
    still found."""
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    expected = set()
    for i in range(8):
        make_user(share, f"u{i}", 1700 + i, odfc=False, size="16M")
        expected |= names_of(f"u{i}", 1700 + i, odfc=False)
    # The share and five user folders get a watch; three do not.
    d = start_with_watch_limit(tmp, tree_config(share), 6)
    wait_listed(d, expected, 15)
    log = d.read_log()
    assert "the limit of inotify watches is reached (sysctl fs.inotify.max_user_watches" in log, log
    assert f"cannot watch {share}/u" in log, log
    assert f"[watch.{WATCH}]: 3 folders below {share} are not watched for the limit of inotify watches" in log, log


def test_swapped_folder_unseen_refuses_the_pass(tmp):
    """The swap the events cannot catch: a user folder in a folder the watch
    limit left unwatched is replaced by a symlink to a folder elsewhere that
    holds a file of the same name. The image is still listed, but its pass
    opens every component below the share without following a link: it is
    refused, and the file elsewhere is not touched."""
    share = os.path.join(tmp, "share")
    dept = os.path.join(share, "dept")
    outside = os.path.join(tmp, "outside")
    os.makedirs(dept)
    os.mkdir(outside)
    folder = make_user(dept, "pat", 2001, odfc=False)
    standard_image(os.path.join(folder, "Profile_pat.VHDX"))
    name = f"{WATCH}/dept/{user_dir('pat', 2001)}/Profile_pat.VHDX"
    # Only the share itself is watched.
    d = start_with_watch_limit(tmp, tree_config(share), 1)
    d.wait_probed(name)
    decoy = standard_image(os.path.join(outside, "Profile_pat.VHDX"))
    before = fingerprint(decoy)
    os.rename(folder, os.path.join(dept, "moved-away"))
    os.symlink(outside, folder)
    time.sleep(0.5)
    assert name in listed(d), "the swap was seen: this test needs the folder unwatched"
    d.reclaim(name)
    x = d.wait_passes(name, 1, timeout=30)
    assert x["last_result"] == "refused-invalid", x
    h = d.history(name)[-1]
    assert "symbolic link below its watched folder" in h["message"], h
    assert fingerprint(decoy) == before, "the file the symlink leads to was modified"


def test_startup_2000_user_folders(tmp):
    """2,000 user folders with one container each: all listed; the time to
    READY is printed (speed targets live in bench/)."""
    n = 2000
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    src = make_vhdx(os.path.join(tmp, "src.vhdx"), "64M")
    with open(src, "rb") as f:
        data = f.read()
    # Sparse copies: only the non-zero 4 KiB blocks are written.
    blocks = [(off, data[off:off + 4096]) for off in range(0, len(data), 4096) if any(data[off:off + 4096])]
    for i in range(n):
        folder = os.path.join(share, user_dir(f"user{i}", 10000 + i))
        os.mkdir(folder)
        fd = os.open(os.path.join(folder, f"Profile_user{i}.VHDX"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for off, b in blocks:
                os.pwrite(fd, b, off)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
    notify = os.path.join(tmp, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify)
    listener.settimeout(60)
    d = Daemon(tmp, tree_config(share), env=dict(os.environ, NOTIFY_SOCKET=notify))
    t0 = time.monotonic()
    d.start(wait=False)
    while "READY=1" not in listener.recv(4096).decode().split("\n"):
        pass
    ready = time.monotonic() - t0
    # Read on, as systemd does: a full socket would block its sd_notify().
    threading.Thread(target=drain, args=(listener,), daemon=True).start()
    names = wait_for(lambda: (lambda x: x if len(x) == n else None)(listed(d)), 30, 0.2, what="every image")
    assert f"{WATCH}/{user_dir('user0', 10000)}/Profile_user0.VHDX" in names
    print(f"     READY after {ready * 1000:.0f} ms with {n} user folders x 1 image "
          f"({inotify_watches(d.proc.pid)} inotify watches)", flush=True)


def test_names_differing_in_case(tmp):
    """Two files whose names differ only in case (the host's file system
    keeps both; disk names ignore case): one is managed, and the warning
    names the other file and the one that has the name (it named the
    rejected file twice)."""
    share = os.path.join(tmp, "share")
    folder = os.path.join(share, user_dir("carol", 1303))
    os.makedirs(folder)
    make_vhdx(os.path.join(folder, "Profile_carol.VHDX"), "64M")
    d = Daemon(tmp, tree_config(share)).start()
    wait_listed(d, names_of("carol", 1303, odfc=False))
    kept = d.disk(next(iter(names_of("carol", 1303, odfc=False))))["path"]
    make_vhdx(os.path.join(folder, "profile_carol.vhdx"), "64M")
    other = os.path.join(folder, "profile_carol.vhdx")
    wait_for(lambda: f"cannot add {other}: its name" in d.read_log(), 10, what="the warning")
    line = next(x for x in d.read_log().splitlines() if f"cannot add {other}" in x)
    assert f"is already that of {kept}" in line, line
    assert listed(d) == names_of("carol", 1303, odfc=False), listed(d)
    d.stop()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    main([test_fslogix_layout, test_late_user_folders_and_nesting, test_rename_move_and_removal,
          test_symlinked_folder_is_not_followed, test_mount_inside_tree_is_not_crossed,
          test_reload_turns_recursive_on_and_off, test_pass_on_nested_image, test_disk_in_user_folder_stays_a_disk,
          test_missing_share_appears_with_its_tree, test_inotify_watch_limit,
          test_swapped_folder_unseen_refuses_the_pass, test_names_differing_in_case,
          test_startup_2000_user_folders])
