#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon as a systemd service sees it: a fake NOTIFY_SOCKET (a datagram
socket of the test) receives READY, STATUS, WATCHDOG, RELOADING with
MONOTONIC_USEC, READY again and STOPPING, in that order; the daemon started
by systemd-socket-activate on the first connection serves the socket it was
given."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from daemonlib import (Daemon, assert_same_content, config, main, make_vhdx, require_tools, skip, standard_image,
                       wait_for)


class NotifyListener:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []      # (monotonic time, text)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def texts(self):
        return [m for _, m in self.messages]

    def index(self, pred, start=0):
        for i, m in enumerate(self.texts()[start:], start):
            if pred(m):
                return i
        return -1


def test_notify_sequence(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G", [("P", "0", "0", "128M")])
    copy = os.path.join(tmp, "big.orig.vhdx")
    shutil.copyfile(img, copy)
    listener = NotifyListener(os.path.join(tmp, "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(tmp, "notify"), WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    d = Daemon(tmp, config(tmp, [("big", img)], reclaim={"ioLimit": "32M"}), env=env).start()
    try:
        wait_for(lambda: listener.index(lambda m: m == "READY=1") >= 0, 5, what="READY=1")
        ready = listener.index(lambda m: m == "READY=1")
        # Nothing came before READY=1 but watchdog pings; the status follows it.
        assert all(m == "WATCHDOG=1" for m in listener.texts()[:ready]), listener.texts()
        wait_for(lambda: listener.index(lambda m: m.startswith("STATUS=idle; 1 image")) > ready, 5,
                 what="the idle status")
        # The watchdog: the loop pings at least every WATCHDOG_USEC / 2.
        time.sleep(1.2)
        pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, listener.texts()
        # A pass: the status says so with a percentage.
        d.reclaim("big")
        wait_for(lambda: listener.index(lambda m: re.match(r"STATUS=reclaiming big: \d+%", m)) >= 0, 10,
                 what="the reclaiming status")
        d.wait_passes("big", 1, timeout=30)
        assert_same_content(img, copy)
        # Reload: RELOADING=1 and MONOTONIC_USEC in one datagram, then READY=1.
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        d.call("Reload")
        reloading = listener.index(lambda m: m.startswith("RELOADING=1"))
        assert reloading > ready, listener.texts()
        msg = listener.texts()[reloading]
        usec = int(re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", msg).group(1))
        assert abs(usec / 1e6 - before) < 2, (usec, before)
        assert listener.index(lambda m: m == "READY=1", reloading) > reloading, listener.texts()
        # A failed reload also ends with READY=1: the old configuration is in force.
        d.write_config("[reclaim]\ninterval=whenever\n")
        assert d.call("Reload", check=False).returncode != 0
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        texts = listener.texts()
        reloads = [i for i, m in enumerate(texts) if m.startswith("RELOADING=1")]
        assert len(reloads) == 3, texts
        assert texts[max(reloads):].count("READY=1") == 1, texts
        # STOPPING=1 on the way out.
        assert d.stop() < 2
        assert listener.texts()[-1] == "STOPPING=1" or "STOPPING=1" in listener.texts()[-3:], listener.texts()
    finally:
        listener.close()


def test_status_next_pass(tmp):
    """The idle status names the next pass in vhdreclaimctl's spelling
    ("in 29m", include/timespan.h), not one of its own ("29min")."""
    img = standard_image(os.path.join(tmp, "a.vhdx"))
    listener = NotifyListener(os.path.join(tmp, "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(tmp, "notify"))
    # idleDelay: a periodic pass waits that long after the image's creation.
    Daemon(tmp, config(tmp, [("a", img)], reclaim={"interval": "30m", "idleDelay": "1s"}), env=env).start()
    try:
        # The first pass is due at once ("in 0s"); after it, the next is on
        # the image's slot, 15 to 45 minutes out.
        i = wait_for(lambda: listener.index(lambda m: re.search(r"next pass in [1-9][0-9]", m)) + 1, 20,
                     what="a status naming the next pass after the first") - 1
        status = listener.texts()[i]
        m = re.fullmatch(r"STATUS=idle; 1 image, next pass in (\d+)m", status)
        assert m and 14 <= int(m.group(1)) <= 45, status
    finally:
        listener.close()


def test_socket_activation(tmp):
    img = standard_image(os.path.join(tmp, "a.vhdx"))
    copy = os.path.join(tmp, "a.orig.vhdx")
    shutil.copyfile(img, copy)
    d = Daemon(tmp, config(tmp, [("a", img)]))
    activator = subprocess.Popen(["systemd-socket-activate", "-l", d.sock, os.environ["VHDRECLAIMD"], "-c",
                                  d.conf, "--state-dir", d.state, "--socket", d.sock],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: os.path.exists(d.sock), 5, what="the activation socket")
        # The first call starts the daemon, which answers on the inherited socket.
        data = d.call("ListDisks", "as", 0)
        assert [x[0] for x in data[0]] == ["a"], data
        assert d.call("Reclaim", "asbbs", 1, "a", "false", "false", "")[0]
        d.wait_passes("a", 1)
        assert_same_content(img, copy)
    finally:
        activator.send_signal(signal.SIGTERM)
        try:
            out = activator.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            activator.kill()
            out = activator.communicate()[0]
    # It served the socket it was given and did not bind its own.
    assert "removing the stale socket" not in out, out
    assert "Sanitizer" not in out and "runtime error:" not in out, out


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    if not shutil.which("systemd-socket-activate"):
        skip("systemd-socket-activate is not installed")
    main([test_notify_sequence, test_status_next_pass, test_socket_activation])
