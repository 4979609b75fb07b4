# SPDX-License-Identifier: GPL-2.0-or-later
"""A real smbd for the Samba tests: Debian's samba with a private
configuration (its own smb.conf, state, lock, pid and private directories
under the test's temporary directory), bound to 127.0.0.1 port 445, the only
port python3-samba's libsmb client talks to, in a network namespace of its
own (unshare), so that neither a system smbd nor another test run can hold
that port; the clients join the namespace (nsenter). And an SMB client in its own
process (python3-samba's libsmb, run by the system's python3, which is the
one python3-samba is built for), driven line by line, so that it can hold a
file open while the test does other things."""

import json
import os
import signal
import subprocess
import sys
import time

from daemonlib import skip, wait_for

USER = "root"
PASSWORD = "vhdreclaim-test"
SHARE = "images"
SYSTEM_PYTHON = "/usr/bin/python3"

# NTCreateX flags: the client asks for an oplock (SMB2: exclusive, batch).
NO_OPLOCK = 0
REQUEST_OPLOCK = 2
REQUEST_BATCH_OPLOCK = 4


def listening_445(pid):
    """Whether 127.0.0.1:445 is listening in the network namespace of pid."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return any(w[1] == "0100007F:01BD" and w[3] == "0A" for w in (line.split() for line in f)
                       if len(w) > 3)
    except OSError:
        return False


def require_samba():
    if os.geteuid() != 0:
        skip("smbd needs root to bind port 445")
    for tool in ("/usr/sbin/smbd", "/usr/bin/smbclient", "/usr/bin/smbpasswd", SYSTEM_PYTHON,
                 "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/sbin/ip"):
        if not os.access(tool, os.X_OK):
            skip(f"{tool} is missing (tools/install-deps.sh installs samba, smbclient, python3-samba)")
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import samba.samba3.libsmb_samba_internal"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        skip(f"python3-samba is missing: {p.stderr.strip()[-200:]}")


class Samba:
    """smbd -F in its own session (so that it and every child it forks for a
    connection are one process group, stopped together) and its own network
    namespace."""

    def __init__(self, tmp, share_dir, kernel_oplocks=False, extra=""):
        self.dir = os.path.join(tmp, "samba")
        self.share_dir = share_dir
        self.conf = os.path.join(self.dir, "smb.conf")
        self.log = os.path.join(self.dir, "log.smbd")
        self.proc = None
        for sub in ("run", "lock", "state", "cache", "private"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""[global]
  netbios name = VHDRECLAIMTEST
  workgroup = WORKGROUP
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = 445
  pid directory = {d}/run
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  private dir = {d}/private
  binddns dir = {d}/private
  ncalrpc dir = {d}/run/ncalrpc
  log file = {self.log}
  log level = 1
  passdb backend = tdbsam:{d}/private/passdb.tdb
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes
  server min protocol = SMB2_02
  kernel oplocks = {"yes" if kernel_oplocks else "no"}
{extra}
[{SHARE}]
  path = {share_dir}
  read only = no
""")
        p = subprocess.run(["smbpasswd", "-c", self.conf, "-s", "-a", USER],
                           input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True)
        if p.returncode != 0:
            raise AssertionError(f"smbpasswd failed: {p.stderr}")

    def start(self):
        self.out = open(os.path.join(self.dir, "smbd.out"), "w")
        # unshare and sh exec: the process started is smbd itself.
        self.proc = subprocess.Popen(["unshare", "--net", "sh", "-c",
                                      f"ip link set lo up && exec smbd -F --no-process-group -s '{self.conf}'"],
                                     stdout=self.out, stderr=self.out, start_new_session=True)
        self.netns = f"/proc/{self.proc.pid}/ns/net"
        wait_for(lambda: self.listening(), 15, 0.1, what="smbd to listen on 127.0.0.1:445")
        return self

    def enter(self, argv):
        """argv run in smbd's network namespace."""
        return ["nsenter", f"--net={self.netns}"] + list(argv)

    def listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"smbd exited with {self.proc.returncode}: {self.read_log()}")
        return listening_445(self.proc.pid)

    def read_log(self):
        text = ""
        for name in (self.log, os.path.join(self.dir, "smbd.out")):
            try:
                with open(name) as f:
                    text += f.read()[-3000:]
            except OSError:
                pass
        return text

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        # The group is smbd's own (start_new_session): its connection children.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # any child left behind
        except ProcessLookupError:
            pass
        self.out.close()

    def smbclient(self, command, check=True):
        p = subprocess.run(self.enter(["smbclient", f"//127.0.0.1/{SHARE}", "-U", f"{USER}%{PASSWORD}",
                                       "-s", self.conf, "-c", command]), capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"smbclient -c {command!r} failed: {p.stdout}{p.stderr}")
        return p

    def smbclient_start(self, command):
        return subprocess.Popen(self.enter(["smbclient", f"//127.0.0.1/{SHARE}", "-U", f"{USER}%{PASSWORD}",
                                            "-s", self.conf, "-c", command]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Client:
    """One SMB connection (libsmb) in a child process: open, read, write,
    close, each answered with a JSON line. A client that receives an oplock
    break it does not expect fails its next request; that is how the tests
    see that something took its oplock away."""

    def __init__(self, samba):
        self.proc = subprocess.Popen(samba.enter([SYSTEM_PYTHON, os.path.abspath(__file__), "--client", samba.conf]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        r = self._answer()
        if not r.get("ok"):
            raise AssertionError(f"SMB client could not connect: {r}")

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("SMB client process died")
        return json.loads(line)

    def request(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def open(self, name, oplock=NO_OPLOCK):
        return self.request("open", name, oplock)

    def read(self, offset, length):
        return self.request("read", offset, length)

    def write(self, offset, data):
        return self.request("write", offset, data.hex())

    def close_file(self):
        return self.request("close")

    def quit(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.quit()


def client_main(conf):
    """The client process (run by the system python3)."""
    import samba.credentials
    from samba.samba3 import libsmb_samba_internal as libsmb
    from samba.samba3 import param as s3param

    def say(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    lp = s3param.get_context()
    lp.load(conf)
    creds = samba.credentials.Credentials()
    creds.guess(lp)
    creds.set_username(USER)
    creds.set_password(PASSWORD)
    try:
        conn = libsmb.Conn("127.0.0.1", SHARE, lp, creds)
    except Exception as e:  # noqa: BLE001 - reported to the test
        say(ok=False, error=str(e))
        return
    say(ok=True)
    fnum = None
    for line in sys.stdin:
        words = line.split()
        try:
            t0 = time.monotonic()
            if words[0] == "open":
                # GENERIC read and write, share everything, open existing.
                fnum = conn.create(words[1], DesiredAccess=0x12019f, ShareAccess=7, CreateDisposition=1,
                                   CreateFlags=int(words[2]))
                say(ok=True, secs=time.monotonic() - t0, at=time.time())
            elif words[0] == "read":
                data = conn.read(fnum, int(words[1]), int(words[2]))
                say(ok=True, hex=data.hex())
            elif words[0] == "write":
                conn.write(fnum, bytes.fromhex(words[2]), int(words[1]))
                say(ok=True, secs=time.monotonic() - t0)
            elif words[0] == "close":
                conn.close(fnum)
                fnum = None
                say(ok=True)
            else:
                say(ok=False, error=f"unknown request {words[0]}")
        except Exception as e:  # noqa: BLE001 - reported to the test
            say(ok=False, error=str(e), secs=time.monotonic() - t0)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--client":
    client_main(sys.argv[2])
