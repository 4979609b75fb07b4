#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Compaction in the daemon, against real peers (qemu-img, qemu-io, busctl):

- a disk with compact=true is compacted by its periodic pass, even when its
  holes were punched before so that the punching alone stays below
  minReclaim; a compact=false disk beside it keeps its size;
- `vhdreclaimctl compact NAME --wait` compacts a compact=false disk and
  prints the file size before and after (and --json carries them);
- on a sparse=false disk it is refused with a clear error, image untouched;
- busctl calls Compact(s) and gets the job id; the pass compacts;
- `vhdreclaimd --inspect` predicts the size, and the pass reaches exactly it.

After every pass: qemu-img check clean and qemu-img compare identical to a
copy made before.
"""

import hashlib
import json
import os
import re
import subprocess

from daemonlib import Daemon, MiB, VHDRECLAIMD, config, main, require_tools, run, wait_for

CTL = os.environ.get("VHDRECLAIMCTL", "")
INTERVAL = 2


def compactable_image(tmp, name):
    """A 64 MiB VHDX with 1 MiB blocks, written by qemu-io: live blocks
    scattered, and four blocks of zero data between them whose space a
    --once pass has already punched (they stay FULLY_PRESENT in the BAT, so
    only compaction drops them and moves the later blocks down). Returns the
    image and a copy of it made now."""
    img = os.path.join(tmp, f"{name}.vhdx")
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M,subformat=dynamic", img, "64M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x55 0 1M", "-c", "write -P 0 2M 4M", "-c", "write -P 0x66 8M 1M",
        "-c", "write -P 0x77 30M 2M", "-c", "write -P 0x88 50M 1M", img)
    p = run(VHDRECLAIMD, "--once", "--discard=safe", "--json", img)
    rep = json.loads(p.stdout)
    assert rep["result"] == "success" and rep["zero_bytes"] >= 4 * MiB, rep
    copy = os.path.join(tmp, f"{name}.orig.vhdx")
    run("cp", "--sparse=always", img, copy)
    return img, copy


def inspect_prediction(img):
    out = run(VHDRECLAIMD, "--inspect", img).stdout
    m = re.search(r"^compaction +would take the file from (\d+) to (\d+) bytes \((\d+) blocks moved", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def assert_valid_and_same(img, copy):
    run("qemu-img", "check", "-q", img)
    run("qemu-img", "compare", "-q", copy, img)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ctl(d, *args):
    return subprocess.run([CTL, "--socket", d.sock] + list(args), capture_output=True, text=True, timeout=120)


def test_periodic_pass_compacts(tmp):
    a, a_copy = compactable_image(tmp, "a")
    b, b_copy = compactable_image(tmp, "b")
    before, predicted, moved = inspect_prediction(a)
    assert before == os.path.getsize(a) and predicted < before and moved > 0, (before, predicted, moved)
    b_size = os.path.getsize(b)
    # minReclaim=1M: the holes are punched already, so the tiers find less;
    # the file shrinking by 4 MiB is what makes the pass worth it.
    d = Daemon(tmp, config(tmp, [("a", a, "compact=true"), ("b", b)],
                           reclaim={"interval": f"{INTERVAL}s", "idleDelay": "1s", "minReclaim": "1M"})).start()
    d.wait_passes("a", 1, timeout=30)
    d.wait_passes("b", 1, timeout=30)
    x = d.history("a")[0]
    assert x["result"] == "success", x
    hb = d.history("b")
    d.stop()
    assert os.path.getsize(a) == predicted, (os.path.getsize(a), predicted)
    assert_valid_and_same(a, a_copy)
    # compact=false (the default): a pass below minReclaim, the file as it was.
    assert hb[0]["result"] == "skipped-threshold", hb
    assert os.path.getsize(b) == b_size
    assert_valid_and_same(b, b_copy)


def test_ctl_compact_wait(tmp):
    c, c_copy = compactable_image(tmp, "c")
    j, j_copy = compactable_image(tmp, "j")
    before, predicted, _ = inspect_prediction(c)
    d = Daemon(tmp, config(tmp, [("c", c), ("j", j)])).start()
    d.wait_probed("c", "j")
    p = ctl(d, "compact", "c", "--wait")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert re.search(rf"^job \d+ c: success, .*\(file compacted from {before} to {predicted} bytes, \d+ blocks "
                     rf"moved\); file size \S+ -> \S+$", p.stdout, re.M), p.stdout
    # The status and the history keep what it did.
    assert f"file compacted from {before} to {predicted} bytes" in d.disk("c")["last_message"], d.disk("c")
    assert f"file compacted from {before} to {predicted} bytes" in d.history("c")[-1]["message"], d.history("c")
    assert os.path.getsize(c) == predicted
    assert_valid_and_same(c, c_copy)

    j_before, j_predicted, _ = inspect_prediction(j)
    p = ctl(d, "compact", "j", "--wait", "--json")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    res = json.loads(p.stdout)
    assert len(res) == 1 and res[0]["target"] == "j" and res[0]["result"] == "success", res
    assert res[0]["file_size_before"] == j_before and res[0]["file_size_after"] == j_predicted, res
    assert res[0]["compacted"] == j_before - j_predicted, res
    assert os.path.getsize(j) == j_predicted
    assert_valid_and_same(j, j_copy)

    # Nothing left to compact: a second one changes nothing.
    digest = sha256(c)
    p = ctl(d, "compact", "c", "--wait")
    assert p.returncode == 0 and f"file compacted from {predicted} to {predicted} bytes, 0 blocks moved" in p.stdout, \
        (p.stdout, p.stderr)
    assert sha256(c) == digest

    p = ctl(d, "compact", "nosuch")
    assert p.returncode == 1 and "nosuch" in p.stderr, (p.returncode, p.stderr)


def test_refused_on_sparse_false(tmp):
    r, _ = compactable_image(tmp, "r")
    digest, mtime = sha256(r), os.stat(r).st_mtime_ns
    d = Daemon(tmp, config(tmp, [("r", r, "sparse=false", "compact=true")])).start()
    d.wait_probed("r")
    p = ctl(d, "compact", "r", "--wait")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "watch-only" in p.stderr and "not compacted" in p.stderr, p.stderr
    p = d.call("Compact", "s", "r", check=False)
    assert p.returncode != 0 and "watch-only" in p.stderr, p.stderr
    d.stop()
    assert sha256(r) == digest and os.stat(r).st_mtime_ns == mtime


def test_busctl_compact(tmp):
    e, e_copy = compactable_image(tmp, "e")
    _, predicted, _ = inspect_prediction(e)
    d = Daemon(tmp, config(tmp, [("e", e)])).start()
    d.wait_probed("e")
    p = d.busctl("introspect", "org.vhdreclaim", "/org/vhdreclaim/Manager", "org.vhdreclaim.Manager1")
    assert re.search(r"\.Compact\W+method\W+s\W+t\b", p.stdout) or '"Compact"' in p.stdout, p.stdout
    job = d.call("Compact", "s", "e")[0]
    assert isinstance(job, int) and job > 0, job
    d.wait_passes("e", 1)
    h = d.history("e")
    d.stop()
    assert h[-1]["result"] == "success", h
    assert os.path.getsize(e) == predicted
    assert_valid_and_same(e, e_copy)


def test_inspect_says_why_not(tmp):
    raw = os.path.join(tmp, "r.img")
    with open(raw, "wb") as f:
        f.truncate(8 * MiB)
    out = run(VHDRECLAIMD, "--inspect", raw).stdout
    assert "compaction          does not apply: a raw image has no blocks to move" in out, out
    fixed = os.path.join(tmp, "f.vhdx")
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=fixed", fixed, "8M")
    out = run(VHDRECLAIMD, "--inspect", fixed).stdout
    assert re.search(r"^compaction +does not apply: a fixed disk", out, re.M), out


if __name__ == "__main__":
    require_tools("qemu-img", "qemu-io", "busctl")
    if not CTL or not os.access(CTL, os.X_OK):
        raise SystemExit("VHDRECLAIMCTL is not set to the built client")
    main([test_periodic_pass_compacts, test_ctl_compact_wait, test_refused_on_sparse_false, test_busctl_compact,
          test_inspect_says_why_not])
