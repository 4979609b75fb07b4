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
- the binaries are installed and run; the example /etc/vhdreclaim.conf is
  installed, valid, and its commented-out keys are the real defaults (the
  file with every key uncommented means what an empty file means); a second
  `meson install` keeps an administrator's edited file.
- the man pages render with `man --warnings` without a warning, and say
  what the binaries do: every option, command and exit status of
  `vhdreclaimd --help` and `vhdreclaimctl --help` is in its page, and every
  key of every section that `vhdreclaimd --check-config` prints is in
  vhdreclaim.conf(5) with the default it really has (the value the page
  gives, fed back to --check-config, comes out as the default does).

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


def render(path):
    out = run(["man", "-l", path],
              env=dict(os.environ, MANWIDTH="250", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1"))
    return out.stdout


def man_section(text, title):
    """The text of one section (a heading at the start of a line) of a page."""
    m = re.search(r"^" + re.escape(title) + r"\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def help_text(binary):
    return run([binary, "--help"], check=True).stdout


def check_options_documented(page, binary, text):
    usage = help_text(binary)
    options = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", usage)))
    missing = [o for o in options if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", text)]
    check(not missing, f"{page} documents every option of --help ({len(options)}): missing {missing}")
    exits = man_section(text, "EXIT STATUS")
    codes = sorted(set(re.findall(r"^\s+(\d)\s", usage.split("xit status:")[1], re.M) +
                       re.findall(r"(?<![\w-])(\d) (?=[a-z])", usage.split("xit status:")[1])))
    missing = [c for c in codes if not re.search(r"^\s+" + c + r"\s", exits, re.M)]
    check(codes and not missing, f"{page} documents every exit status of --help {codes}: missing {missing}")
    return usage


def check_ctl_commands_documented(text, usage):
    block = usage.split("Commands:")[1].split("Options:")[0]
    commands = re.findall(r"^  ([a-z][a-z-]*)", block, re.M)
    section = man_section(text, "COMMANDS")
    missing = [c for c in commands if not re.search(r"^\s+" + re.escape(c) + r"\b", section, re.M)]
    check(len(commands) >= 9 and not missing,
          f"vhdreclaimctl.8 documents every command of --help ({len(commands)}): missing {missing}")


def check_config(daemon, scratch, body):
    """The sections and keys --check-config prints for a file, with values."""
    path = os.path.join(scratch, "check.conf")
    with open(path, "w") as f:
        f.write(body)
    out = run([daemon, "--check-config", "-c", path])
    values, section = {}, None
    for line in out.stdout.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.fullmatch(r"(\w+)=(.*)", line):
            values[(section, m.group(1))] = m.group(2)
    return values, out.stderr


def check_config_keys_documented(text, daemon, scratch):
    defaults, _ = check_config(daemon, scratch, "")
    check(len(defaults) >= 15, f"--check-config prints the defaults ({len(defaults)} keys)")
    for (section, key), default in sorted(defaults.items()):
        body = man_section(text, f"[{section}] SECTION")
        entry = re.search(r"^\s+" + key + r"=\S*\n(.*?)(?=^\s{1,8}\S|\Z)", body, re.M | re.S)
        if not check(entry is not None, f"vhdreclaim.conf.5 documents [{section}] {key}="):
            continue
        m = re.search(r"Default:\s+(\S+?)\.?(?=\s|$)", entry.group(1))
        if not check(m is not None, f"vhdreclaim.conf.5 gives the default of [{section}] {key}="):
            continue
        shown = m.group(1)
        values, errors = check_config(daemon, scratch, f"[{section}]\n{key}={shown}\n")
        check(values.get((section, key)) == default and not errors,
              f"[{section}] {key}: the page's default {shown!r} is the real one ({default!r})"
              + (f": {errors.strip()}" if errors else ""))


def check_message_ids_documented(text):
    """Every fixed journal MESSAGE_ID of the daemon's source is in its page."""
    ids = {}
    daemon_dir = os.path.join(os.environ["SOURCE_ROOT"], "daemon")
    for name in sorted(os.listdir(daemon_dir)):
        if name.endswith(".c"):
            with open(os.path.join(daemon_dir, name)) as f:
                ids.update(re.findall(r'#define (\w+_MESSAGE_ID) "([0-9a-f]{32})"', f.read()))
    missing = [n for n, v in ids.items() if "MESSAGE_ID=" + v not in text]
    check(len(ids) >= 2 and not missing,
          f"vhdreclaimd.8 gives every MESSAGE_ID of the source ({len(ids)}): missing {missing}")


def check_man_contents(dest, mandir, scratch):
    daemon, ctl = os.environ["VHDRECLAIMD"], os.environ["VHDRECLAIMCTL"]
    daemon_text = render(dest + mandir + "/man8/vhdreclaimd.8")
    check_options_documented("vhdreclaimd.8", daemon, daemon_text)
    check_message_ids_documented(daemon_text)
    ctl_text = render(dest + mandir + "/man8/vhdreclaimctl.8")
    usage = check_options_documented("vhdreclaimctl.8", ctl, ctl_text)
    check_ctl_commands_documented(ctl_text, usage)
    check_config_keys_documented(render(dest + mandir + "/man5/vhdreclaim.conf.5"), daemon, scratch)


def uncommented(example):
    """The example configuration with the commented-out keys of its real
    sections uncommented (the commented-out [disk.*] and [watch.*] examples
    stay comments)."""
    lines, real = [], False
    for line in example.splitlines():
        if line.startswith("["):
            real = True
        elif line.startswith("#["):
            real = False
        elif real and re.fullmatch(r"#\w+=.*", line):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_install(build_root, dest, opts, scratch):
    prefix = opts["prefix"]
    daemon = dest + os.path.join(prefix, opts["sbindir"], "vhdreclaimd")
    ctl = dest + os.path.join(prefix, opts["bindir"], "vhdreclaimctl")
    for binary in (daemon, ctl):
        out = run([binary, "--help"]) if os.access(binary, os.X_OK) else None
        check(out is not None and out.returncode == 0, f"{binary[len(dest):]} installed and runs")
    conf = dest + os.path.join(prefix, opts["sysconfdir"], "vhdreclaim.conf")
    if not check(os.path.isfile(conf), f"{conf[len(dest):]} installed"):
        return
    with open(conf) as f:
        example = f.read()
    defaults, _ = check_config(daemon, scratch, "")
    out = run([daemon, "--check-config", "-c", conf])
    check(out.returncode == 0 and out.stderr == "",
          f"the installed example configuration is valid, without warnings: {out.stderr.strip()}")
    values, errors = check_config(daemon, scratch, uncommented(example))
    keys = sum(1 for line in uncommented(example).splitlines() if re.fullmatch(r"\w+=.*", line))
    check(keys == len(defaults) and values == defaults and not errors,
          f"every key of the example ({keys}), uncommented, is its default "
          f"({sorted(set(values.items()) ^ set(defaults.items()))} {errors.strip()})")
    # An administrator's file survives the next install.
    with open(conf, "a") as f:
        f.write("[disk.kept]\npath=/srv/kept.vhdx\n")
    out = run(["meson", "install", "-C", build_root, "--destdir", dest, "--no-rebuild", "--quiet"])
    with open(conf) as f:
        check(out.returncode == 0 and f.read().endswith("path=/srv/kept.vhdx\n"),
              "a second meson install keeps the edited configuration")


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
        check_install(build_root, dest, opts, scratch)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={dest}:/", root],
                       check=True)
        verify_units(root, mandir)
        check_security(root)
        check_sysusers(dest, sysusersdir, scratch)
        check_man_pages(dest, mandir)
        check_man_contents(dest, mandir, scratch)
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
