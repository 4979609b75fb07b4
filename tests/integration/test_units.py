#!/usr/bin/env python3
"""The installed systemd units, sysusers.d file and man pages.

Installs the build into a temporary DESTDIR and checks what an administrator
would get from `meson install`:

- `systemd-analyze verify` on the installed units, with the host system and
  the installed files layered (a read-only overlayfs of DESTDIR over /, in a
  private mount namespace) and used as --root, so that ExecStart= binaries
  and Documentation= man pages are looked up where they were installed. Any
  output on stderr fails: verify exits 0 on unknown keys.
- `systemd-analyze security --offline=yes` exposure of vhdreclaimd.service:
  below util-linux's fstrim.service (7.0) as the issue demands, and at or
  below what the units reach today (EXPOSURE_LIMIT).
- the sysusers.d file creates group vhdreclaim (systemd-sysusers --root).
- the man pages render with `man --warnings` without a warning.

Needs root (mount namespace, overlayfs); skips (77) without, fails in CI.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

UNITS = ["vhdreclaimd.service", "vhdreclaimd.socket", "vhdreclaim.timer", "vhdreclaim.service"]
MAN_PAGES = ["man8/vhdreclaimd.8", "man8/vhdreclaimctl.8", "man5/vhdreclaim.conf.5"]
FSTRIM_EXPOSURE = 7.0   # util-linux fstrim.service on Debian 12, the bar
EXPOSURE_LIMIT = 2.0    # the issue aims at 4.0; the units reach 1.7

failures = []


def check(ok, what):
    print(("ok     " if ok else "FAILED ") + what)
    if not ok:
        failures.append(what)
    return ok


def skip_or_fail(reason):
    print(reason)
    sys.exit(1 if os.environ.get("CI") == "true" else 77)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def build_options(build_root):
    out = run(["meson", "introspect", "--buildoptions", build_root], check=True)
    return {o["name"]: o["value"] for o in json.loads(out.stdout)}


def pkgconfig_var(name):
    return run(["pkg-config", "--variable=" + name, "systemd"], check=True).stdout.strip()


def verify_units(root, mandir):
    env = dict(os.environ, MANPATH=root + mandir, SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    out = run(["systemd-analyze", "verify", "--root=" + root, *UNITS], env=env, cwd="/")
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        print("    verify: " + line)
    check(out.returncode == 0 and out.stderr == "",
          "systemd-analyze verify: exit 0 and nothing on stderr")


def exposure(root, unit):
    out = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
               "--root=" + root, unit], env=dict(os.environ, LC_ALL="C.UTF-8"))
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        print(out.stdout + out.stderr)
        return None
    return float(m.group(1))


def check_security(root):
    daemon = exposure(root, "vhdreclaimd.service")
    oneshot = exposure(root, "vhdreclaim.service")
    print(f"    exposure: vhdreclaimd.service {daemon}, vhdreclaim.service {oneshot}, "
          f"fstrim.service {FSTRIM_EXPOSURE}")
    check(daemon is not None and daemon < FSTRIM_EXPOSURE,
          f"vhdreclaimd.service exposure below fstrim.service's {FSTRIM_EXPOSURE}")
    check(daemon is not None and daemon <= EXPOSURE_LIMIT,
          f"vhdreclaimd.service exposure <= {EXPOSURE_LIMIT}")
    check(oneshot is not None and oneshot <= EXPOSURE_LIMIT,
          f"vhdreclaim.service exposure <= {EXPOSURE_LIMIT}")


def check_sysusers(dest, sysusersdir, scratch):
    conf = dest + sysusersdir + "/vhdreclaim.conf"
    if not check(os.path.isfile(conf), f"{sysusersdir}/vhdreclaim.conf installed"):
        return
    sysroot = os.path.join(scratch, "sysusers-root")
    os.makedirs(os.path.join(sysroot, "etc"))
    out = run(["systemd-sysusers", "--root=" + sysroot, conf])
    with open(os.path.join(sysroot, "etc/group")) as f:
        groups = [line.split(":")[0] for line in f]
    for line in (out.stdout + out.stderr).splitlines():
        print("    sysusers: " + line)     # it says what it creates
    check(out.returncode == 0 and "vhdreclaim" in groups,
          "systemd-sysusers creates group vhdreclaim")


def check_man_pages(dest, mandir):
    for page in MAN_PAGES:
        path = dest + mandir + "/" + page
        if not check(os.path.isfile(path), f"man page {page} installed"):
            continue
        out = run(["man", "--warnings", "-l", path],
                  env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1"))
        for line in out.stderr.splitlines():
            print("    man: " + line)
        check(out.returncode == 0 and out.stderr == "" and len(out.stdout) > 1000,
              f"{page} renders without warnings")


def inside_mount_namespace(build_root):
    opts = build_options(build_root)
    mandir = os.path.join(opts["prefix"], opts["mandir"])
    unitdir = pkgconfig_var("systemdsystemunitdir")
    sysusersdir = pkgconfig_var("sysusersdir")

    scratch = tempfile.mkdtemp(prefix="vhdreclaim-units-")
    # A tmpfs, so that the overlay's lower layers (DESTDIR and /) do not
    # overlap, which overlayfs refuses; it vanishes with the namespace.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", scratch], check=True)
    try:
        dest = os.path.join(scratch, "dest")
        root = os.path.join(scratch, "root")
        os.makedirs(root)
        out = run(["meson", "install", "-C", build_root, "--destdir", dest,
                   "--no-rebuild", "--quiet"])
        if not check(out.returncode == 0, "meson install --destdir"):
            print(out.stdout + out.stderr)
            return
        for unit in UNITS:
            check(os.path.isfile(dest + unitdir + "/" + unit), f"{unitdir}/{unit} installed")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={dest}:/", root],
                       check=True)
        verify_units(root, mandir)
        check_security(root)
        check_sysusers(dest, sysusersdir, scratch)
        check_man_pages(dest, mandir)
    finally:
        subprocess.run(["umount", "-R", scratch])
        os.rmdir(scratch)


def main():
    build_root = os.environ["BUILD_ROOT"]
    if os.environ.get("VHDRECLAIM_UNITS_NS") != "1":
        if os.geteuid() != 0:
            skip_or_fail("test_units needs root (mount namespace and overlayfs)")
        for tool in ("unshare", "systemd-analyze", "systemd-sysusers", "man", "pkg-config"):
            if shutil.which(tool) is None:
                skip_or_fail(f"test_units needs {tool}")
        env = dict(os.environ, VHDRECLAIM_UNITS_NS="1")
        sys.exit(subprocess.run(["unshare", "--mount", "--propagation", "private",
                                 sys.executable, os.path.abspath(__file__)], env=env).returncode)
    inside_mount_namespace(build_root)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
