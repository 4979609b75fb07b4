#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Work that grows with what changed (issue 12): a periodic pass over an
image nobody touched since our last complete pass ends as nothing-to-do
("unchanged since the pass of ...") without reading the image's data; a
write makes the next pass a full one again; a manual reclaim is always a
full pass; and no periodic pass runs on an image changed or closed less
than idleDelay ago (Samba's durable handles).

What the daemon read is measured as read_bytes in /proc/PID/io, with the
images' pages dropped from the cache before (fsync, then
POSIX_FADV_DONTNEED: the scanner maps the file, so rchar would not see
its reads): a full pass of these images reads several MiB, the shortcut
two 32-byte header starts (and their readahead)."""

import os
import shutil
import time

from daemonlib import Daemon, assert_same_content, config, main, require_tools, run, standard_image, wait_for

MiB = 1 << 20


def read_bytes(d):
    with open(f"/proc/{d.proc.pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def cold(*paths):
    """Drops the images' pages from the page cache, so that the daemon's reads show in read_bytes."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def raw_image(path):
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(MiB)
        f.write(b"\xab" * (4 * MiB))
        f.write(b"\0" * (8 * MiB))
        f.seek(40 * MiB)
        f.write(b"\x5a" * (2 * MiB))
    return path


def last_entry(d, name):
    return d.history(name)[-1]


def next_pass_after(d, name, n, timeout=30):
    """The first pass after the first n that a writer did not interrupt."""
    def found():
        h = d.history(name)
        done = [e for e in h[n:] if e["result"] != "skipped-in-use"]
        return done[0] if done and d.disk(name)["state"] == "idle" else None
    return wait_for(found, timeout, 0.1, what=f"a pass of {name} after the first {n}")


def wait_pass(d, name, n, timeout=30):
    d.wait_passes(name, n, timeout=timeout)
    h = d.history(name)
    assert len(h) >= n, h
    return h[n - 1]


def test_unchanged_images_are_not_read(tmp):
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    b = raw_image(os.path.join(tmp, "b.img"))
    copies = {p: p + ".orig" for p in (a, b)}
    for p, c in copies.items():
        shutil.copyfile(p, c)
    time.sleep(1.2)     # idleDelay after their creation
    cold(a, b)
    conf = config(tmp, [("a", a), ("b", b, "format=raw")],
                  reclaim={"interval": "3s", "randomizedDelay": "0", "idleDelay": "1s"})
    d = Daemon(tmp, conf).start()

    # First passes: full ones, reading the images' data.
    r0 = read_bytes(d)
    for name in ("a", "b"):
        e = wait_pass(d, name, 1)
        assert e["result"] == "success", e
    full = read_bytes(d) - r0
    assert full > 4 * MiB, f"the first passes read {full} bytes"

    # Second periodic passes: nothing changed, nothing read.
    cold(a, b)
    r1 = read_bytes(d)
    for name in ("a", "b"):
        e = wait_pass(d, name, 2)
        assert e["result"] == "nothing-to-do" and e["message"].startswith("unchanged since the pass of 20"), e
    second = read_bytes(d) - r1
    print(f"read_bytes: first passes {full} bytes, unchanged passes {second} bytes")
    assert second < MiB // 2, f"the unchanged passes read {second} bytes (the first {full})"

    # Across a restart, the state file keeps what the last pass left.
    d.stop()
    cold(a, b)
    d.start()
    r2 = read_bytes(d)
    e = wait_pass(d, "a", 3)
    assert e["message"].startswith("unchanged since"), e
    assert read_bytes(d) - r2 < MiB // 2, read_bytes(d) - r2

    # A write (qemu-io, like any writer: new FileWriteGuid, sequence numbers, mtime, ctime): a full pass.
    r3 = read_bytes(d)
    n = len(d.history("a"))
    for p in (a, copies[a]):
        run("qemu-io", "-f", "vhdx", "-c", "write -q -P 0x77 1M 64k", "-c", "write -q -z 20M 1M", p)
    cold(a)
    e = next_pass_after(d, "a", n)
    assert not e["message"].startswith("unchanged"), e
    assert e["result"] in ("success", "nothing-to-do"), e
    assert read_bytes(d) - r3 > 4 * MiB, f"the pass after a write read only {read_bytes(d) - r3} bytes"

    # Asked for by hand: a full pass, unchanged or not.
    e = wait_pass(d, "b", 3)   # the unchanged periodic one
    assert e["message"].startswith("unchanged since"), e
    cold(b)
    r4 = read_bytes(d)
    n = len(d.history("b"))
    d.reclaim("b")
    # Periodic passes may come in between: they are unchanged ones; the manual one is not.
    e = wait_for(lambda: next((e for e in d.history("b")[n:] if not e["message"].startswith("unchanged")), None),
                 30, 0.1, what="the manual pass of b")
    assert e["result"] in ("success", "nothing-to-do"), e
    assert read_bytes(d) - r4 > 4 * MiB, f"a manual pass read only {read_bytes(d) - r4} bytes"
    d.stop()
    for p, c in copies.items():
        run("cmp", p, c) if p == b else assert_same_content(p, c)


def test_old_state_file_means_changed(tmp):
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    time.sleep(1.2)
    conf = config(tmp, [("a", a)], reclaim={"interval": "2s", "randomizedDelay": "0", "idleDelay": "1s"})
    d = Daemon(tmp, conf).start()
    wait_pass(d, "a", 1)
    d.stop()
    state = os.path.join(tmp, "state", "disks", "a.state")
    text = open(state).read()
    assert "\nfingerprint=v1 " in text, text
    # As an older version wrote it: no fingerprint line.
    with open(state, "w") as f:
        f.write("".join(line for line in text.splitlines(True) if not line.startswith("fingerprint=")))
    cold(a)
    d.start()
    r = read_bytes(d)
    e = wait_pass(d, "a", 2)
    assert e["result"] in ("success", "nothing-to-do") and not e["message"].startswith("unchanged"), e
    assert read_bytes(d) - r > 4 * MiB, read_bytes(d) - r
    # Another discard mode is another pass, too.
    e = wait_pass(d, "a", 3)
    assert e["message"].startswith("unchanged"), e
    d.write_config(config(tmp, [("a", a)], reclaim={"interval": "2s", "randomizedDelay": "0", "idleDelay": "1s",
                                                     "discard": "free"}))
    d.call("Reload")
    e = wait_pass(d, "a", 4)
    assert not e["message"].startswith("unchanged"), e
    d.stop()


def test_no_periodic_pass_within_idle_delay(tmp):
    idle = 6
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    changed = os.stat(a).st_ctime
    conf = config(tmp, [("a", a)], reclaim={"interval": "2s", "randomizedDelay": "0", "idleDelay": f"{idle}s"})
    d = Daemon(tmp, conf).start()
    # Due at once (never passed), but the image changed just now: it waits.
    time.sleep(idle / 2)
    x = d.disk("a")
    assert x["passes"] == 0, x
    assert x["next_pass"] >= (changed + idle - 0.1) * 10**6, (changed, x)
    x = d.wait_passes("a", 1, timeout=idle * 3)
    assert x["last_pass"] >= (changed + idle - 0.1) * 10**6, (changed, x)

    # A reader opens and closes it (as smbd does for a disconnected durable handle): again idleDelay.
    with open(a, "rb") as f:
        f.read(4096)
    closed = time.time()
    x = d.wait_passes("a", 2, timeout=idle * 3)
    assert x["last_pass"] >= (closed + idle - 0.3) * 10**6, (closed, x)
    d.stop()


def test_restart_opens_nothing_unchanged(tmp):
    """A restart over images nobody touched since our passes opens none of
    them: their format and virtual size on record stand (on a file server
    of 10,000 images a restart read 335 MB of headers). One changed while
    the daemon was down is read again."""
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    b = raw_image(os.path.join(tmp, "b.img"))
    conf = config(tmp, [("a", a), ("b", b, "format=raw")])
    d = Daemon(tmp, conf).start()
    for name in ("a", "b"):
        d.reclaim(name)
        e = wait_pass(d, name, 1)
        assert e["result"] == "success", e
    d.stop()

    cold(a, b)
    d.start()
    d.wait_probed("a", "b")
    time.sleep(0.5)
    got = read_bytes(d)     # since the process started
    print(f"read_bytes after a restart on unchanged images: {got}")
    assert got < 64 * 1024, f"the restart read {got} bytes"
    x = d.disk("a")
    assert x["format"] == "vhdx" and x["virtual_size"] == 64 * MiB, x
    d.stop()

    os.truncate(b, 96 * MiB)            # a raw image grown while we were away
    d.start()
    wait_for(lambda: d.disk("b")["virtual_size"] == 96 * MiB, 10, what="the new virtual size of b")
    d.stop()


def test_restart_waits_idle_delay(tmp):
    """After a start the daemon has not seen who closed the image when: smbd
    may hold a disconnected durable handle across our restart. The first
    periodic pass waits idleDelay from the start, even for an image whose
    last change is long past (our own pass's)."""
    idle = 4
    a = standard_image(os.path.join(tmp, "a.vhdx"))
    d = Daemon(tmp, config(tmp, [("a", a)])).start()
    d.reclaim("a")
    wait_pass(d, "a", 1)
    d.stop()
    d.write_config(config(tmp, [("a", a)], reclaim={"interval": "1s", "randomizedDelay": "0",
                                                    "idleDelay": f"{idle}s"}))
    started = time.time()
    d.start()
    x = d.wait_passes("a", 2, timeout=idle * 4)
    assert x["last_pass"] >= (started + idle - 0.3) * 10**6, (started, x)
    d.stop()


def test_written_while_down_passes_after_idle_delay(tmp):
    """An image written while the daemon was down (a restart after a wave of
    logoffs, whose idle passes were waiting): its pass follows idleDelay
    after the start, not the next periodic slot a day later; one nobody
    touched waits for its slot."""
    a = raw_image(os.path.join(tmp, "a.img"))
    b = raw_image(os.path.join(tmp, "b.img"))
    d = Daemon(tmp, config(tmp, [("a", a, "format=raw"), ("b", b, "format=raw")])).start()
    for name in ("a", "b"):
        d.reclaim(name)
        wait_pass(d, name, 1)
    d.stop()
    with open(a, "r+b") as f:           # a user's session: writes zeros over data
        f.seek(40 * MiB)
        f.write(bytes(2 * MiB))
    d.write_config(config(tmp, [("a", a, "format=raw"), ("b", b, "format=raw")],
                          reclaim={"interval": "1d", "randomizedDelay": "0", "idleDelay": "2s"}))
    started = time.time()
    d.start()
    e = wait_pass(d, "a", 2, timeout=15)
    assert e["result"] == "success" and e["reclaimed"] >= 2 * MiB, e
    assert e["start"] >= (started + 2 - 0.3) * 10**6, (started, e)
    time.sleep(1)
    assert len(d.history("b")) == 1, d.history("b")
    d.stop()


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl", "cmp")
    main([test_unchanged_images_are_not_read, test_old_state_file_means_changed,
          test_no_periodic_pass_within_idle_delay, test_restart_opens_nothing_unchanged,
          test_restart_waits_idle_delay, test_written_while_down_passes_after_idle_delay])
