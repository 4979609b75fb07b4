#!/usr/bin/env python3
"""Boots the build under a real systemd: the systemd-nspawn test harness.

Unpacks the cached minimal bookworm tree (mkroot.sh builds it once) into a
fresh temporary directory, installs the build into it (`meson install
--destdir`), enables the socket and the timer as an administrator would, adds
a harness unit that runs inside.sh once the system is up, and boots it with

    systemd-nspawn --boot --volatile=overlay --register=no --keep-unit -q --pipe

The harness unit ends the boot with `systemctl exit N`, N being the number of
failed checks, which becomes nspawn's exit status and the return value of
boot(). Usable as a module (tests/integration/test_nspawn.py) or by hand:

    tests/nspawn/boot.py --build-root build [--checks "boot timer_listed"] [--keep]

With --deb PACKAGE (repeatable, oldest version first) nothing is installed
into the tree beforehand: the checks (DEB_CHECKS) install, upgrade, remove
and purge the packages with apt inside the booted container.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Checks of inside.sh that need only the units and the installed files.
UNIT_CHECKS = [
    "boot",
    "sysusers_group",
    "socket_listening",
    "timer_listed",
    "service_idle_before_first_call",
]
# Checks that need the working daemon and vhdreclaimctl; in this order, as
# each builds on the state the previous one left.
DAEMON_CHECKS = [
    "first_call_starts_service",
    "reload",
    "broken_reload_keeps_service",
    "watchdog_restarts_frozen_daemon",
    "timer_service_reclaims",
    "journal_fields",
    "timer_service_trims_despite_refused_image",
    "clean_stop",
]
ALL_CHECKS = UNIT_CHECKS + DAEMON_CHECKS
# The package's life under systemd, in this order (each builds on the
# previous): needs two packages of the same tree, the second of a higher
# version (test_nspawn_deb.py builds them).
DEB_CHECKS = [
    "deb_install",
    "deb_units_started",
    "deb_status_activates",
    "deb_unconfigured_touches_nothing",
    "deb_configure_and_reclaim",
    "deb_upgrade",
    "deb_remove",
    "deb_purge",
]
# Where the package puts the binaries and the configuration.
DEB_DIRS = {"BINDIR": "/usr/bin", "SBINDIR": "/usr/sbin", "VHDRECLAIM_CONF": "/etc/vhdreclaim.conf"}

HARNESS_UNIT = """\
[Unit]
Description=vhdreclaim nspawn test harness
After=basic.target

[Service]
# Type=exec: the boot completes while the checks run, so that they can wait
# for it (systemctl is-system-running --wait).
Type=exec
ExecStart=/bin/sh -c 'timeout {timeout} /harness/inside.sh >/harness/log 2>&1; rc=$$?; \\
  journalctl -b --no-pager -o short-monotonic >/harness/journal.txt 2>&1; systemctl exit $$rc'

[Install]
WantedBy=multi-user.target
"""

# LeakSanitizer stops the world with ptrace(), which the services'
# SystemCallFilter= refuses (it is in @debug): the leak check at exit then
# fails with a fatal error instead of reporting. Sanitizer builds allow that
# one call, and only they; the plain build runs the units' filter as
# shipped.
SANITIZER_DROPIN = """\
[Service]
SystemCallFilter=ptrace
Environment=ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
"""


# The file system that the timer's oneshot trims inside the container:
# an ext4 on a loop device of the host (a container cannot set up loop
# devices), bound to TRIM_MOUNT. Its backing file lies in the results
# directory, so the checks see the holes the discards punch into it.
TRIM_MOUNT = "/srv/trim"
TRIM_FS_SIZE = 128 * 1024 * 1024


def missing_prerequisites():
    """What this machine lacks to run the harness, in words; [] when nothing."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("systemd-nspawn", "debootstrap", "zstd", "tar", "systemctl", "meson",
                 "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not os.path.exists("/dev/loop-control"):
        missing.append("loop devices (/dev/loop-control)")
    return missing


def make_trim_fs(work, results):
    """Mounts a fresh ext4 on a loop device at work/trimfs; returns the mount
    point. Discards on it become holes in results/trimfs.img."""
    backing = os.path.join(results, "trimfs.img")
    mnt = os.path.join(work, "trimfs")
    os.makedirs(mnt)
    with open(backing, "wb") as f:
        f.truncate(TRIM_FS_SIZE)
    # nodiscard: mkfs must not trim, so that the checks see the daemon's.
    subprocess.run(["mkfs.ext4", "-q", "-E", "nodiscard", backing], check=True)
    subprocess.run(["mount", "-o", "loop", backing, mnt], check=True)
    return mnt


def cached_tree(extra_packages=()):
    """The tarball of the minimal tree, built on first use."""
    out = subprocess.run([os.path.join(HERE, "mkroot.sh"), *extra_packages],
                         stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def install_dirs(build_root):
    """Installed paths of the binaries and the configuration file."""
    out = subprocess.run(["meson", "introspect", "--buildoptions", build_root],
                         stdout=subprocess.PIPE, text=True, check=True)
    opts = {o["name"]: o["value"] for o in json.loads(out.stdout)}
    prefix = opts["prefix"]
    return {
        "BINDIR": os.path.join(prefix, opts["bindir"]),
        "SBINDIR": os.path.join(prefix, opts["sbindir"]),
        "VHDRECLAIM_CONF": os.path.join(prefix, opts["sysconfdir"], "vhdreclaim.conf"),
    }


def unpack(tarball, root):
    os.makedirs(root)
    zstd = subprocess.Popen(["zstd", "-dc", tarball], stdout=subprocess.PIPE)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-xf", "-", "-C", root],
                   stdin=zstd.stdout, check=True)
    zstd.stdout.close()
    if zstd.wait() != 0:
        raise RuntimeError(f"cannot decompress {tarball}")


def installed_binaries(root, dirs):
    paths = []
    for d in (dirs["BINDIR"], dirs["SBINDIR"]):
        for name in ("vhdreclaimd", "vhdreclaimctl"):
            if os.path.exists(root + os.path.join(d, name)):
                paths.append(os.path.join(d, name))
    return paths


def check_libraries(root, binaries):
    """Fails when an installed binary needs a library the tree lacks (add
    its package to mkroot.sh); True when the build is sanitized."""
    sanitized = False
    for path in binaries:
        out = subprocess.run(["chroot", root, "ldd", path], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        missing = [line.strip() for line in out.stdout.splitlines() if "not found" in line]
        if out.returncode != 0 or missing:
            raise RuntimeError(f"{path} cannot run in the test tree: {missing or out.stdout}")
        sanitized = sanitized or "libasan" in out.stdout
    return sanitized


def message_ids():
    """The daemon's fixed journal MESSAGE_IDs, by name, from its source
    (whichever file of daemon/ defines them)."""
    daemon = os.path.join(HERE, "..", "..", "daemon")
    ids = {}
    for name in sorted(os.listdir(daemon)):
        if name.endswith((".c", ".h")):
            with open(os.path.join(daemon, name)) as f:
                ids.update(re.findall(r'#define (PASS_END|TRIM_END)_MESSAGE_ID "([0-9a-f]{32})"', f.read()))
    if sorted(ids) != ["PASS_END", "TRIM_END"]:
        raise RuntimeError(f"daemon/: cannot find both MESSAGE_IDs, found {ids}")
    return ids


def write_env(results, dirs, checks):
    shutil.copy(os.path.join(HERE, "inside.sh"), os.path.join(results, "inside.sh"))
    with open(os.path.join(results, "env"), "w") as f:
        for key, value in dirs.items():
            f.write(f"{key}='{value}'\n")
        f.write(f"CHECKS='{' '.join(checks)}'\n")
        f.write(f"TRIM_MOUNT='{TRIM_MOUNT}'\n")
        for name, value in message_ids().items():
            f.write(f"{name}_ID='{value}'\n")


def install_harness(root, timeout):
    with open(os.path.join(root, "etc/systemd/system/vhdreclaim-harness.service"), "w") as f:
        f.write(HARNESS_UNIT.format(timeout=timeout))
    subprocess.run(["systemctl", "--root", root, "--quiet", "enable", "vhdreclaim-harness.service"],
                   check=True)


def prepare_debs(root, results, debs, checks, timeout):
    """The package route: nothing of ours in the tree; the checks install the
    packages (copied to /harness/debs, oldest version first) with apt inside
    the booted container, so that their maintainer scripts run under the
    real systemd."""
    os.makedirs(os.path.join(results, "debs"))
    with open(os.path.join(results, "debs", "order"), "w") as f:
        for deb in debs:
            shutil.copy(deb, os.path.join(results, "debs"))
            f.write(os.path.basename(deb) + "\n")
    install_harness(root, timeout)
    write_env(results, DEB_DIRS, checks)


def prepare(root, results, build_root, checks, timeout):
    subprocess.run(["meson", "install", "-C", build_root, "--destdir", root,
                    "--no-rebuild", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    dirs = install_dirs(build_root)
    if check_libraries(root, installed_binaries(root, dirs)):
        for unit in ("vhdreclaimd.service", "vhdreclaim.service"):
            dropin = os.path.join(root, "etc/systemd/system", unit + ".d")
            os.makedirs(dropin, exist_ok=True)
            with open(os.path.join(dropin, "50-sanitizer.conf"), "w") as f:
                f.write(SANITIZER_DROPIN)
    install_harness(root, timeout)
    # What an administrator does: enable the socket and the timer (not the
    # service: the first client call must start it).
    subprocess.run(["systemctl", "--root", root, "--quiet", "enable",
                    "vhdreclaimd.socket", "vhdreclaim.timer"], check=True)
    write_env(results, dirs, checks)


def run_container(root, results, trim_fs, timeout):
    """nspawn's exit status: what the harness unit passed to systemctl exit."""
    cmd = ["systemd-nspawn", "--boot", "--volatile=overlay", "--register=no", "--keep-unit",
           "-q", "--pipe", "-D", root, f"--bind={results}:/harness"]
    if trim_fs:
        cmd.append(f"--bind={trim_fs}:{TRIM_MOUNT}")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        proc.terminate()        # nspawn powers the container off
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        print(f"boot.py: the container did not exit within {timeout + 60} s", file=sys.stderr)
        print(output, file=sys.stderr)
        return 1
    # nspawn's own words, minus a harmless complaint about its propagation
    # directory that it prints on every exit from this kind of host.
    for line in output.splitlines():
        if "nspawn/propagate" not in line:
            print("nspawn: " + line, file=sys.stderr)
    return proc.returncode


def show_results(results, rc):
    log = os.path.join(results, "log")
    if os.path.exists(log):
        with open(log) as f:
            sys.stdout.write(f.read())
    else:
        print("boot.py: the harness unit never ran", file=sys.stderr)
    journal = os.path.join(results, "journal.txt")
    if rc != 0 and os.path.exists(journal):
        with open(journal) as f:
            lines = f.readlines()
        print(f"--- last 150 of {len(lines)} journal lines ---")
        sys.stdout.writelines(lines[-150:])


def boot(build_root, checks=ALL_CHECKS, timeout=300, keep=False, debs=None):
    """Boots the build (or, given debs, a tree where the checks install those
    packages) and runs the named checks inside; 0 when all passed."""
    tarball = cached_tree()
    work = tempfile.mkdtemp(prefix="vhdreclaim-nspawn-")
    root = os.path.join(work, "root")
    results = os.path.join(work, "harness")
    os.makedirs(results)
    rc = 1
    trim_fs = None
    try:
        t0 = time.monotonic()
        unpack(tarball, root)
        t1 = time.monotonic()
        if debs:
            prepare_debs(root, results, debs, checks, timeout)
        else:
            prepare(root, results, build_root, checks, timeout)
            trim_fs = make_trim_fs(work, results)
        t2 = time.monotonic()
        rc = run_container(root, results, trim_fs, timeout)
        t3 = time.monotonic()
        show_results(results, rc)
        print(f"boot.py: unpack {t1 - t0:.1f} s, install {t2 - t1:.1f} s, "
              f"boot and checks {t3 - t2:.1f} s; exit status {rc}")
    finally:
        if trim_fs:
            subprocess.run(["umount", trim_fs])
        if keep:
            print(f"boot.py: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


def run_as_test(checks, make_debs=None):
    """Entry point of the integration tests: exit status 0 when every check
    passed, 77 (skip) when this machine cannot boot a container, unless
    CI=true, where that is a failure too. make_debs, if given, returns the
    packages that the checks install (the build tree is then not used)."""
    def cannot(reason):
        print(f"cannot boot a test container: {reason}")
        sys.exit(1 if os.environ.get("CI") == "true" else 77)

    missing = missing_prerequisites()
    if missing:
        cannot("missing " + ", ".join(missing))
    try:
        cached_tree()
    except subprocess.CalledProcessError:
        cannot("mkroot.sh could not build the bookworm tree (no network to the mirror?)")
    debs = make_debs() if make_debs else None
    sys.exit(0 if boot(os.environ["BUILD_ROOT"], checks, debs=debs) == 0 else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-root", required=True, help="meson build directory")
    ap.add_argument("--checks", help="space-separated checks of inside.sh (default: all)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds for the checks")
    ap.add_argument("--keep", action="store_true", help="keep the tree and the results")
    ap.add_argument("--deb", action="append",
                    help="install this package inside instead of the build (repeat: oldest first); "
                         "the checks default to the package checks")
    args = ap.parse_args()
    missing = missing_prerequisites()
    if missing:
        sys.exit("boot.py: missing " + ", ".join(missing))
    checks = args.checks.split() if args.checks else (DEB_CHECKS if args.deb else ALL_CHECKS)
    debs = [os.path.abspath(d) for d in args.deb] if args.deb else None
    sys.exit(boot(os.path.abspath(args.build_root), checks, args.timeout, args.keep, debs))


if __name__ == "__main__":
    main()
