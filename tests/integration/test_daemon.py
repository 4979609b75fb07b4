#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The real vhdreclaimd on qemu-img-made VHDX images, driven with busctl:
status, reclaim, state across restarts, schedules, idle trigger, watches,
SIGTERM during a pass. Every pass is checked with qemu-img compare against a
copy made before it, and qemu-img check."""

import grp
import os
import shutil
import signal
import subprocess
import time

from daemonlib import (MiB, Daemon, allocated, assert_same_content, config, main, make_vhdx,
                       qemu_info, require_tools, standard_image, wait_for)


def image_with_copy(tmp, name, size="64M"):
    img = standard_image(os.path.join(tmp, f"{name}.vhdx"), size)
    copy = os.path.join(tmp, f"{name}.orig.vhdx")
    shutil.copyfile(img, copy)
    return img, copy


def test_status_matches_qemu_img_and_stat(tmp):
    a, _ = image_with_copy(tmp, "a")
    b = make_vhdx(os.path.join(tmp, "b.vhdx"), "1G")
    d = Daemon(tmp, config(tmp, [("a", a), ("b", b, "sparse=false")])).start()
    disks = d.wait_probed("a", "b")
    for name, path in (("a", a), ("b", b)):
        info, st, x = qemu_info(path), os.stat(path), disks[name]
        assert x["path"] == path and x["origin"] == "disk", x
        assert x["format"] == info["format"] == "vhdx", (x, info)
        assert x["virtual_size"] == info["virtual-size"], (x, info)
        assert x["file_size"] == st.st_size, (x, st)
        assert x["allocated"] == st.st_blocks * 512, (x, st)
        assert x["state"] == ("idle" if name == "a" else "watch-only"), x
        assert x["passes"] == 0 and x["last_result"] == "", x
        assert x["next_pass"] == 0, x       # interval=0: no periodic passes
    assert disks["a"]["sparse"] is True and disks["b"]["sparse"] is False
    # One name, and an unknown one.
    assert list(d.disks("b")) == ["b"]
    p = d.call("ListDisks", "as", 1, "nope", check=False)
    assert p.returncode != 0 and "No disk named" in p.stderr, p.stderr
    props = d.busctl("get-property", "org.vhdreclaim", "/org/vhdreclaim/Manager",
                     "org.vhdreclaim.Manager1", "Disks", "State", "Version").stdout.split("\n")
    assert '"data":2' in props[0] and '"idle"' in props[1], props


def test_reclaim_via_busctl(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    before = allocated(a)
    # A dry run measures and changes nothing.
    d.reclaim("a", dry_run=True)
    h = d.wait_history("a", 1)
    assert allocated(a) == before
    assert h[0]["result"] == "success" and h[0]["zero_bytes"] >= 16 * MiB, h
    x = d.disk("a")
    assert x["reclaimable"] >= 16 * MiB and x["passes"] == 0, x

    ids = d.reclaim("a")
    assert len(ids) == 1 and ids[0] > 0, ids
    x = d.wait_passes("a", 1)
    after = allocated(a)
    assert x["last_result"] == "success", x
    assert x["reclaimed_last"] == before - after and x["reclaimed_total"] == before - after, (x, before, after)
    assert before - after >= 16 * MiB, (before, after)
    assert x["allocated"] == after and x["reclaimable"] == 0, x
    assert_same_content(a, copy)
    # The history holds both, newest last, with the once-mode fields.
    h = d.history("a")
    assert [e["result"] for e in h] == ["success", "success"] and h[1]["reclaimed"] == before - after, h
    assert all(len(e) == 11 and e["discard"] == "safe" and e["free_bytes"] == 0 for e in h), h
    assert h[1]["zero_bytes"] >= 16 * MiB and h[1]["path"] == a, h
    line = open(os.path.join(d.state, "history.jsonl")).read().splitlines()[-1]
    for key in ("path", "format", "virtual_size", "file_size", "allocated_before", "allocated_after",
                "reclaimed", "stale_bytes", "zero_bytes", "free_bytes", "filesystem", "result",
                "message", "duration_ms", "name", "start"):
        assert f'"{key}":' in line, (key, line)
    # A second pass finds nothing; the total stays.
    d.reclaim("a")
    x = d.wait_passes("a", 2)
    assert x["last_result"] == "nothing-to-do" and x["reclaimed_total"] == before - after, x
    total = d.call("GetTrimStatus")
    assert total == [[]], total
    assert d.stop() < 2


def test_unknown_and_bad_arguments(tmp):
    a, _ = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    p = d.call("Reclaim", "asbbs", 1, "nope", "false", "false", "", check=False)
    assert "No disk named" in p.stderr, p.stderr
    p = d.call("Reclaim", "asbbs", 1, "a", "false", "false", "everything", check=False)
    assert p.returncode != 0 and "discard" in p.stderr, p.stderr
    p = d.call("Cancel", "t", 12345, check=False)
    assert "No job" in p.stderr, p.stderr
    p = d.call("SetSparse", "sb", "nope", "true", check=False)
    assert "No disk named" in p.stderr, p.stderr
    assert d.alive()


def test_state_survives_restart_and_missed_interval_runs(tmp):
    a, copy = image_with_copy(tmp, "a")
    # idleDelay: a periodic pass waits that long after the image's last change (its creation here).
    conf = config(tmp, [("a", a)], reclaim={"interval": "1h", "idleDelay": "2s"})
    d = Daemon(tmp, conf).start()
    # Never passed: due at once (once the image is idleDelay old).
    x = d.wait_passes("a", 1)
    assert x["last_result"] == "success" and x["reclaimed_total"] > 0, x
    # The next on the image's own slot, half an interval to one and a half after the last.
    assert x["last_pass"] + 1800 * 10**6 <= x["next_pass"] < x["last_pass"] + 5400 * 10**6, x
    assert d.stop() < 2
    assert_same_content(a, copy)

    # Restarted within the interval: the record is back and nothing runs.
    d.start()
    time.sleep(1.5)
    y = d.disk("a")
    for k in ("passes", "reclaimed_total", "reclaimed_last", "last_pass", "last_result"):
        assert y[k] == x[k], (k, x, y)
    assert y["next_pass"] > time.time() * 10**6 + 1700 * 10**6, y   # its slot: at least half an interval on
    d.stop()

    # Restarted after the interval has passed while we were down: it runs at
    # start, once idleDelay has passed (a close before the start is unseen).
    d.write_config(config(tmp, [("a", a)], reclaim={"interval": "2s", "idleDelay": "2s"}))
    time.sleep(2.2)
    t0 = time.time()
    d.start()
    z = d.wait_passes("a", 2, timeout=8)
    assert z["last_pass"] >= (t0 + 2 - 0.3) * 10**6 and z["last_pass"] < (t0 + 4) * 10**6, (t0, z)
    assert d.stop() < 2
    assert_same_content(a, copy)


def test_threshold_and_randomized_delay(tmp):
    a, copy = image_with_copy(tmp, "a")
    before = allocated(a)
    # Periodic, never passed: due at start; it would win ~26M, less than minReclaim.
    d = Daemon(tmp, config(tmp, [("a", a)], reclaim={"interval": "1h", "minReclaim": "1G", "idleDelay": "2s"})).start()
    x = d.wait_passes("a", 1)
    assert x["last_result"] == "skipped-threshold", x
    assert x["reclaimable"] >= 16 * MiB and x["reclaimed_total"] == 0, x
    assert allocated(a) == before
    assert_same_content(a, copy)
    # Asked for by hand, any win is worth it.
    d.reclaim("a")
    x = d.wait_passes("a", 2)
    assert x["last_result"] == "success" and x["reclaimable"] == 0, x
    d.stop()
    # The next periodic pass lies on the image's slot (half an interval to one
    # and a half after the last) plus up to randomizedDelay.
    d.write_config(config(tmp, [("a", a)], reclaim={"interval": "1h", "randomizedDelay": "10m"}))
    nexts = set()
    for _ in range(3):
        d.start()
        y = d.disk("a")
        assert y["last_pass"] + 1800 * 10**6 <= y["next_pass"] <= y["last_pass"] + 6000 * 10**6, y
        nexts.add(y["next_pass"])
        d.stop()
    assert len(nexts) > 1, nexts


def test_corrupt_state_is_ignored(tmp):
    a, _ = image_with_copy(tmp, "a")
    os.makedirs(os.path.join(tmp, "state", "disks"))
    with open(os.path.join(tmp, "state", "disks", "a.state"), "w") as f:
        f.write("version=1\nreclaimed_total=-5\nlast_result=\x01\n")
    with open(os.path.join(tmp, "state", "history.jsonl"), "w") as f:
        f.write('{"name":"a","result":"success","start":1}\nnot json\n{"name":\n')
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    x = d.disk("a")
    assert x["passes"] == 0 and x["reclaimed_total"] == 0, x
    assert len(d.history("a")) == 1
    assert "malformed" in d.read_log()


def test_idle_trigger(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)], reclaim={"idleDelay": "1s"})).start()
    time.sleep(0.5)
    assert d.disk("a")["passes"] == 0
    # A writer opens, writes and closes: the pass follows about a second later.
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0 30M 4M", copy], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0 30M 4M", a], check=True, capture_output=True)
    t0 = time.monotonic()
    x = d.wait_passes("a", 1, timeout=10)
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 5, elapsed
    assert x["last_result"] == "success" and x["reclaimed_last"] >= 16 * MiB, x
    assert_same_content(a, copy)
    # Our own pass and qemu-img's reads above do not trigger another one.
    time.sleep(2)
    assert d.disk("a")["passes"] == 1


def test_idle_trigger_through_symlink(tmp):
    real = os.path.join(tmp, "real")
    links = os.path.join(tmp, "links")
    os.mkdir(real)
    os.mkdir(links)
    a = standard_image(os.path.join(real, "a.vhdx"))
    copy = os.path.join(tmp, "a.orig.vhdx")
    shutil.copyfile(a, copy)
    os.symlink(a, os.path.join(links, "a.vhdx"))
    d = Daemon(tmp, config(tmp, [("a", os.path.join(links, "a.vhdx"))], reclaim={"idleDelay": "1s"})).start()
    # The writer goes to the real file: the pass still follows.
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0 30M 4M", a], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0 30M 4M", copy], check=True, capture_output=True)
    x = d.wait_passes("a", 1, timeout=10)
    assert x["last_result"] == "success", x
    assert_same_content(a, copy)


def test_idle_trigger_reopened_is_not_touched(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)], reclaim={"idleDelay": "1s"})).start()
    with open(a, "r+b") as f:
        f.seek(0, 2)
        f.flush()
        os.fsync(f.fileno())
    # Closed after writing (r+b counts) ... and opened again before the delay ends.
    time.sleep(0.3)
    before = allocated(a)
    with open(a, "rb"):
        time.sleep(2.5)
        assert d.disk("a")["passes"] == 0
        assert d.history("a") == []
        assert allocated(a) == before
    # Closed for good: the pass now follows.
    x = d.wait_passes("a", 1, timeout=10)
    assert x["last_result"] == "success", x
    assert_same_content(a, copy)


def test_reload(tmp):
    a, _ = image_with_copy(tmp, "a")
    b, _ = image_with_copy(tmp, "b")
    c, _ = image_with_copy(tmp, "c")
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    # Broken: the old configuration stays, the error names file:line.
    good = config(tmp, [("a", a)])
    d.write_config(good + "\n[disk.b]\npath=" + b + "\nminHole=banana\n")
    line = (good + "\n[disk.b]\npath=" + b + "\nminHole=banana\n").splitlines().index("minHole=banana") + 1
    p = d.call("Reload", check=False)
    assert p.returncode != 0, p
    assert f"{d.conf}:{line}:" in p.stderr, p.stderr
    assert "InvalidConfig" in p.stderr or "minHole" in p.stderr, p.stderr
    assert list(d.disks()) == ["a"]
    assert d.alive()
    # Valid, with a new [disk]: picked up, with its status.
    d.write_config(config(tmp, [("a", a), ("b", b)]))
    d.call("Reload")
    disks = d.wait_probed("a", "b")
    assert disks["b"]["virtual_size"] == 64 * MiB, disks
    # SIGHUP goes the same way: c added, a dropped.
    d.write_config(config(tmp, [("b", b), ("c", c)]))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: set(d.disks()) == {"b", "c"}, 5, what="the SIGHUP reload")
    # A broken file on SIGHUP keeps the daemon and its configuration.
    d.write_config("[reclaim]\ninterval=soon\n")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert d.alive() and set(d.disks()) == {"b", "c"}


def test_reload_drops_disk_mid_pass(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G", [("P", "0", "0", "256M")])
    copy = os.path.join(tmp, "big.orig.vhdx")
    shutil.copyfile(img, copy)
    a, _ = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("big", img), ("a", a)], reclaim={"ioLimit": "16M"})).start()
    d.reclaim("big")
    d.reclaim("a")      # queued behind it (maxParallel=1)
    wait_for(lambda: d.disk("big")["job_done"] > 0, 10, what="the pass to make progress")
    assert d.disk("a")["state"] == "queued"
    # Both dropped by a reload: the running pass stops, the queued one never starts.
    d.write_config(config(tmp, [], reclaim={"ioLimit": "16M"}))
    d.call("Reload")
    assert d.disks() == {}
    wait_for(lambda: d.call("ListJobs") == [[]], 5, what="the jobs to end")
    h = d.history()
    assert len(h) == 1 and h[0]["name"] == "big" and "cancelled" in h[0]["message"], h
    assert_same_content(img, copy)
    assert d.stop() < 2


def test_sigterm_during_pass(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G",
                    [("P", "0x11", 0, "8M"), ("P", "0", "8M", "256M"), ("P", "0x22", "264M", "8M")])
    copy = os.path.join(tmp, "big.orig.vhdx")
    shutil.copyfile(img, copy)
    # 16 MB/s: the pass takes ~16 s, long enough to be caught in the middle.
    d = Daemon(tmp, config(tmp, [("big", img)], reclaim={"ioLimit": "16M"})).start()
    d.reclaim("big")
    wait_for(lambda: d.disk("big")["state"] == "reclaiming" and d.disk("big")["job_done"] > 0, 10,
             what="the pass to make progress")
    took = d.stop(signal.SIGTERM)
    assert took < 2.0, f"exit took {took:.2f}s"
    assert d.proc.returncode == 0, d.proc.returncode
    assert_same_content(img, copy)
    # The interrupted pass is recorded.
    lines = open(os.path.join(d.state, "history.jsonl")).read().splitlines()
    assert len(lines) == 1 and '"result":"cancelled"' in lines[0], lines


def test_max_pass_time_then_resume(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G", [("P", "0", "0", "128M")])
    copy = os.path.join(tmp, "big.orig.vhdx")
    shutil.copyfile(img, copy)
    d = Daemon(tmp, config(tmp, [("big", img)], reclaim={"ioLimit": "64M", "maxPassTime": "1s"})).start()
    d.reclaim("big")
    x = d.wait_passes("big", 1)
    assert "resumes" in x["last_message"], x
    first = x["reclaimed_total"]
    assert first > 0, x
    state = open(os.path.join(d.state, "disks", "big.state")).read()
    assert "resume_offset=0\n" not in state, state
    d.reclaim("big")
    y = d.wait_passes("big", 2)
    assert y["reclaimed_total"] > first, (x, y)
    assert_same_content(img, copy)


def test_watch_folder(tmp):
    folder = os.path.join(tmp, "profiles")
    os.mkdir(folder)
    standard_image(os.path.join(folder, "alice.vhdx"))
    standard_image(os.path.join(folder, "notes.txt.vhd"))
    extra = f"\n[watch.profiles]\ndir={folder}\npattern=*.vhdx\n"
    d = Daemon(tmp, config(tmp, extra=extra)).start()
    wait_for(lambda: set(d.disks()) == {"profiles/alice.vhdx"}, 5, what="the initial scan")
    # The format is read on a worker thread: it shows once that probe reported.
    x = wait_for(lambda: (lambda x: x if x["format"] == "vhdx" else None)(d.disk("profiles/alice.vhdx")), 5,
                 what="alice's format")
    assert x["origin"] == "watch.profiles", x
    # Appearing (created elsewhere, moved in), renamed, deleted.
    standard_image(os.path.join(tmp, "bob.vhdx"))
    os.rename(os.path.join(tmp, "bob.vhdx"), os.path.join(folder, "bob.vhdx"))
    wait_for(lambda: "profiles/bob.vhdx" in d.disks(), 5, what="bob to be picked up")
    wait_for(lambda: d.disk("profiles/bob.vhdx")["virtual_size"] == 64 * MiB, 5, what="bob's virtual size")
    os.rename(os.path.join(folder, "bob.vhdx"), os.path.join(folder, "robert.vhdx"))
    wait_for(lambda: set(d.disks()) == {"profiles/alice.vhdx", "profiles/robert.vhdx"}, 5, what="the rename")
    d.reclaim("profiles/alice.vhdx")
    d.wait_passes("profiles/alice.vhdx", 1)
    alice_state = os.path.join(d.state, "disks", "profiles%2Falice.vhdx.state")
    assert os.path.exists(alice_state)
    os.unlink(os.path.join(folder, "alice.vhdx"))
    wait_for(lambda: set(d.disks()) == {"profiles/robert.vhdx"}, 5, what="alice to be dropped")
    assert not os.path.exists(alice_state)
    assert [h["name"] for h in d.history()] == ["profiles/alice.vhdx"]
    # Copied in: the writer's close starts the idle pass of the new image.
    shutil.copyfile(os.path.join(folder, "robert.vhdx"), os.path.join(folder, "carol.vhdx"))
    wait_for(lambda: "profiles/carol.vhdx" in d.disks(), 5, what="carol to be picked up")
    robert = os.path.join(folder, "robert.vhdx")
    shutil.copyfile(robert, os.path.join(tmp, "robert.orig"))
    d.reclaim("profiles/robert.vhdx")
    x = d.wait_passes("profiles/robert.vhdx", 1)
    assert x["last_result"] == "success", x
    assert_same_content(robert, os.path.join(tmp, "robert.orig"))
    assert d.alive()


def test_deleted_mid_pass(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G", [("P", "0", "0", "256M")])
    d = Daemon(tmp, config(tmp, [("big", img)], reclaim={"ioLimit": "16M"})).start()
    d.reclaim("big")
    wait_for(lambda: d.disk("big")["job_done"] > 0, 10, what="the pass to make progress")
    t0 = time.monotonic()
    os.unlink(img)
    x = wait_for(lambda: (lambda y: y if y["state"] != "reclaiming" else None)(d.disk("big")), 5,
                 what="the pass to end")
    assert time.monotonic() - t0 < 2
    assert x["state"] == "missing", x
    h = d.history("big")
    assert len(h) == 1 and "cancelled" in h[0]["message"], h
    # It comes back.
    standard_image(img)
    wait_for(lambda: d.disk("big")["state"] != "missing", 5, what="the image to be back")
    assert d.alive()


def test_set_sparse(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    d.reclaim("a")
    d.wait_passes("a", 1)
    holey = allocated(a)
    d.call("SetSparse", "sb", "a", "false")
    # The call returns once its job (on a worker thread) is done.
    assert d.call("ListJobs") == [[]]
    assert len(d.history("a")) == 1
    x = d.disk("a")
    assert x["sparse"] is False and x["state"] == "watch-only", x
    assert allocated(a) >= os.stat(a).st_size > holey, (allocated(a), holey)
    assert_same_content(a, copy)
    # Not sparse: a pass only measures.
    d.reclaim("a")
    d.wait_history("a", 2)
    assert allocated(a) >= os.stat(a).st_size
    d.call("SetSparse", "sb", "a", "true")
    d.stop()
    d.start()
    assert d.disk("a")["sparse"] is True


def test_permissions(tmp):
    a, _ = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    os.chmod(d.sock, 0o666)
    nobody = ("nobody", "nogroup")
    disks = d.disks(user=nobody)
    assert list(disks) == ["a"]
    for method, sig, args in (("Reclaim", "asbbs", (1, "a", "false", "false", "")),
                              ("Reload", "", ()),
                              ("Cancel", "t", (1,)),
                              ("SetSparse", "sb", ("a", "false")),
                              ("Trim", "asb", (0, "true"))):
        p = d.call(method, sig, *args, user=nobody, check=False)
        assert p.returncode != 0 and "Permission denied" in p.stderr, (method, p.stderr)
    assert d.disk("a")["passes"] == 0 and d.disk("a")["sparse"] is True
    assert d.call("History", "su", "", 0, user=nobody) == [[]]


def test_admin_group(tmp):
    a, copy = image_with_copy(tmp, "a")
    d = Daemon(tmp, config(tmp, [("a", a)], admin_group="users")).start()
    os.chmod(d.sock, 0o666)
    gid = grp.getgrnam("users").gr_gid
    # Not in the group: refused. As a supplementary group, or as the primary one: allowed.
    p = d.call("Reclaim", "asbbs", 1, "a", "false", "false", "", user=("nobody", "nogroup"), check=False)
    assert "Permission denied" in p.stderr, p.stderr
    assert d.call("Reclaim", "asbbs", 1, "a", "false", "false", "", user=("nobody", "nogroup", str(gid)))[0]
    d.wait_passes("a", 1)
    assert d.call("Reclaim", "asbbs", 1, "a", "false", "true", "", user=("nobody", "users"))[0]
    d.wait_history("a", 2)
    assert_same_content(a, copy)
    # A reload that drops the group takes the right away.
    d.write_config(config(tmp, [("a", a)], admin_group=""))
    d.call("Reload")
    p = d.call("Reclaim", "asbbs", 1, "a", "false", "false", "", user=("nobody", "nogroup", str(gid)), check=False)
    assert "Permission denied" in p.stderr, p.stderr


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl", "setpriv")
    main([test_status_matches_qemu_img_and_stat, test_reclaim_via_busctl, test_unknown_and_bad_arguments,
          test_state_survives_restart_and_missed_interval_runs, test_threshold_and_randomized_delay,
          test_corrupt_state_is_ignored,
          test_idle_trigger, test_idle_trigger_through_symlink, test_idle_trigger_reopened_is_not_touched,
          test_reload, test_reload_drops_disk_mid_pass, test_sigterm_during_pass,
          test_max_pass_time_then_resume, test_watch_folder, test_deleted_mid_pass, test_set_sparse,
          test_permissions, test_admin_group])
