#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The control socket under load and abuse: busctl introspects and calls it;
500 clients connected at once (raw sockets speaking the D-Bus handshake, a
Hello and a ListDisks call) plus parallel busctl processes are all served
while other clients send garbage, stall mid-handshake or mid-message, vanish
mid-call or never read; the daemon stays alive and answers."""

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from daemonlib import (Daemon, assert_same_content, config, main, make_vhdx, require_tools, standard_image,
                       wait_for)


def _pad(buf, n):
    buf += b"\0" * ((-len(buf)) % n)


def dbus_call(serial, path, iface, member, dest=None, sig="", body=b""):
    """A little-endian D-Bus method call message."""
    fields = bytearray()

    def field(code, typ, val):
        _pad(fields, 8)
        fields.extend(bytes([code, 1]) + typ.encode() + b"\0")
        enc = val.encode()
        if typ == "g":
            fields.extend(bytes([len(enc)]) + enc + b"\0")
        else:
            _pad(fields, 4)
            fields.extend(struct.pack("<I", len(enc)) + enc + b"\0")

    field(1, "o", path)
    if iface:
        field(2, "s", iface)
    field(3, "s", member)
    if dest:
        field(6, "s", dest)
    if sig:
        field(8, "g", sig)
    msg = bytearray(b"l\x01\x00\x01" + struct.pack("<III", len(body), serial, len(fields)))
    msg += fields
    _pad(msg, 8)
    return bytes(msg + body)


def read_message(sock, buf):
    """Reads one message; returns (type, reply_serial, body, rest of buf)."""
    mtype, reply_serial, _, body, rest = read_message_member(sock, buf)
    return mtype, reply_serial, body, rest


def read_message_member(sock, buf):
    """Reads one message; returns (type, reply_serial, member, body, rest of buf)."""
    while len(buf) < 16:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    endian, mtype, _, _, body_len, _, fields_len = struct.unpack("<cBBBIII", buf[:16])
    assert endian == b"l", endian
    total = 16 + fields_len + ((-fields_len) % 8) + body_len
    while len(buf) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    fields = buf[16:16 + fields_len]
    reply_serial = member = None
    i = 0
    while i < len(fields):
        i += (-i) % 8
        code, siglen = fields[i], fields[i + 1]
        typ = fields[i + 2:i + 2 + siglen].decode()
        i += 3 + siglen
        if typ in ("s", "o"):
            i += (-(i + 16)) % 4
            (n,) = struct.unpack("<I", fields[i:i + 4])
            if code == 3:
                member = fields[i + 4:i + 4 + n].decode()
            i += 4 + n + 1
        elif typ == "g":
            i += 1 + fields[i] + 1
        elif typ == "u":
            i += (-(i + 16)) % 4
            (v,) = struct.unpack("<I", fields[i:i + 4])
            if code == 5:
                reply_serial = v
            i += 4
        else:
            raise AssertionError(f"unexpected header field type {typ}")
    body = buf[16 + fields_len + ((-fields_len) % 8):total]
    return mtype, reply_serial, member, body, buf[total:]


def marshal_string(buf, s):
    _pad(buf, 4)
    enc = s.encode()
    buf += struct.pack("<I", len(enc)) + enc + b"\0"


def reclaim_body(names, all_, dry_run, discard):
    """The body of Reclaim(as, b, b, s)."""
    elems = bytearray()
    for n in names:
        marshal_string(elems, n)
    body = bytearray(struct.pack("<I", len(elems)) + elems)
    _pad(body, 4)
    body += struct.pack("<II", int(all_), int(dry_run))
    marshal_string(body, discard)
    return bytes(body)


def authenticate(s):
    s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = s.recv(256)
        if not chunk:
            raise ConnectionError("closed during auth")
        line += chunk
    assert line.startswith(b"OK "), line


def hello_and_list(s):
    """Hello then ListDisks; returns the unique name and the ListDisks reply body."""
    s.sendall(b"BEGIN\r\n" + dbus_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                                       dest="org.freedesktop.DBus")
              + dbus_call(2, "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1", "ListDisks",
                          dest="org.vhdreclaim", sig="as", body=b"\0\0\0\0"))
    buf = b""
    name = body = None
    while body is None:
        mtype, reply_serial, b, buf = read_message(s, buf)
        if mtype == 3:
            raise AssertionError(f"error reply to {reply_serial}: {b!r}")
        if mtype == 2 and reply_serial == 1:
            (n,) = struct.unpack("<I", b[:4])
            name = b[4:4 + n].decode()
        elif mtype == 2 and reply_serial == 2:
            body = b
    return name, body


def test_introspect_and_call(tmp):
    img = standard_image(os.path.join(tmp, "a.vhdx"))
    d = Daemon(tmp, config(tmp, [("a", img)])).start()
    p = subprocess.run(["busctl", f"--address=unix:path={d.sock}", "introspect", "org.vhdreclaim",
                        "/org/vhdreclaim/Manager"], capture_output=True, text=True, check=True)
    for member in ("ListDisks", "Reclaim", "Trim", "Cancel", "SetSparse", "Reload", "ListJobs", "History",
                   "GetTrimStatus", "JobProgress", "JobFinished", "ReclaimedTotal", "ConfigFile"):
        assert member in p.stdout, (member, p.stdout)
    p = subprocess.run(["busctl", f"--address=unix:path={d.sock}", "introspect", "--xml-interface",
                        "org.vhdreclaim", "/org/vhdreclaim/Manager"], capture_output=True, text=True, check=True)
    assert '<method name="ListDisks">' in p.stdout and 'name="names"' in p.stdout, p.stdout
    # One raw client: the daemon answers Hello like a bus would.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(d.sock)
        authenticate(s)
        name, body = hello_and_list(s)
        assert name.startswith(":1."), name
        assert b"a.vhdx" in body, body
    # A Hello sent in the same write as BEGIN, and nothing after it, is answered too.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(d.sock)
        authenticate(s)
        s.sendall(b"BEGIN\r\n" + dbus_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                                           dest="org.freedesktop.DBus"))
        mtype, reply_serial, body, _ = read_message(s, b"")
        assert (mtype, reply_serial) == (2, 1), (mtype, reply_serial, body)


def test_job_signals(tmp):
    img = make_vhdx(os.path.join(tmp, "big.vhdx"), "1G", [("P", "0", "0", "96M")])
    copy = os.path.join(tmp, "big.orig.vhdx")
    shutil.copyfile(img, copy)
    d = Daemon(tmp, config(tmp, [("big", img)], reclaim={"ioLimit": "48M"})).start()
    # Two listeners; one of them calls Reclaim. Both see the progress and the end.
    listeners = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(d.sock)
        authenticate(s)
        hello_and_list(s)
        listeners.append(s)
    listeners[0].sendall(dbus_call(3, "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1", "Reclaim",
                                   sig="asbbs", body=reclaim_body(["big"], False, False, "")))
    t0 = time.monotonic()
    for s in listeners:
        buf, progress, finished, reply = b"", [], None, None
        while finished is None:
            mtype, reply_serial, member, body, buf = read_message_member(s, buf)
            if mtype == 2 and reply_serial == 3:
                reply = body
            elif mtype == 4 and member == "JobProgress":
                progress.append(time.monotonic())
            elif mtype == 4 and member == "JobFinished":
                finished = body
        assert b"big" in finished and b"success" in finished, finished
        duration = time.monotonic() - t0
        assert len(progress) >= 2, progress
        # At most 4 per second.
        assert len(progress) <= 4 * duration + 2, (len(progress), duration)
        if s is listeners[0]:
            assert reply is not None and len(reply) == 4 + 4 + 8, reply    # at: one job id
        s.close()
    assert_same_content(img, copy)


def garbage_clients(sock_path, stop):
    """Clients that misbehave in every way we can think of, in a loop until stop is set."""
    payloads = [
        os.urandom(4096),
        b"\0AUTH EXTERNAL zz\r\n" + os.urandom(512),
        b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nBEGIN\r\n" + os.urandom(8192),
        # A header announcing a 100 MB body, then nothing.
        b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nBEGIN\r\n"
        + b"l\x01\x00\x01" + struct.pack("<III", 100 * 1024 * 1024, 1, 0),
        b"\0" * 65536,
    ]
    n = 0
    while not stop.is_set():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(sock_path)
                s.sendall(payloads[n % len(payloads)])
                if n % 3 == 0:
                    s.recv(100)
            except OSError:
                pass
        n += 1
        time.sleep(0.01)
    return n


def test_500_clients_and_garbage(tmp):
    imgs = [standard_image(os.path.join(tmp, f"i{i}.vhdx")) for i in range(3)]
    d = Daemon(tmp, config(tmp, [(f"i{i}", p) for i, p in enumerate(imgs)])).start()

    # Stalled clients: connected and silent, mid-handshake, mid-message, and one that never reads.
    stalled = []
    for i in range(4):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.sock)
        if i == 1:
            s.sendall(b"\0AUTH EXT")
        elif i >= 2:
            authenticate(s)
            s.sendall(b"BEGIN\r\n" + dbus_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                                               dest="org.freedesktop.DBus")[:20])
        stalled.append(s)

    stop = threading.Event()
    garbage = ThreadPoolExecutor(1).submit(garbage_clients, d.sock, stop)

    # 500 clients connected at the same time, each authenticated, saying Hello and calling ListDisks.
    clients = []
    t0 = time.monotonic()
    for _ in range(500):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(d.sock)
        clients.append(s)
    for s in clients:
        authenticate(s)
    names = set()
    # Half of them also vanish right after their call, before reading the reply.
    for i, s in enumerate(clients):
        if i % 10 == 9:
            s.sendall(b"BEGIN\r\n" + dbus_call(2, "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1",
                                               "ListDisks", sig="as", body=b"\0\0\0\0"))
            s.close()
            continue
        name, body = hello_and_list(s)
        assert body.count(b".vhdx") == 3, body
        names.add(name)
    assert len(names) == 450, len(names)
    raw_time = time.monotonic() - t0
    for s in clients:
        s.close()

    # And busctl itself, 100 processes, 25 at a time.
    def one(_):
        return d.busctl("call", "org.vhdreclaim", "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1",
                        "ListDisks", "as", "0").returncode

    with ThreadPoolExecutor(25) as ex:
        codes = list(ex.map(one, range(100)))
    assert codes == [0] * 100, codes

    stop.set()
    assert garbage.result() > 0
    for s in stalled:
        s.close()
    assert d.alive()
    assert len(d.disks()) == 3
    print(f"     500 raw clients served in {raw_time:.2f}s")
    # Every connection was let go: only the listening socket and a few descriptors remain.
    wait_for(lambda: len(os.listdir(f"/proc/{d.proc.pid}/fd")) < 30, 10, what="connections to be released")


def test_socket_takeover_rules(tmp):
    img = standard_image(os.path.join(tmp, "a.vhdx"))
    conf = config(tmp, [("a", img)])
    d = Daemon(tmp, conf).start()
    # A second daemon on the same socket refuses to start and leaves the first alone.
    d2 = Daemon(tmp, conf)
    d2.log = os.path.join(tmp, "second.log")
    d2.state = os.path.join(tmp, "state2")      # its own: the state directory's lock is another test
    d2.start(wait=False)
    assert d2.proc.wait(10) != 0
    assert "another vhdreclaimd is running" in d2.read_log(), d2.read_log()
    assert d.alive() and len(d.disks()) == 1
    # A stale socket file (daemon killed hard) is replaced.
    d.proc.kill()
    d.proc.wait()
    assert os.path.exists(d.sock)
    d.start()
    assert len(d.disks()) == 1
    assert "stale" in d.read_log()
    assert d.stop() < 2
    assert not os.path.exists(d.sock)


def test_state_dir_lock(tmp):
    """Two daemons on one state directory would overwrite each other's
    records and history: the second refuses to start, naming the directory
    and the first one's PID, and leaves the first and its state alone."""
    img = standard_image(os.path.join(tmp, "a.vhdx"))
    conf = config(tmp, [("a", img)])
    d = Daemon(tmp, conf).start()
    d.reclaim("a")
    d.wait_passes("a", 1)
    state_file = os.path.join(d.state, "disks", "a.state")
    before = open(state_file).read()
    d2 = Daemon(tmp, conf)
    d2.log = os.path.join(tmp, "second.log")
    d2.sock = os.path.join(tmp, "second.sock")
    d2.start(wait=False)
    rc = d2.proc.wait(10)
    log = d2.read_log()
    assert rc != 0, log
    assert d.state in log and f"PID {d.proc.pid}" in log, log
    assert not os.path.exists(d2.sock), log
    assert d.alive() and d.disk("a")["passes"] == 1
    assert open(state_file).read() == before
    # Once the first has gone, the directory is free (the lock dies with it).
    d.stop()
    d2.start()
    assert d2.disk("a")["passes"] == 1


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    main([test_introspect_and_call, test_job_signals, test_500_clients_and_garbage, test_socket_takeover_rules,
          test_state_dir_lock])
