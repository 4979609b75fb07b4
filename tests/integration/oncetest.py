# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared harness of the test_once_*.py integration tests: running
`vhdreclaimd --once`, checks that report and count failures, and the peers
(qemu-img, qemu-io, fallocate) those tests compare against. Standard library
only."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import vhdxtool

KiB, MiB, GiB = vhdxtool.KiB, vhdxtool.MiB, vhdxtool.GiB

# DESIGN.md, "One-shot mode": the fields every JSON line carries, and their types.
JSON_FIELDS = {
    "path": str, "format": str, "virtual_size": int, "file_size": int,
    "allocated_before": int, "allocated_after": int, "reclaimed": int,
    "stale_bytes": int, "zero_bytes": int, "free_bytes": int,
    "filesystem": str, "result": str, "message": str, "duration_ms": int,
}
RESULTS = {"success", "nothing-to-do", "skipped-in-use", "skipped-dirty-log", "skipped-fixed",
           "skipped-differencing", "skipped-unclean-fs", "skipped-unsafe-fs", "skipped-threshold", "refused-invalid",
           "error", "cancelled"}
# Results where the image may never have been parsed: "format" may be null.
UNPARSED_RESULTS = {"refused-invalid", "error", "skipped-in-use", "skipped-unsafe-fs"}


def in_ci():
    return os.environ.get("CI") == "true"


# Every Checker of this run: a skip must not hide their failures.
_checkers = []


def skip_or_fail(reason):
    """A missing prerequisite: skip (77), or fail in CI. A check that already
    failed wins: the exit is then 1, never a skip."""
    print(("FAILED (CI): " if in_ci() else "skipping: ") + reason, flush=True)
    earlier = [f for c in _checkers for f in c.failures]
    if earlier:
        print(f"\n{len(earlier)} check(s) failed before that:")
        for f in earlier:
            print("  " + f)
        sys.exit(1)
    sys.exit(1 if in_ci() else 77)


class Checker:
    """Collects check results so that one run reports every failure."""

    def __init__(self):
        self.failures = []
        self.skipped = []
        _checkers.append(self)

    def skip(self, reason):
        """A part that cannot run here (a missing prerequisite): the others go
        on, and the run exits 77 at the end, or fails under CI=true."""
        if in_ci():
            return self.check(False, f"{reason} (CI=true: nothing may be missing)")
        print("SKIP   " + reason, flush=True)
        self.skipped.append(reason)
        return False

    def check(self, ok, what):
        print(("ok     " if ok else "FAILED ") + what, flush=True)
        if not ok:
            self.failures.append(what)
        return ok

    def equal(self, actual, expected, what):
        return self.check(actual == expected, f"{what}: {actual!r}" + ("" if actual == expected else f", expected {expected!r}"))

    def exit(self):
        if self.failures:
            print(f"\n{len(self.failures)} check(s) failed:")
            for f in self.failures:
                print("  " + f)
            sys.exit(1)
        if self.skipped:
            print(f"\nall checks passed; {len(self.skipped)} part(s) skipped (exit 77):")
            for r in self.skipped:
                print("  " + r)
            sys.exit(77)
        print("\nall checks passed")
        sys.exit(0)


def binary():
    path = os.environ.get("VHDRECLAIMD")
    if not path:
        build = os.environ.get("BUILD_ROOT", "build")
        path = os.path.join(build, "daemon", "vhdreclaimd")
    if not os.access(path, os.X_OK):
        skip_or_fail(f"vhdreclaimd not found at {path} (set VHDRECLAIMD)")
    return path


def require_tools(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        skip_or_fail("missing tools: " + " ".join(missing) + " (tools/install-deps.sh installs them)")


class OnceRun:
    def __init__(self, p):
        self.rc = p.returncode
        self.stdout = p.stdout
        self.stderr = p.stderr
        self.reports = []
        self.parse_error = None
        for line in p.stdout.splitlines():
            try:
                self.reports.append(json.loads(line))
            except ValueError as e:
                self.parse_error = f"not JSON: {line!r}: {e}"

    @property
    def report(self):
        return self.reports[0] if self.reports else {}

    def __str__(self):
        return f"exit {self.rc}, stdout {self.stdout.strip()!r}, stderr {self.stderr.strip()!r}"


def run_once(images, *options, timeout=300):
    """`vhdreclaimd --once --json OPTIONS IMAGES`."""
    if isinstance(images, str):
        images = [images]
    argv = [binary(), "--once", "--json", *options, *images]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return OnceRun(p)


def run(argv, check=False, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=check, **kw)


def json_fields_problems(rep):
    """What is wrong with one report against DESIGN.md's field list."""
    problems = []
    for name, typ in JSON_FIELDS.items():
        if name == "format" and rep.get(name, "") is None and rep.get("result") in UNPARSED_RESULTS:
            continue    # the file was never parsed: its format is unknown
        if name not in rep:
            problems.append(f"{name} missing")
        elif not isinstance(rep[name], typ) or (typ is int and isinstance(rep[name], bool)):
            problems.append(f"{name} is {type(rep[name]).__name__}, not {typ.__name__}")
        elif typ is int and rep[name] < 0:
            problems.append(f"{name} is negative")
    if rep.get("result") not in RESULTS:
        problems.append(f"result {rep.get('result')!r} is not one of DESIGN.md's")
    if rep.get("format") not in ("vhdx", "raw") and rep.get("result") not in UNPARSED_RESULTS:
        problems.append(f"format {rep.get('format')!r}")
    if all(isinstance(rep.get(k), int) for k in ("allocated_before", "allocated_after", "reclaimed")):
        if rep["reclaimed"] != max(0, rep["allocated_before"] - rep["allocated_after"]):
            problems.append("reclaimed is not allocated_before - allocated_after")
    return problems


# ---------------------------------------------------------------- files

def workdir(prefix):
    """A fresh directory for one test's files; next to the build, on the same
    file system kind the suite runs on (TMPDIR wins)."""
    return tempfile.mkdtemp(prefix=prefix)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def allocated(path):
    return os.stat(path).st_blocks * 512


def host_block_size(path):
    return os.statvfs(path).f_bsize


def clone_sparse(src, dst):
    """A copy with the same holes and the same data extents: zero data stays
    data (cp --sparse=auto would turn it into holes)."""
    size = os.path.getsize(src)
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fo, size)
        for off, length in vhdxtool.data_extents(fi):
            pos = off
            while pos < off + length:
                buf = os.pread(fi, min(8 * MiB, off + length - pos), pos)
                os.pwrite(fo, buf, pos)
                pos += len(buf)
        os.fsync(fo)
    finally:
        os.close(fi)
        os.close(fo)


def decompress_fixture(name, dest_dir):
    """Decompresses FIXTURES/name.bz2 into dest_dir; skips (fails in CI) when
    the fixtures are absent."""
    fixtures = os.environ.get("FIXTURES") or os.path.join(os.environ.get("SOURCE_ROOT", "."), "..", "shared", "fixtures", "vhdx")
    src = os.path.join(fixtures, name + ".bz2")
    if not os.path.exists(src):
        skip_or_fail(f"fixture {src} not found: the ../shared/fixtures images are not part of the "
                     "repository (a clone lacks them; CI has them and runs these tests)")
    dst = os.path.join(dest_dir, name)
    with open(dst, "wb") as out:
        subprocess.run(["bzip2", "-dc", src], stdout=out, check=True)
        os.fsync(out.fileno())  # settle delayed allocation before st_blocks is compared
    return dst


# ---------------------------------------------------------------- qemu

def qemu_img_check(path):
    """(clean, output) of `qemu-img check`."""
    p = run(["qemu-img", "check", "-f", "vhdx", path])
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def qemu_img_compare(a, b, fmt="vhdx"):
    """(identical, output) of `qemu-img compare`: the guest-visible content.
    Not strict (-s): punching changes what the host allocates, on purpose."""
    p = run(["qemu-img", "compare", "-f", fmt, "-F", fmt, a, b])
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def qemu_io(path, fmt, commands):
    """Runs qemu-io commands (e.g. "write -P 0x5a 0 1M") on an image."""
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    p = run(argv + [path])
    out = p.stdout + p.stderr
    if p.returncode != 0 or "error" in out.lower() or "failed" in out.lower():
        raise RuntimeError(f"qemu-io {commands} on {path}: {out.strip()}")
