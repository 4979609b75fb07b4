#!/usr/bin/env python3
"""The Debian package under a real systemd as PID 1 (systemd-nspawn, see
tests/nspawn/boot.py and inside.sh): tools/build-deb.sh builds two packages
of this tree (the second with a higher version); in the booted container
`apt install` of the first creates the group and the state directory,
enables and starts the socket and the timer and starts no daemon; the first
vhdreclaimctl call starts the daemon; the timer's oneshot with the shipped
configuration changes no image; the administrator adds a disk to the
conffile and reclaims it; the upgrade keeps the edited conffile, the state
and the history and restarts the running daemon once; apt remove stops every
unit and keeps the state; apt purge leaves nothing of ours in /etc or
/var/lib but the vhdreclaim group. Plain build only (tests/meson.build):
the package is built from the source, not from the sanitized tree."""

import os
import re
import subprocess
import sys
import tempfile

SOURCE_ROOT = os.environ["SOURCE_ROOT"]
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "nspawn"))
import boot  # noqa: E402


def build_deb(out, *args):
    r = subprocess.run(["bash", os.path.join(SOURCE_ROOT, "tools", "build-deb.sh"),
                        "--output", out, *args], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"tools/build-deb.sh {' '.join(args)} failed")
        sys.exit(1)
    return r.stdout.strip().splitlines()[-1]


def build_debs(out):
    """The package of the tree as it is, and a rebuild versioned above it."""
    with open(os.path.join(SOURCE_ROOT, "debian", "changelog")) as f:
        version = re.match(r"vhdreclaim \(([^)]+)\)", f.readline()).group(1)
    debs = [build_deb(out), build_deb(out, "--version", version + "+test1")]
    print("packages: " + " ".join(os.path.basename(d) for d in debs))
    return debs


with tempfile.TemporaryDirectory(prefix="vhdreclaim-debs-") as out:
    boot.run_as_test(boot.DEB_CHECKS, make_debs=lambda: build_debs(out))
