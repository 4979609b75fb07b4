# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared helpers of the daemon integration tests: a real vhdreclaimd on
images in a temporary directory, with its own configuration, socket and
state directory, driven through busctl."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

VHDRECLAIMD = os.environ.get("VHDRECLAIMD", "")
SERVICE = "org.vhdreclaim"
PATH = "/org/vhdreclaim/Manager"
IFACE = "org.vhdreclaim.Manager1"

DISK_FIELDS = ["name", "path", "origin", "format", "sparse", "state", "virtual_size", "file_size",
               "allocated", "reclaimable", "reclaimed_last", "reclaimed_total", "last_result",
               "last_message", "last_pass", "next_pass", "job_done", "job_total", "passes"]
HISTORY_FIELDS = ["name", "path", "start", "result", "message", "duration_usec", "reclaimed",
                  "stale_bytes", "zero_bytes", "free_bytes", "discard"]

MiB = 1024 * 1024

# Daemons of the running test, killed if the test leaves one behind.
_daemons = []


SKIP_STATUS = 77   # meson's SKIP


def skip(reason):
    """Exit 77 (meson's skip), or fail under CI=true where nothing may be missing.
    Inside main() the SystemExit ends only the running test: see main()."""
    if os.environ.get("CI") == "true":
        print(f"FAILED (CI=true, nothing may be missing): {reason}", flush=True)
        sys.exit(1)
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP_STATUS)


def require_tools(*tools):
    if not VHDRECLAIMD or not os.access(VHDRECLAIMD, os.X_OK):
        skip("VHDRECLAIMD is not set to the built daemon")
    for t in tools:
        if not shutil.which(t):
            skip(f"{t} is not installed")


def run(*args, check=True, **kw):
    p = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def wait_for(cond, timeout=10.0, interval=0.05, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# ---- images ----

def make_vhdx(path, size="64M", writes=()):
    """qemu-img create -f vhdx, then qemu-io writes: ("P", pattern, offset, length) data,
    ("z", offset, length) zero writes."""
    run("qemu-img", "create", "-q", "-f", "vhdx", path, size)
    cmds = []
    for w in writes:
        if w[0] == "P":
            cmds += ["-c", f"write -P {w[1]} {w[2]} {w[3]}"]
        else:
            cmds += ["-c", f"write -z {w[1]} {w[2]}"]
    if cmds:
        run("qemu-io", "-f", "vhdx", *cmds, path)
    return path


def standard_image(path, size="64M"):
    """Data, zero data (qemu-img writes zeros rather than ZERO blocks) and more data."""
    return make_vhdx(path, size, [("P", "0xab", 0, "4M"), ("P", "0", "4M", "16M"),
                                  ("P", "0x5a", "20M", "2M"), ("z", "24M", "8M")])


def qemu_info(path):
    return json.loads(run("qemu-img", "info", "--output=json", path).stdout)


def assert_same_content(image, copy):
    run("qemu-img", "compare", "-q", copy, image)
    run("qemu-img", "check", "-q", image)


def allocated(path):
    return os.stat(path).st_blocks * 512


# ---- the daemon ----

class Daemon:
    def __init__(self, tmp, config, env=None, extra_args=()):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "control.sock")
        self.state = os.path.join(tmp, "state")
        self.conf = os.path.join(tmp, "vhdreclaim.conf")
        self.log = os.path.join(tmp, "daemon.log")
        self.env = env
        self.extra_args = list(extra_args)
        self.proc = None
        self.write_config(config)
        _daemons.append(self)

    def write_config(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self, wait=True):
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("SYSTEMD_LOG_LEVEL", "info")
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([VHDRECLAIMD, "-c", self.conf, "--socket", self.sock,
                                      "--state-dir", self.state] + self.extra_args,
                                     stdout=self.logf, stderr=self.logf, env=env)
        if wait:
            wait_for(self.connectable, 10, what="the control socket")
        return self

    def connectable(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.read_log()}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals the daemon and returns the seconds it took to exit."""
        if not self.alive():
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s after {sig!r}")
        self.logf.close()
        took = time.monotonic() - t0
        self.check_sanitizers()
        if sig in (signal.SIGTERM, signal.SIGINT) and self.proc.returncode != 0:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.read_log()[-4000:]}")
        return took

    def check_sanitizers(self):
        log = self.read_log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                raise AssertionError(f"sanitizer report in the daemon's log:\n{log[-6000:]}")

    # ---- busctl ----

    def busctl(self, *args, user=None, check=True, timeout=30):
        """user: (user, group) or (user, group, supplementary groups) to run busctl as."""
        cmd = ["busctl", f"--address=unix:path={self.sock}", "--json=short"] + list(args)
        if user:
            groups = ["--clear-groups"] if len(user) < 3 else [f"--groups={user[2]}"]
            cmd = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}"] + groups + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {p.stderr.strip()}\n{self.read_log()}")
        return p

    def call(self, method, signature="", *args, user=None, check=True):
        cmd = ["call", SERVICE, PATH, IFACE, method]
        if signature:
            cmd += [signature] + [str(a) for a in args]
        p = self.busctl(*cmd, user=user, check=check)
        if p.returncode != 0:
            return p
        return json.loads(p.stdout)["data"] if p.stdout.strip() else None

    def disks(self, *names, user=None):
        data = self.call("ListDisks", "as", len(names), *names, user=user)
        return {d[0]: dict(zip(DISK_FIELDS, d)) for d in data[0]}

    def disk(self, name):
        return self.disks(name)[name]

    def wait_probed(self, *names, timeout=10):
        """The disks, once each is listed with its format read (probes run on worker threads)."""
        return wait_for(lambda: (lambda x: x if set(x) == set(names) and
                                 all(v["format"] != "unknown" for v in x.values()) else None)(self.disks()),
                        timeout, 0.05, what=f"the formats of {', '.join(names)}")

    def history(self, name="", limit=0):
        data = self.call("History", "su", name, limit)
        return [dict(zip(HISTORY_FIELDS, h)) for h in data[0]]

    def reclaim(self, *names, dry_run=False, discard=""):
        data = self.call("Reclaim", "asbbs", len(names), *names, "false", "true" if dry_run else "false",
                         discard)
        return data[0]

    def wait_passes(self, name, passes, timeout=20):
        return wait_for(lambda: (lambda d: d if d["passes"] >= passes and d["state"] in ("idle", "error", "watch-only")
                                 else None)(self.disk(name)),
                        timeout, 0.1, what=f"{name} to reach {passes} passes")

    def wait_history(self, name, count, timeout=20):
        return wait_for(lambda: (lambda h: h if len(h) >= count else None)(self.history(name)),
                        timeout, 0.1, what=f"{count} history entries of {name}")


def drain(sock):
    """Reads a notify socket on until it is closed, as systemd does: a full
    one blocks the daemon's sd_notify()."""
    sock.settimeout(0.5)
    while True:
        try:
            sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:     # closed at the end of the test
            return


def config(tmp, disks=(), reclaim=None, extra="", admin_group=""):
    """A configuration: [reclaim] values (defaults that keep tests quick and
    quiet: no periodic passes, no random delay) and [disk.NAME] sections."""
    r = {"interval": "0", "randomizedDelay": "0", "idleDelay": "1h", "minReclaim": "0",
         "minHole": "64K", "ioLimit": "0", "maxPassTime": "0", "discard": "safe"}
    r.update(reclaim or {})
    text = f"[daemon]\nadminGroup={admin_group}\n\n[reclaim]\n" + "".join(f"{k}={v}\n" for k, v in r.items())
    for name, path, *rest in disks:
        text += f"\n[disk.{name}]\npath={path}\n"
        for line in rest:
            text += line + "\n"
    return text + extra


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="vhdreclaim-test-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def main(tests):
    """Runs test functions, each in a fresh temp dir; prints and exits: 1 when
    any test failed (a failure always wins), else 77 when any skipped, else 0."""
    failed = skipped = 0
    only = sys.argv[1:]
    for t in tests:
        if only and t.__name__ not in only:
            continue
        t0 = time.monotonic()
        with TempDir() as tmp:
            os.chmod(tmp, 0o755)
            try:
                t(tmp)
                print(f"ok   {t.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            except SystemExit as e:
                # skip() or sys.exit() inside a test ends that test only: the
                # others still run, and an earlier failure is not lost.
                if e.code == SKIP_STATUS:
                    skipped += 1
                    print(f"SKIP {t.__name__}", flush=True)
                else:
                    failed += 1
                    print(f"FAIL {t.__name__}: exited with {e.code!r}", flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure and go on
                failed += 1
                print(f"FAIL {t.__name__}: {type(e).__name__}: {e}", flush=True)
                for f in os.listdir(tmp):
                    if f.endswith(".log"):
                        print(open(os.path.join(tmp, f)).read()[-4000:])
            finally:
                for d in _daemons:
                    if d.alive():
                        try:
                            d.stop()
                        except AssertionError as e:
                            failed += 1
                            print(f"FAIL {t.__name__} (at exit): {e}", flush=True)
                    else:
                        try:
                            d.check_sanitizers()
                        except AssertionError as e:
                            failed += 1
                            print(f"FAIL {t.__name__}: {e}", flush=True)
                _daemons.clear()
    if failed:
        print(f"{failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
        sys.exit(1)
    sys.exit(SKIP_STATUS if skipped else 0)
