#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""10,000 images in two [watch] folders (issue 12): every one is listed, and
images that go away and come back under the same names are found again (the
indexes by name and path follow); a name in another case finds its disk.
The time to READY and the status latency are printed, not asserted: speed
targets live in bench/ (bench-scale.py), never as timed assertions in tests.
Finding a disk by name or path no longer compares with every other disk
(startup grew with the square of the images: 1.7 s here at 10,000, now
about 0.2 s)."""

import os
import socket
import subprocess
import threading
import time

from daemonlib import Daemon, config, drain, main, wait_for

N = 10000
def make_images(folder, count):
    os.makedirs(folder)
    for i in range(count):
        with open(os.path.join(folder, f"r{i}.img"), "wb") as f:
            f.truncate(1 << 20)


def listed(d):
    return {x[0] for x in d.call("ListDisks", "as", 0)[0]}


def test_startup_10000(tmp):
    dirs = [os.path.join(tmp, "a"), os.path.join(tmp, "b")]
    for folder in dirs:
        make_images(folder, N // 2)
    watches = "".join(f"\n[watch.w{i}]\ndir={folder}\npattern=*.img\n" for i, folder in enumerate(dirs))
    notify = os.path.join(tmp, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify)
    listener.settimeout(30)
    d = Daemon(tmp, config(tmp, [], extra=watches), env=dict(os.environ, NOTIFY_SOCKET=notify))
    try:
        t0 = time.monotonic()
        d.start(wait=False)
        while "READY=1" not in listener.recv(4096).decode().split("\n"):
            pass
        ready = time.monotonic() - t0
        print(f"READY after {ready * 1000:.0f} ms with {N} images", flush=True)
        # Read on, as systemd does: a full socket would block its sd_notify().
        threading.Thread(target=drain, args=(listener,), daemon=True).start()
        names = listed(d)
        assert len(names) == N and "w0/r0.img" in names and f"w1/r{N // 2 - 1}.img" in names, len(names)

        t = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([os.environ["VHDRECLAIMCTL"], "--socket", d.sock, "--json", "status"], check=True,
                           capture_output=True)
            t.append(time.monotonic() - t0)
        print(f"status --json: best {min(t) * 1000:.0f} ms", flush=True)

        # A client that hangs up while its files' sizes are read off the
        # loop: the daemon drops the call (and waits for its threads) and
        # answers the next client.
        for i in range(20):
            p = subprocess.Popen([os.environ["VHDRECLAIMCTL"], "--socket", d.sock, "--json", "status"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.005 * (i % 8))
            p.kill()
            p.wait()
        assert d.proc.poll() is None, "the daemon died when a client hung up during ListDisks"
        assert len(listed(d)) == N

        gone = [f"r{i}.img" for i in range(0, 40, 2)]
        for f in gone:
            os.unlink(os.path.join(dirs[0], f))
        wait_for(lambda: not {f"w0/{f}" for f in gone} & listed(d), 20, what="the deleted images dropped")
        for f in gone:
            with open(os.path.join(dirs[0], f), "wb") as fh:
                fh.truncate(1 << 20)
        wait_for(lambda: {f"w0/{f}" for f in gone} <= listed(d), 20, what="the images back")
        assert len(listed(d)) == N
        # One by name, any case (section names are case-insensitive).
        assert d.call("ListDisks", "as", 1, "W0/R2.IMG")[0][0][0] == "w0/r2.img"
    finally:
        d.stop()
        listener.close()


if __name__ == "__main__":
    main([test_startup_10000])
