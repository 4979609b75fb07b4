#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test run must not be green when tests did not run (issue 9). Checks
the harness itself, each with a deliberately failing, skipping or missing
test:

1. daemonlib.main: a failure followed by a skip in the same file exits 1
   (skip()'s SystemExit(77) used to escape main and report SKIP); a skip
   alone exits 77, or 1 under CI=true.
2. oncetest: a failed check followed by skip_or_fail() exits 1; a part
   skipped with Checker.skip() makes the run exit 77 (1 under CI=true), a
   failure wins.
3. cmocka: a unit test whose fixtures are missing exits 77 (cmocka's skip()
   alone exits 0, which meson shows as OK), or fails under CI=true, and its
   output says the fixtures are not part of the repository.
4. tools/tally-tests.py (tools/run-tests.sh's count): a missing or empty
   testlog.json, a registered test without a result, and a fuzz target that
   did not run or ran nothing are failures; a meson OK whose cmocka output
   lists skipped tests is a skip.
5. Every tests/unit/test-*.c and tests/integration/test_*.py is registered
   in tests/meson.build.

Standard library only; runs in seconds."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import oncetest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get("SOURCE_ROOT", os.path.join(HERE, "..", ".."))
BUILD_ROOT = os.environ.get("BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
TALLY = os.path.join(SOURCE_ROOT, "tools", "tally-tests.py")

t = oncetest.Checker()


def run_script(work, body, ci=False):
    """Runs a Python script beside the harness modules; returns (exit, output)."""
    path = os.path.join(work, "script.py")
    with open(path, "w") as f:
        f.write(f"import sys\nsys.path.insert(0, {HERE!r})\n" + textwrap.dedent(body))
    env = dict(os.environ)
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    p = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout + p.stderr


def check_daemonlib(work):
    fail_then_skip = """
        from daemonlib import main, skip
        def test_fails(tmp):
            assert False, "deliberate failure"
        def test_skips(tmp):
            skip("deliberately missing prerequisite")
        main([test_fails, test_skips])
    """
    rc, out = run_script(work, fail_then_skip)
    t.equal(rc, 1, "daemonlib: a failure, then a skip in the same file: exit")
    t.check("FAIL test_fails" in out and "SKIP test_skips" in out,
            "daemonlib: both the failure and the skip are reported")
    rc, out = run_script(work, fail_then_skip.replace("[test_fails, test_skips]", "[test_skips, test_fails]"))
    t.equal(rc, 1, "daemonlib: a skip, then a failure: exit")

    skip_only = """
        from daemonlib import main, skip
        def test_ok(tmp):
            pass
        def test_skips(tmp):
            skip("deliberately missing prerequisite")
        main([test_ok, test_skips])
    """
    rc, _ = run_script(work, skip_only)
    t.equal(rc, 77, "daemonlib: a pass and a skip: exit")
    rc, out = run_script(work, skip_only, ci=True)
    t.equal(rc, 1, "daemonlib: the same under CI=true: exit")
    t.check("deliberately missing prerequisite" in out, "daemonlib: the reason is printed")
    rc, _ = run_script(work, skip_only.replace("[test_ok, test_skips]", "[test_ok]"))
    t.equal(rc, 0, "daemonlib: passes only: exit")


def check_oncetest(work):
    rc, out = run_script(work, """
        import oncetest
        c = oncetest.Checker()
        c.check(False, "deliberate failure")
        oncetest.skip_or_fail("deliberately missing prerequisite")
    """)
    t.equal(rc, 1, "oncetest: a failed check, then skip_or_fail: exit")
    rc, _ = run_script(work, """
        import oncetest
        c = oncetest.Checker()
        c.check(True, "a passing check")
        oncetest.skip_or_fail("deliberately missing prerequisite")
    """)
    t.equal(rc, 77, "oncetest: passing checks, then skip_or_fail: exit")
    body = """
        import oncetest
        c = oncetest.Checker()
        c.skip("deliberately missing part")
        c.check(True, "a passing check")
        c.exit()
    """
    rc, _ = run_script(work, body)
    t.equal(rc, 77, "oncetest: a skipped part, then passing checks: exit")
    rc, _ = run_script(work, body, ci=True)
    t.equal(rc, 1, "oncetest: the same under CI=true: exit")
    rc, _ = run_script(work, body.replace("c.check(True", "c.check(False"))
    t.equal(rc, 1, "oncetest: a skipped part, then a failed check: exit")


def check_cmocka():
    exe = os.path.join(BUILD_ROOT, "tests", "test-vhdx")
    if not os.access(exe, os.X_OK):
        t.check(False, f"cmocka: {exe} is built")
        return
    for ci, expected in ((False, "77"), (True, "a failure")):
        env = dict(os.environ, FIXTURES="/nonexistent/fixtures")
        env.pop("CI", None)
        if ci:
            env["CI"] = "true"
        p = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=120)
        out = p.stdout + p.stderr
        ok = p.returncode == 77 if not ci else p.returncode not in (0, 77)
        t.check(ok, f"cmocka: test-vhdx without its fixtures{' under CI=true' if ci else ''}: "
                    f"exit {p.returncode}, expected {expected}")
        t.check("not part of the repository" in out,
                "cmocka: the output says the fixtures are not part of the repository")


def tally(*args):
    p = subprocess.run([sys.executable, TALLY, *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return None, p.stderr
    return tuple(int(x) for x in p.stdout.split()), p.stderr


def check_tally(work):
    log = os.path.join(work, "testlog.json")
    listing = os.path.join(work, "registered.txt")
    with open(listing, "w") as f:
        f.write("ninja: no work to do.\nvhdreclaim:unit / a\nvhdreclaim:unit / b\nvhdreclaim:integration / c\n")

    def write_log(*results):
        with open(log, "w") as f:
            for name, result, out in results:
                f.write(json.dumps({"name": name, "result": result, "stdout": out}) + "\n")

    counts, err = tally("meson", os.path.join(work, "missing.json"), listing)
    t.check(counts is not None and counts[1] >= 1, f"tally: a missing testlog.json fails: {counts} {err.strip()!r}")
    write_log()
    counts, err = tally("meson", log, listing)
    t.check(counts is not None and counts[1] >= 1, f"tally: an empty testlog.json fails: {counts} {err.strip()!r}")

    write_log(("vhdreclaim:unit / a", "OK", ""), ("vhdreclaim:unit / b", "OK", ""))
    counts, err = tally("meson", log, listing)
    t.equal(counts, (2, 1, 0), "tally: a registered test without a result: passed, failed, skipped")
    t.check("integration / c" in err, "tally: names the test that did not run")

    write_log(("vhdreclaim:unit / a", "OK", "[  SKIPPED ] test_x\n"), ("vhdreclaim:unit / b", "SKIP", ""),
              ("vhdreclaim:integration / c", "OK", ""))
    counts, _ = tally("meson", log, listing)
    t.equal(counts, (1, 0, 2), "tally: cmocka skips inside an OK, and a SKIP: passed, failed, skipped")

    write_log(("vhdreclaim:unit / a", "OK", ""), ("vhdreclaim:unit / b", "FAIL", ""),
              ("vhdreclaim:integration / c", "TIMEOUT", ""))
    counts, _ = tally("meson", log, listing)
    t.equal(counts, (1, 2, 0), "tally: FAIL and TIMEOUT: passed, failed, skipped")

    fuzz = os.path.join(work, "fuzz")
    os.mkdir(fuzz)
    for name, line in (("vhdx", "vhdx 12345 900 0 0"), ("config", "config 0 0 0 0"),
                       ("state", "state 500 80 1 1")):
        with open(os.path.join(fuzz, name + ".summary"), "w") as f:
            f.write(line + "\n")
    counts, err = tally("fuzz", fuzz, "vhdx", "config", "state", "partition")
    t.equal(counts, (1, 3, 0), "tally: fuzz targets that ran nothing, found something, or did not run")
    t.check("fuzz-partition" in err and "fuzz-config" in err, "tally: names each failed fuzz target")
    counts, _ = tally("fuzz", fuzz)
    t.check(counts is not None and counts[1] >= 1, f"tally: no fuzz target at all fails: {counts}")


def check_registered():
    """Every test file is registered in tests/meson.build: one that is not
    never runs, and nothing counts it missing."""
    with open(os.path.join(SOURCE_ROOT, "tests", "meson.build")) as f:
        build = f.read()
    for d, prefix, suffix in (("integration", "test_", ".py"), ("unit", "test-", ".c")):
        for name in sorted(os.listdir(os.path.join(SOURCE_ROOT, "tests", d))):
            if name.startswith(prefix) and name.endswith(suffix):
                stem = name[len(prefix):-len(suffix)] if d == "unit" else name[:-len(suffix)]
                t.check(f"'{stem}'" in build, f"tests/{d}/{name} is registered in tests/meson.build")


def main():
    check_registered()
    with tempfile.TemporaryDirectory(prefix="test-harness-") as work:
        check_daemonlib(work)
        check_oncetest(work)
        check_cmocka()
        check_tally(work)
    t.exit()


if __name__ == "__main__":
    main()
