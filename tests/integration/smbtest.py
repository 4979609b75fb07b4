# SPDX-License-Identifier: GPL-2.0-or-later
"""A real smbd for the Samba tests: Debian's samba with a private
configuration (its own smb.conf, state, lock, pid and private directories
under the test's temporary directory), bound to 127.0.0.1 port 445, the only
port python3-samba's libsmb client talks to, in a network namespace of its
own (unshare), so that neither a system smbd nor another test run can hold
that port; the clients join the namespace (nsenter). And an SMB client in its own
process (python3-samba's libsmb, run by the system's python3, which is the
one python3-samba is built for), driven line by line, so that it can hold a
file open while the test does other things; and one on impacket (also the
system's python3), which can ask for a durable handle, drop its connection
without a logoff and reconnect the handle, which libsmb cannot."""

import json
import os
import signal
import socket
import struct
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


def require_impacket():
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import impacket.smbconnection"], capture_output=True, text=True)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or ["?"])[-1]
        skip(f"python3-impacket is missing (tools/install-deps.sh installs it): {why}")


def openers(path):
    """The pids that have path open (every /proc/PID/fd): smbd's connection
    process holds a client's open file, and closes it when a durable
    handle's connection drops."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    pids.append(int(pid))
                    break
            except OSError:
                pass
    return pids


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

    MODE = "--client"

    def __init__(self, samba):
        self.proc = subprocess.Popen(samba.enter([SYSTEM_PYTHON, os.path.abspath(__file__), self.MODE, samba.conf]),
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


class DurableClient(Client):
    """One SMB 3 connection (impacket) that asks for durable handles:
    version 1 ("DHnQ") on a batch oplock, or version 2 ("DH2Q") on a
    read-write-handle lease, the one Windows clients ask for since SMB 3.
    open answers with the handle (a word to give reconnect), drop closes the
    TCP connection without a close or logoff (as a client whose network went
    away), and reconnect, on a new connection and session, asks for the
    handle again ("DHnC" / "DH2C"). A refused request answers with its
    NTSTATUS."""

    MODE = "--durable-client"

    def open(self, name, version=1):
        return self.request("open", name, version)

    def reconnect(self, name, handle):
        return self.request("reconnect", name, handle)

    def drop(self):
        return self.request("drop")


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


# [MS-SMB2] 2.2.13.2: create context names and the lease state asked for.
DHNQ, DHNC, DH2Q, DH2C, RQLS = b"DHnQ", b"DHnC", b"DH2Q", b"DH2C", b"RqLs"
LEASE_RWH = 7
# A version 2 handle (a lease's) reconnects only from the client GUID that
# opened it; impacket draws one per connection, so every process uses this.
CLIENT_GUID = "vhdreclaim-test!"


def create_contexts(items):
    """SMB2_CREATE_CONTEXT chain: name at 16, data at 24, each 8-aligned."""
    out = b""
    for i, (name, data) in enumerate(items):
        c = struct.pack("<IHHHHI", 0, 16, len(name), 0, 24 if data else 0, len(data)) + name + b"\0" * 4 + data
        if i < len(items) - 1:
            c += b"\0" * (-len(c) % 8)
            c = struct.pack("<I", len(c)) + c[4:]
        out += c
    return out


def parse_contexts(buf):
    out, off = {}, 0
    while buf:
        nxt, noff, nlen, _, doff, dlen = struct.unpack_from("<IHHHHI", buf, off)
        out[buf[off + noff:off + noff + nlen].decode()] = buf[off + doff:off + doff + dlen]
        if not nxt:
            break
        off += nxt
    return out


def lease_v2(key):
    return struct.pack("<16sIIQ16sHH", key, LEASE_RWH, 0, 0, b"\0" * 16, 0, 0)


def durable_client_main(conf):
    """The durable client process (the system python3, which has impacket).
    impacket's own create() neither returns the answer's create contexts
    nor knows durable handles: the CREATE is built here and the open
    entered into its tables so that readFile, writeFile and closeFile work."""
    import copy
    import uuid

    from impacket import smb3
    from impacket import smb3structs as s3
    from impacket.nt_errors import ERROR_MESSAGES, STATUS_SUCCESS
    from impacket.smbconnection import SMBConnection

    negotiate = smb3.SMB3.negotiateSession

    def negotiate_fixed_guid(self, *args, **kw):
        self.ClientGuid = CLIENT_GUID
        return negotiate(self, *args, **kw)
    smb3.SMB3.negotiateSession = negotiate_fixed_guid

    def say(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    def status_of(code):
        return {"status": f"0x{code:08x}", "error": ERROR_MESSAGES.get(code, (f"0x{code:08x}",))[0]}

    def create(name, oplock, contexts):
        s = conn.getSMBServer()
        packet = s.SMB_PACKET()
        packet["Command"] = s3.SMB2_CREATE
        packet["TreeID"] = tid
        c = s3.SMB2Create()
        c["SecurityFlags"] = 0
        c["RequestedOplockLevel"] = oplock
        c["ImpersonationLevel"] = s3.SMB2_IL_IMPERSONATION
        c["DesiredAccess"] = 0x12019f          # GENERIC read and write
        c["FileAttributes"] = 0
        c["ShareAccess"] = 7
        c["CreateDisposition"] = s3.FILE_OPEN
        c["CreateOptions"] = s3.FILE_NON_DIRECTORY_FILE
        c["NameLength"] = len(name) * 2
        c["Buffer"] = name.encode("utf-16le")
        header = len(s3.SMB2Packet()) + s3.SMB2Create.SIZE
        c["Buffer"] += b"\0" * (-(header + len(c["Buffer"])) % 8)
        c["CreateContextsOffset"] = header + len(c["Buffer"])
        blob = create_contexts(contexts)
        c["CreateContextsLength"] = len(blob)
        c["Buffer"] += blob
        packet["Data"] = c
        ans = s.recvSMB(s.sendSMB(packet))
        if ans["Status"] != STATUS_SUCCESS:
            return dict(ok=False, **status_of(ans["Status"]))
        r = s3.SMB2Create_Response(ans["Data"])
        got = {}
        if r["CreateContextsLength"]:
            # The offset counts from the SMB2 header, Data from after it.
            o = r["CreateContextsOffset"] - len(s3.SMB2Packet())
            got = parse_contexts(ans["Data"][o:o + r["CreateContextsLength"]])
        fid = r["FileID"].getData()
        path = "\\\\" + s._Connection["ServerName"] + "\\" + name
        entry = copy.deepcopy(smb3.OPEN)
        entry["FileID"], entry["TreeConnect"], entry["FileName"] = r["FileID"], tid, path
        s._Session["OpenTable"][fid] = entry
        s.GlobalFileTable[path] = copy.deepcopy(smb3.FILE)
        answer = dict(ok=True, file_id=fid.hex(), oplock=r["OplockLevel"], contexts=sorted(got))
        if "DH2Q" in got:
            answer["durable_timeout_ms"] = struct.unpack_from("<I", got["DH2Q"])[0]
        if "RqLs" in got:
            answer["lease_state"] = struct.unpack_from("<I", got["RqLs"], 16)[0]
        return answer, fid

    try:
        conn = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=445)
        conn.login(USER, PASSWORD)
        tid = conn.connectTree(SHARE)
    except Exception as e:  # noqa: BLE001 - reported to the test
        say(ok=False, error=str(e))
        return
    say(ok=True, dialect=f"0x{conn.getDialect():x}")
    fid = None
    for line in sys.stdin:
        words = line.split()
        t0 = time.monotonic()
        try:
            if words[0] in ("open", "reconnect"):
                name = words[1]
                if words[0] == "open":
                    version = int(words[2])
                    create_guid, lease_key = uuid.uuid4().bytes, uuid.uuid4().bytes
                else:
                    version, file_id, create_guid, lease_key = words[2].split(":")
                    version, file_id = int(version), bytes.fromhex(file_id)
                    create_guid, lease_key = bytes.fromhex(create_guid), bytes.fromhex(lease_key)
                if version == 1:
                    oplock = s3.SMB2_OPLOCK_LEVEL_BATCH
                    ctx = [(DHNQ, b"\0" * 16)] if words[0] == "open" else [(DHNC, file_id)]
                else:
                    oplock = s3.SMB2_OPLOCK_LEVEL_LEASE
                    ctx = [(RQLS, lease_v2(lease_key))]
                    if words[0] == "open":
                        # Timeout 0: the server's default; flags 0: not persistent.
                        ctx.append((DH2Q, struct.pack("<II8s16s", 0, 0, b"", create_guid)))
                    else:
                        ctx.append((DH2C, struct.pack("<16s16sI", file_id, create_guid, 0)))
                r = create(name, oplock, ctx)
                if isinstance(r, dict):
                    say(secs=time.monotonic() - t0, **r)
                    continue
                answer, fid = r
                answer["handle"] = f"{version}:{fid.hex()}:{create_guid.hex()}:{lease_key.hex()}"
                say(secs=time.monotonic() - t0, at=time.time(), **answer)
            elif words[0] == "read":
                data = conn.readFile(tid, fid, int(words[1]), int(words[2]))
                say(ok=True, hex=data.hex())
            elif words[0] == "write":
                conn.writeFile(tid, fid, bytes.fromhex(words[2]), int(words[1]))
                say(ok=True)
            elif words[0] == "close":
                conn.closeFile(tid, fid)
                fid = None
                say(ok=True)
            elif words[0] == "drop":
                # The network went away: no close, no logoff.
                sock = conn.getSMBServer()._NetBIOSSession.get_socket()
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                say(ok=True)
                return
            else:
                say(ok=False, error=f"unknown request {words[0]}")
        except Exception as e:  # noqa: BLE001 - reported to the test
            code = e.getErrorCode() if hasattr(e, "getErrorCode") else None
            say(ok=False, **(status_of(code) if isinstance(code, int) else {}), message=str(e))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--client":
    client_main(sys.argv[2])
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--durable-client":
    durable_client_main(sys.argv[2])
