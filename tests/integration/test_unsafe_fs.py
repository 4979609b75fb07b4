#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Safety rule 6: an image on a file system where a lease does not see every
opener is skipped as skipped-unsafe-fs, unless [reclaim] localMounts declares
the mount used by this host alone.

The network file system here is a real one: sshfs (FUSE) against an sshd of
the test's own on 127.0.0.1, so every access goes through SFTP and the
server's own opens of the file are invisible to a lease taken through the
mount, which the test shows first. (The kernel of the test machines has
neither an NFS nor a CIFS client; those types are covered by the unit tests
of the type table, tests/unit/test-hostfs.c.)"""

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time

from daemonlib import (Daemon, MiB, VHDRECLAIMD, assert_same_content, config, main, require_tools,
                       skip, standard_image, wait_for)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sshfs:
    """sshd on 127.0.0.1 (own host key, own config, key login for root) and
    sshfs mounting its `remote` directory on `mount_point`."""

    def __init__(self, tmp, remote, mount_point):
        self.dir = os.path.join(tmp, "ssh")
        os.mkdir(self.dir, 0o700)
        self.remote, self.mount_point = remote, mount_point
        self.port = free_port()
        self.sshd = None
        self.mounted = False
        for key in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, key)],
                           check=True)
        shutil.copyfile(os.path.join(self.dir, "user.pub"), os.path.join(self.dir, "authorized_keys"))
        self.conf = os.path.join(self.dir, "sshd_config")
        with open(self.conf, "w") as f:
            f.write(f"""ListenAddress 127.0.0.1:{self.port}
HostKey {self.dir}/host
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")

    def start(self):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)    # sshd's privilege separation directory
        self.log = open(os.path.join(self.dir, "sshd.log"), "w")
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", self.conf],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        wait_for(self._listening, 10, 0.1, what="sshd to listen")
        os.mkdir(self.mount_point)
        subprocess.run(["sshfs", "-p", str(self.port),
                        "-o", f"IdentityFile={self.dir}/user,StrictHostKeyChecking=no,"
                              "UserKnownHostsFile=/dev/null,LogLevel=ERROR,BatchMode=yes",
                        f"root@127.0.0.1:{self.remote}", self.mount_point], check=True, timeout=30)
        self.mounted = True
        return self

    def _listening(self):
        if self.sshd.poll() is not None:
            raise AssertionError(f"sshd exited: {open(os.path.join(self.dir, 'sshd.log')).read()}")
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", self.port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        if self.mounted:
            subprocess.run(["fusermount3", "-u", "-z", self.mount_point], check=False)
            self.mounted = False
        if self.sshd and self.sshd.poll() is None:
            os.killpg(self.sshd.pid, signal.SIGTERM)
            self.sshd.wait(10)
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def mount_type(path):
    dev = os.stat(path).st_dev
    with open("/proc/self/mountinfo") as f:
        for line in f:
            w = line.split()
            major, minor = (int(x) for x in w[2].split(":"))
            if os.makedev(major, minor) == dev:
                return w[w.index("-") + 1]
    return None


def once_json(image):
    p = subprocess.run([VHDRECLAIMD, "--once", "--json", image], capture_output=True, text=True, timeout=120)
    import json
    return p.returncode, json.loads(p.stdout.splitlines()[0]), p.stderr


def setup(tmp):
    remote = os.path.join(tmp, "remote")
    os.mkdir(remote)
    image = standard_image(os.path.join(remote, "user.vhdx"))
    copy = os.path.join(tmp, "copy.vhdx")
    shutil.copyfile(image, copy)
    return remote, image, copy, os.path.join(tmp, "mnt")


def test_lease_through_sshfs_does_not_see_the_server(tmp):
    """Why the rule exists, shown on this very mount: with the file open on
    the server side, a lease taken through the mount is still granted."""
    remote, image, _, mnt = setup(tmp)
    with Sshfs(tmp, remote, mnt):
        assert mount_type(mnt) == "fuse.sshfs", mount_type(mnt)
        server_side = os.open(image, os.O_RDWR)     # as another host's writer would
        try:
            fd = os.open(os.path.join(mnt, "user.vhdx"), os.O_RDONLY)
            try:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
                granted = fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_WRLCK
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            except OSError as e:
                granted = f"refused: {e}"
            finally:
                os.close(fd)
        finally:
            os.close(server_side)
        print(f"     write lease through sshfs while the server has the file open: {granted}")
        assert granted is True, "expected the local lease to be blind to the server's open"


def test_once_refuses_sshfs(tmp):
    remote, image, copy, mnt = setup(tmp)
    before = sha256(image)
    mtime = os.stat(image).st_mtime_ns
    with Sshfs(tmp, remote, mnt):
        rc, rep, err = once_json(os.path.join(mnt, "user.vhdx"))
        assert (rc, rep["result"]) == (0, "skipped-unsafe-fs"), (rc, rep, err)
        msg = rep["message"]
        assert "FUSE" in msg and "fuse.sshfs" in msg and mnt in msg and "localMounts" in msg, msg
        assert rep["file_size"] == os.path.getsize(image), rep
    assert sha256(image) == before and os.stat(image).st_mtime_ns == mtime
    # The same image, reached locally, is fine.
    rc, rep, err = once_json(image)
    assert (rc, rep["result"]) == (0, "success"), (rc, rep, err)
    assert_same_content(image, copy)


def test_daemon_skips_until_declared_local(tmp):
    remote, image, copy, mnt = setup(tmp)
    before = sha256(image)
    path = os.path.join(mnt, "user.vhdx")
    with Sshfs(tmp, remote, mnt):
        d = Daemon(tmp, config(tmp, [("u", path)])).start()
        d.reclaim("u")
        x = d.wait_passes("u", 1)
        assert x["last_result"] == "skipped-unsafe-fs" and "fuse.sshfs" in x["last_message"], x
        assert sha256(image) == before
        # The admin declares the mount used by this host alone; a reload picks it up.
        d.write_config(config(tmp, [("u", path)]).replace("[reclaim]\n", f"[reclaim]\nlocalMounts={mnt}\n"))
        d.call("Reload")
        # sshfs cannot punch holes (SFTP has no such request), so what shows
        # the declaration at work is a dry run that reads the whole image
        # through the mount under the lease, and a real pass that gets as far
        # as the first punch.
        d.reclaim("u", dry_run=True)
        h = d.wait_history("u", 2)[-1]
        assert h["result"] == "success" and h["stale_bytes"] + h["zero_bytes"] >= 16 * MiB, h
        d.reclaim("u")
        h = d.wait_history("u", 3)[-1]
        assert h["result"] == "error" and "Operation not supported" in h["message"], h
        d.stop()
    assert sha256(image) == before
    assert_same_content(image, copy)


def test_check_config_local_mounts(tmp):
    conf = os.path.join(tmp, "c.conf")
    with open(conf, "w") as f:
        f.write("[reclaim]\nlocalMounts=/srv/share  /mnt/cluster/\n")
    p = subprocess.run([VHDRECLAIMD, "--check-config", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 0 and "localMounts=/srv/share /mnt/cluster\n" in p.stdout, p.stdout + p.stderr
    with open(conf, "w") as f:
        f.write("[reclaim]\n\nlocalMounts=srv/share\n")
    p = subprocess.run([VHDRECLAIMD, "--check-config", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 1 and f"{conf}:3: error: invalid value for localMounts" in p.stderr, p.stderr
    with open(conf, "w") as f:
        f.write("[disk.a]\npath=/x.vhdx\nlocalMounts=/srv\n")
    p = subprocess.run([VHDRECLAIMD, "--check-config", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 0 and f"{conf}:3: warning: unknown key 'localMounts'" in p.stderr, p.stderr


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "sshfs", "fusermount3", "ssh-keygen", "/usr/sbin/sshd")
    if os.geteuid() != 0:
        skip("the sshd of the test logs in as root")
    if not os.path.exists("/dev/fuse"):
        skip("/dev/fuse is missing")
    main([test_check_config_local_mounts, test_lease_through_sshfs_does_not_see_the_server,
          test_once_refuses_sshfs, test_daemon_skips_until_declared_local])
