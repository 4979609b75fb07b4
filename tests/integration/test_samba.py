#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vhdreclaimd behind a real Samba (issue 12): Debian's smbd with a private
configuration shares a folder that a [watch] section of a test daemon
covers, and real SMB clients (smbclient, python3-samba's libsmb) write, hold
open and read the images through it; one creates a user folder and its
container as FSLogix does, for a [watch] with recursive=true.

SAMBA_ROUNDS sets the rounds of the open-during-a-pass test (default 3; the
long run uses 100) and prints the open waits and open-to-release times."""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time

import vhdxtool

from daemonlib import (Daemon, MiB, VHDRECLAIMD, assert_same_content, config, main, make_vhdx,
                       require_tools, run, standard_image, wait_for)
from smbtest import NO_OPLOCK, REQUEST_BATCH_OPLOCK, Client, Samba, require_samba

WATCH = "profiles"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def share_dir(tmp):
    d = os.path.join(tmp, "share")
    os.mkdir(d)
    return d


def watch_config(tmp, share, **reclaim):
    r = {"discard": "safe"}
    r.update(reclaim)
    return config(tmp, reclaim=r, extra=f"\n[watch.{WATCH}]\ndir={share}\npattern=*.vhdx\n")


def leases_on(path):
    """/proc/locks LEASE lines on path's inode: [(state, type)]."""
    ino = os.stat(path).st_ino
    out = []
    with open("/proc/locks") as f:
        for line in f:
            w = line.split()
            if "LEASE" in w and w[w.index("LEASE") + 4].split(":")[-1] == str(ino):
                i = w.index("LEASE")
                out.append((w[i + 1], w[i + 2]))
    return out


def once_json(image):
    p = subprocess.run([VHDRECLAIMD, "--once", "--json", image], capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout.splitlines()[0]) if p.stdout.strip() else {"stderr": p.stderr}


# ---- a client writes an image and closes it ----

def test_written_through_smb_passes_after_idle(tmp):
    share = share_dir(tmp)
    src = standard_image(os.path.join(tmp, "src.vhdx"))
    d = Daemon(tmp, watch_config(tmp, share, idleDelay="2s")).start()
    with Samba(tmp, share) as samba:
        # The whole image comes through smbd: it creates, writes and closes it.
        t0 = time.monotonic()
        samba.smbclient(f"put {src} user1.vhdx")
        put_done = time.monotonic() - t0
        name = f"{WATCH}/user1.vhdx"
        wait_for(lambda: name in d.disks(), 10, what="the image to be picked up")
        x = d.wait_passes(name, 1, timeout=30)
        after_close = time.monotonic() - t0 - put_done
        image = os.path.join(share, "user1.vhdx")
        assert x["last_result"] == "success" and x["reclaimed_last"] > 0, x
        assert after_close >= 1.5, f"the pass came {after_close:.1f}s after smbd's close, before idleDelay"
        assert_same_content(image, src)
        # And a client reads the same bytes back through the share.
        back = os.path.join(tmp, "back.vhdx")
        samba.smbclient(f"get user1.vhdx {back}")
        assert sha256(back) == sha256(image)
        print(f"     pass {after_close:.1f}s after smbd closed the image (idleDelay 2s), "
              f"reclaimed {x['reclaimed_last'] // MiB} MiB")


# ---- FSLogix's layout: a folder per user ----

def test_fslogix_user_folder_through_smb(tmp):
    """A first sign-in as FSLogix makes it, through the share: the client
    creates the user's folder (%username%_%sid%) and the container in it
    (Profile_%username%.VHDX, upper case); the recursive watch finds it and
    passes it idleDelay after smbd's close."""
    share = share_dir(tmp)
    src = standard_image(os.path.join(tmp, "src.vhdx"))
    folder = "alice_S-1-5-21-3623811015-3361044348-30300820-1001"
    text = config(tmp, reclaim={"discard": "safe", "idleDelay": "2s"},
                  extra=f"\n[watch.{WATCH}]\ndir={share}\npattern=*.vhdx\nrecursive=true\n")
    d = Daemon(tmp, text).start()
    with Samba(tmp, share) as samba:
        t0 = time.monotonic()
        samba.smbclient(f"mkdir {folder}; put {src} {folder}\\Profile_alice.VHDX")
        put_done = time.monotonic() - t0
        name = f"{WATCH}/{folder}/Profile_alice.VHDX"
        image = os.path.join(share, folder, "Profile_alice.VHDX")
        assert os.path.isfile(image), os.listdir(share)
        wait_for(lambda: name in d.disks(), 10, what="the image in the new user folder to be picked up")
        x = d.wait_passes(name, 1, timeout=30)
        after_close = time.monotonic() - t0 - put_done
        assert x["last_result"] == "success" and x["reclaimed_last"] > 0, x
        assert after_close >= 1.5, f"the pass came {after_close:.1f}s after smbd's close, before idleDelay"
        assert_same_content(image, src)
        back = os.path.join(tmp, "back.vhdx")
        samba.smbclient(f"get {folder}\\Profile_alice.VHDX {back}")
        assert sha256(back) == sha256(image)
        print(f"     pass {after_close:.1f}s after smbd closed {folder}/Profile_alice.VHDX (idleDelay 2s), "
              f"reclaimed {x['reclaimed_last'] // MiB} MiB")


# ---- a client holds the image open ----

def held_open_case(tmp, share, samba, kernel_oplocks, oplock):
    image = os.path.join(share, "held.vhdx")
    shutil.copyfile(os.path.join(tmp, "orig.vhdx"), image)
    what = f"kernel oplocks = {'yes' if kernel_oplocks else 'no'}, {'batch oplock' if oplock else 'no oplock'}"
    with Client(samba) as c:
        r = c.open("held.vhdx", oplock)
        assert r["ok"], (what, r)
        leases = leases_on(image)
        if kernel_oplocks and oplock:
            # smbd holds a write lease for the client's oplock: the case the
            # old probe open broke.
            assert leases == [("ACTIVE", "WRITE")], (what, leases)
        else:
            assert leases == [], (what, leases)
        # Nothing here may open the image: even a read-only open breaks
        # smbd's write lease. Its content is compared once the client is gone.
        st = os.stat(image)
        rc, rep = once_json(image)
        assert (rc, rep.get("result")) == (0, "skipped-in-use"), (what, rc, rep)
        st2 = os.stat(image)
        assert (st2.st_mtime_ns, st2.st_blocks) == (st.st_mtime_ns, st.st_blocks), what
        assert leases_on(image) == leases, (what, leases_on(image))
        # The client still has its oplock: its next request succeeds (a
        # client that lost it gets an unexpected break and fails here).
        r = c.read(0, 8)
        assert r["ok"] and bytes.fromhex(r["hex"]) == b"vhdxfile", (what, r)
        if oplock:
            # Control: a real second opener does break the oplock, which the
            # holder then notices; so the check above could fail.
            # smbclient waits for the break the holder never acknowledges:
            # it is stopped once the break has had time to arrive.
            other = samba.smbclient_start("get held.vhdx /dev/null")
            time.sleep(1)
            r = c.read(0, 8)
            other.kill()
            other.wait()
            assert not r["ok"], (what, "the holder had no oplock to lose", r)
    assert sha256(image) == sha256(os.path.join(tmp, "orig.vhdx")), what
    os.unlink(image)


def test_held_open_is_skipped_and_undisturbed(tmp):
    standard_image(os.path.join(tmp, "orig.vhdx"))
    for kernel_oplocks in (False, True):
        share = os.path.join(tmp, f"share-{kernel_oplocks}")
        os.mkdir(share)
        with Samba(tmp, share, kernel_oplocks=kernel_oplocks) as samba:
            for oplock in (NO_OPLOCK, REQUEST_BATCH_OPLOCK):
                held_open_case(tmp, share, samba, kernel_oplocks, oplock)
        shutil.rmtree(os.path.join(tmp, "samba"))


# ---- a client opens the image while a pass runs ----

ZERO_FROM = 1 * MiB
ZERO_LEN = 1024 * MiB
SIZE = "2G"


def host_offset(image, guest):
    """File offset of a guest offset, from the BAT (qemu-img map does not
    tell it for VHDX). Blocks keep their place when the zero tier punches
    them and the client's writes land in present blocks."""
    off = vhdxtool.Vhdx.open(image).virtual_to_file(guest)
    assert off is not None, f"guest offset {guest} has no file offset"
    return off


def refill(image):
    """All-zero data again over the zero range, for the pass to work on."""
    run("qemu-io", "-f", "vhdx", "-c", f"write -P 0 {ZERO_FROM} {ZERO_LEN}", image)


def test_open_during_pass(tmp):
    rounds = int(os.environ.get("SAMBA_ROUNDS", "3"))
    share = share_dir(tmp)
    image = os.path.join(share, "busy.vhdx")
    make_vhdx(image, SIZE, [("P", "0x11", 0, ZERO_FROM), ("P", "0", ZERO_FROM, ZERO_LEN)])
    offsets = {ZERO_FROM + (i * 8 * MiB) % ZERO_LEN: None for i in range(rounds)}
    for guest in offsets:
        offsets[guest] = host_offset(image, guest)
    name = f"{WATCH}/busy.vhdx"
    # Slow enough that every round catches a pass in the middle of its work.
    d = Daemon(tmp, watch_config(tmp, share, idleDelay="1h", ioLimit="16M")).start()
    wait_for(lambda: name in d.disks(), 10, what="the image to be picked up")
    waits, to_release, written = [], [], []
    with Samba(tmp, share) as samba:
        done = 0
        while done < rounds:
            passes = d.disk(name)["passes"]
            d.reclaim(name)
            x = wait_for(lambda: (lambda x: x if (x["state"] == "reclaiming" and x["job_done"] > 0)
                                  or x["passes"] > passes else None)(d.disk(name)),
                         20, 0.01, what="the pass to start")
            if x["passes"] > passes:
                # Everything was punched already: give it zeros again.
                refill(image)
                continue
            pattern = 1 + done % 250
            guest = ZERO_FROM + (done * 8 * MiB) % ZERO_LEN
            with Client(samba) as c:
                r = c.open("busy.vhdx", REQUEST_BATCH_OPLOCK)
                assert r["ok"], r
                open_start = r["at"] - r["secs"]
                # A write right after the open, as a user signing in makes.
                w = c.write(offsets[guest], bytes([pattern]) * 65536)
                assert w["ok"], w
                assert c.close_file()["ok"]
            x = d.wait_passes(name, passes + 1, timeout=30)
            assert x["last_result"] == "skipped-in-use", x
            h = d.history(name)[-1]
            assert h["result"] == "skipped-in-use" and "another process opened" in h["message"], h
            release = (h["start"] + h["duration_usec"]) / 1e6
            waits.append(r["secs"])
            to_release.append(release - open_start)
            written.append((guest, pattern))
            # smbd retries a pending open about once a second: released within
            # a second, the first retry succeeds. Its timer is smbd's and our
            # release waits for the read in flight, both late on a loaded
            # machine, so the hard bound is that the first retry serves the
            # open; the figures (and the rounds past 1.1 s) are printed.
            if to_release[-1] > 1.0 or r["secs"] > 1.1:
                print(f"     round {done}: open wait {r['secs']:.3f}s, released {to_release[-1]:.3f}s "
                      f"after the open; pass: {h}", flush=True)
            assert r["secs"] < 1.9, f"round {done}: the open waited {r['secs']:.2f}s: not the first retry"
            done += 1
    d.stop()
    # Every write that came through SMB is there, and the image is valid.
    run("qemu-img", "check", "-q", "-f", "vhdx", image)
    latest = {}
    for guest, pattern in written:
        latest[guest] = pattern
    for guest, pattern in latest.items():
        run("qemu-io", "-f", "vhdx", "-c", f"read -P {pattern} {guest} 64K", image)
    print(f"     {rounds} rounds: open wait max {max(waits):.3f}s mean {statistics.mean(waits):.3f}s "
          f"(over 1.1s: {sum(w > 1.1 for w in waits)}); "
          f"open to release max {max(to_release):.3f}s mean {statistics.mean(to_release):.3f}s; "
          f"lost writes 0 of {len(written)}")


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io")
    require_samba()
    main([test_written_through_smb_passes_after_idle, test_fslogix_user_folder_through_smb,
          test_held_open_is_skipped_and_undisturbed,
          test_open_during_pass])
