#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Counts the results of one test run for tools/run-tests.sh, and refuses to
count a run that did not happen: prints "PASSED FAILED SKIPPED" on stdout
and, on stderr, why anything was counted failed or skipped.

  tally-tests.py meson TESTLOG.JSON LIST
      TESTLOG.JSON is meson's log of the run, LIST the output of
      `meson test --list` (every registered test). A missing or empty log
      is a failure; so is every registered test without a result. A test
      meson shows OK whose output has cmocka's "[  SKIPPED ]" counts as
      skipped: it did not run all of itself.

  tally-tests.py fuzz OUTDIR TARGET...
      OUTDIR is tools/run-fuzz.sh's FUZZ_OUT, TARGET the fuzz targets it was
      to run: one result per target, failed when it is missing, found
      anything, exited non-zero or ran no input at all.

Standard library only."""

import json
import re
import sys

OK = ("OK", "EXPECTEDFAIL")
CMOCKA_SKIPPED = re.compile(r"^\[  SKIPPED \]", re.M)
# "vhdreclaim:unit / vhdx": meson's name of a test, in the log and the list.
TEST_NAME = re.compile(r"^\S+:\S+ / \S+$")


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def tally_meson(testlog, listing):
    p = f = s = 0
    results = {}
    try:
        with open(testlog) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    results[r["name"]] = (r["result"], r.get("stdout") or "")
                except (ValueError, KeyError) as e:
                    note(f"{testlog}:{n}: unreadable result ({e}): counted failed")
                    f += 1
    except FileNotFoundError:
        note(f"{testlog} is missing: no test ran")
        return 0, 1, 0
    if not results and f == 0:
        note(f"{testlog} is empty: no test ran")
        return 0, 1, 0

    for name, (result, out) in results.items():
        if result in OK:
            if CMOCKA_SKIPPED.search(out):
                note(f"{name}: exit 0, yet cmocka skipped tests in it: counted skipped")
                s += 1
            else:
                p += 1
        elif result == "SKIP":
            note(f"{name}: SKIP")
            s += 1
        else:
            note(f"{name}: {result}")
            f += 1

    try:
        with open(listing) as fh:
            registered = [l.strip() for l in fh if TEST_NAME.match(l.strip())]
    except FileNotFoundError:
        registered = []
    if not registered:
        note(f"{listing}: no registered tests listed: counted failed")
        f += 1
    for name in registered:
        if name not in results:
            note(f"{name}: registered but has no result: counted failed")
            f += 1
    return p, f, s


def tally_fuzz(outdir, targets):
    p = f = 0
    if not targets:
        note("no fuzz target to run")
        return 0, 1, 0
    for t in targets:
        try:
            with open(f"{outdir}/{t}.summary") as fh:
                _, execs, _cov, findings, status = fh.read().split()
        except (OSError, ValueError):
            note(f"fuzz-{t}: no summary in {outdir}: it did not run")
            f += 1
            continue
        if int(findings) > 0 or int(status) != 0:
            note(f"fuzz-{t}: {findings} finding(s), exit {status}")
            f += 1
        elif int(execs) == 0:
            note(f"fuzz-{t}: ran no input")
            f += 1
        else:
            p += 1
    return p, f, 0


def main(argv):
    if len(argv) == 4 and argv[1] == "meson":
        counts = tally_meson(argv[2], argv[3])
    elif len(argv) >= 3 and argv[1] == "fuzz":
        counts = tally_fuzz(argv[2], argv[3:])
    else:
        note(__doc__)
        return 2
    print(*counts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
