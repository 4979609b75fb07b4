#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Golden tests of `vhdreclaimd --check-config -c FILE`.

For every tests/config/NAME.conf:
  - NAME.out exists: exit status 0 and stdout is NAME.out (with
    @DEFAULT_STATE_DIR@ replaced by this build's default), and the printed
    form, checked again, prints exactly the same thing with no message;
  - otherwise: exit status 1 and nothing on stdout;
  - stderr is NAME.err, or empty when there is none.
The files are checked from tests/config with relative names, so messages
read "NAME.conf:LINE: ...".

Then the example configuration that gets installed (conf/vhdreclaim.conf as
configured in the build tree) must pass without a message, and with every
commented-out key turned on it must still pass and print the same values:
the defaults it documents are the defaults.
"""

import os
import re
import subprocess
import sys
import tempfile
import shutil

VHDRECLAIMD = os.environ["VHDRECLAIMD"]
SOURCE_ROOT = os.environ["SOURCE_ROOT"]
BUILD_ROOT = os.environ["BUILD_ROOT"]
GOLDEN_DIR = os.path.join(SOURCE_ROOT, "tests", "config")

failures = []


def fail(what):
    failures.append(what)
    print("FAIL:", what, file=sys.stderr)


def check_config(path, cwd=None):
    p = subprocess.run([VHDRECLAIMD, "--check-config", "-c", path], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def default_state_dir():
    with open(os.path.join(BUILD_ROOT, "build-config.h")) as f:
        m = re.search(r'^#define DEFAULT_STATE_DIR "(.*)"$', f.read(), re.M)
    if not m:
        raise SystemExit("DEFAULT_STATE_DIR not found in build-config.h")
    return m.group(1)


def read_optional(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def show_diff(name, expected, got):
    import difflib
    sys.stderr.writelines(difflib.unified_diff(
        expected.splitlines(True), got.splitlines(True),
        "expected " + name, "got " + name))


def check_reparse(name, printed, tmp):
    """The printed form is a configuration that prints itself, silently."""
    again = os.path.join(tmp, name + ".printed.conf")
    with open(again, "w") as f:
        f.write(printed)
    rc, out, err = check_config(again)
    if rc != 0 or err:
        fail(f"{name}: the printed form does not pass again (exit {rc}): {err.strip()}")
    elif out != printed:
        show_diff(name + " (printed again)", printed, out)
        fail(f"{name}: the printed form prints differently")


def check_golden(name, state_dir, tmp):
    expected_out = read_optional(os.path.join(GOLDEN_DIR, name + ".out"))
    expected_err = read_optional(os.path.join(GOLDEN_DIR, name + ".err")) or ""
    if expected_out is not None:
        expected_out = expected_out.replace("@DEFAULT_STATE_DIR@", state_dir)

    rc, out, err = check_config(name + ".conf", cwd=GOLDEN_DIR)

    want_rc = 0 if expected_out is not None else 1
    if rc != want_rc:
        fail(f"{name}: exit status {rc}, expected {want_rc}; stderr: {err.strip()}")
        return
    if err != expected_err:
        show_diff(name + ".err", expected_err, err)
        fail(f"{name}: stderr differs")
    if out != (expected_out or ""):
        show_diff(name + ".out", expected_out or "", out)
        fail(f"{name}: stdout differs")
    if expected_out is not None and out == expected_out:
        check_reparse(name, out, tmp)


def sections(printed):
    """{"[name]": text} of a printed configuration."""
    result = {}
    for block in printed.strip().split("\n\n"):
        header = block.split("\n", 1)[0]
        result[header] = block
    return result


def check_example(tmp):
    example = os.path.join(BUILD_ROOT, "conf", "vhdreclaim.conf")
    with open(example) as f:
        text = f.read()

    rc, printed, err = check_config(example)
    if rc != 0 or err:
        fail(f"example: exit {rc}, stderr: {err.strip()}")
        return
    check_reparse("example", printed, tmp)

    # Turn on every commented-out key and section header of the example.
    enabled = re.sub(r"^#(?=\[|[A-Za-z][A-Za-z0-9]*=)", "", text, flags=re.M)
    enabled_path = os.path.join(tmp, "example-enabled.conf")
    with open(enabled_path, "w") as f:
        f.write(enabled)
    rc, printed_enabled, err = check_config(enabled_path)
    if rc != 0 or err:
        fail(f"example with every key enabled: exit {rc}, stderr: {err.strip()}")
        return

    plain = sections(printed)
    full = sections(printed_enabled)
    for header, block in plain.items():
        if full.get(header) != block:
            show_diff("example " + header, block, full.get(header, ""))
            fail(f"example: the value documented in {header} is not the default")
    if not any(h.startswith("[disk.") for h in full) or not any(h.startswith("[watch.") for h in full):
        fail("example: the commented [disk.NAME] and [watch.NAME] examples are missing")

    # Every key the daemon prints for the global sections is documented.
    for header in plain:
        for line in plain[header].splitlines()[1:]:
            key = line.split("=", 1)[0]
            if not re.search(rf"^#{key}=", text, re.M):
                fail(f"example: {header} {key} is not documented with its default")


def check_missing_file(tmp):
    missing = os.path.join(tmp, "absent.conf")
    rc, out, err = check_config(missing)
    if rc != 1 or out or missing not in err:
        fail(f"missing file: exit {rc}, stdout {out!r}, stderr {err!r}")


def main():
    if not os.access(VHDRECLAIMD, os.X_OK):
        print(f"{VHDRECLAIMD} is not built", file=sys.stderr)
        return 1

    state_dir = default_state_dir()
    names = sorted(f[:-5] for f in os.listdir(GOLDEN_DIR) if f.endswith(".conf"))
    if not names:
        print("no golden configurations found", file=sys.stderr)
        return 1

    tmp = tempfile.mkdtemp(prefix="test-check-config.")
    try:
        for name in names:
            check_golden(name, state_dir, tmp)
        check_example(tmp)
        check_missing_file(tmp)
    finally:
        shutil.rmtree(tmp)

    print(f"{len(names)} golden configurations, the example and a missing file checked; "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
