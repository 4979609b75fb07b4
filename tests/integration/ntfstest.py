# SPDX-License-Identifier: GPL-2.0-or-later
"""NTFS volumes for the tests, made and read by the real tools: mkntfs, a
read-write ntfs-3g (FUSE) mount to fill them, ntfsfix -n and a read-only
ntfs-3g mount to check them."""

import hashlib
import os
import shutil
import subprocess
import tempfile

MiB = 1 << 20


def run(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def mkntfs(path, size_mib):
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    run("mkntfs", "-q", "-F", "-f", "-L", "vhdreclaim-test", path)


class Mount:
    """A FUSE ntfs-3g mount of a raw file or device (read-write unless ro)."""

    def __init__(self, raw, where, ro=False):
        self.raw, self.where, self.ro = raw, where, ro

    def __enter__(self):
        os.makedirs(self.where, exist_ok=True)
        run("ntfs-3g", *(["-o", "ro"] if self.ro else []), self.raw, self.where)
        return self.where

    def __exit__(self, *exc):
        run("umount", self.where)


def fuse_problem():
    """Why ntfs-3g FUSE mounts cannot be used here, or None: tries one."""
    missing = [t for t in ("mkntfs", "ntfs-3g", "ntfsfix", "umount") if not shutil.which(t)]
    if missing:
        return "missing tools: " + " ".join(missing)
    if os.geteuid() != 0:
        return "ntfs-3g mounts need root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    d = tempfile.mkdtemp(prefix="ntfs-probe-")
    try:
        mkntfs(os.path.join(d, "p.raw"), 8)
        with Mount(os.path.join(d, "p.raw"), os.path.join(d, "m")) as m:
            open(os.path.join(m, "x"), "w").close()
    except (subprocess.CalledProcessError, OSError) as e:
        return "an ntfs-3g FUSE mount does not work here: %s" % (getattr(e, "stderr", None) or e)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return None


def file_hashes(mnt):
    """{relative path: sha256} of every file but System Volume Information's."""
    seen = {}
    for root, dirs, names in os.walk(mnt):
        dirs[:] = [d for d in dirs if d != "System Volume Information"]
        for n in names:
            full = os.path.join(root, n)
            with open(full, "rb") as f:
                seen[os.path.relpath(full, mnt)] = hashlib.sha256(f.read()).hexdigest()
    return seen


def check_volume(raw, files):
    """Problems found by ntfsfix -n and a read-only mount compared with
    {relative path: sha256}; empty when all is well."""
    problems = []
    p = run("ntfsfix", "-n", raw, check=False)
    if p.returncode != 0 or "processed successfully" not in p.stdout:
        problems.append("ntfsfix -n: " + p.stdout + p.stderr)
    with Mount(raw, raw + ".ro", ro=True) as mnt:
        seen = file_hashes(mnt)
    os.rmdir(raw + ".ro")
    differ = sorted(k for k in set(seen) | set(files) if seen.get(k) != files.get(k))
    if differ:
        problems.append("files differ or are missing: %s" % differ[:5])
    return problems
