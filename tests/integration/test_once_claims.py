#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`vhdreclaimd --once` and `--inspect` say what is true about what they are given.

Issue 10, items 5, 7 and 8:

- a dry run reports what it would punch: the text line carries the total
  (stale + zero + free), the JSON line has "dry_run": true and
  "would_reclaim" equal to that total, and the file is unchanged;
- a directory, a FIFO and a block device are "not a regular file" for both
  --once and --inspect (never "cannot take a write lease"), and neither
  blocks on the FIFO;
- a skipped or refused image still reports what is known: its format by
  name, its file size, and a raw image's virtual size;
- a file name that is not UTF-8 keeps its bytes in "path_bytes" (base64);
- --inspect of a whole-disk ext4 does not print "guest file systems  none";
- a file named .vhdx must be a VHDX: a zero-byte one and one whose first
  192 KiB were zeroed are refused (refused-invalid, exit 1, untouched), by
  --once and --inspect alike; a raw image is raw by its name (.img, .raw) or
  by --format=raw, never by falling through: a raw image named .bin is
  refused until --format=raw is given; --format=raw refuses a VHDX.

Skips (77) without qemu-img/mkfs.ext4; fails in CI.
"""

import base64
import os
import shutil
import stat
import subprocess

import oncetest
from oncetest import KiB, MiB

t = oncetest.Checker()


def write_raw(path, pieces):
    """pieces of (kind, MiB): data or written zeros (allocated)."""
    with open(path, "wb") as f:
        for i, (kind, n) in enumerate(pieces):
            f.write((bytes([0x5a + i]) * MiB if kind == "data" else bytes(MiB)) * n)


def inspect(path, *options):
    return oncetest.run([oncetest.binary(), "--inspect", *options, path], timeout=30)


def untouched(path, sha, what):
    t.check(oncetest.sha256(path) == sha, f"{what}: untouched (sha256)")


def test_dry_run_total(work):
    path = os.path.join(work, "zeros.raw")
    write_raw(path, [("data", 1), ("zero", 3), ("data", 1), ("zero", 2)])
    sha = oncetest.sha256(path)
    run = oncetest.run_once(path, "--dry-run", "--discard=safe")
    r = run.report
    total = r.get("stale_bytes", 0) + r.get("zero_bytes", 0) + r.get("free_bytes", 0)
    t.check(run.rc == 0 and r.get("dry_run") is True and total >= 5 * MiB, f"dry run --json: {run}")
    t.equal(r.get("would_reclaim"), total, "dry run --json: would_reclaim is stale + zero + free")
    t.equal(r.get("reclaimed"), 0, "dry run --json: reclaimed (measured) stays 0")
    text = oncetest.run([oncetest.binary(), "--once", "--dry-run", "--discard=safe", path])
    t.check(text.returncode == 0 and "(dry run): would punch 5.0M (" in text.stdout,
            f"dry run text line names the total: {text.stdout.strip()!r}")
    untouched(path, sha, "dry run")
    real = oncetest.run_once(path, "--discard=safe")
    t.equal(real.report.get("would_reclaim"), 0, "a real pass: would_reclaim 0")
    t.check(real.report.get("dry_run") is False and real.report.get("reclaimed", 0) >= 5 * MiB,
            f"a real pass reports what it reclaimed: {real}")


def a_block_device():
    for name in sorted(os.listdir("/dev")):
        p = os.path.join("/dev", name)
        try:
            if stat.S_ISBLK(os.stat(p).st_mode):
                return p
        except OSError:
            pass
    return None


def test_not_regular(work):
    d = os.path.join(work, "dir.vhdx")
    os.mkdir(d)
    fifo = os.path.join(work, "fifo.raw")
    os.mkfifo(fifo)
    cases = [(d, "a directory"), (fifo, "a FIFO")]
    blk = a_block_device()
    if blk:
        cases.append((blk, "a block device"))
    else:
        print("no block device in /dev: that case is not tried", flush=True)
    for path, kind in cases:
        try:
            run = oncetest.run_once(path, timeout=20)
        except subprocess.TimeoutExpired:
            t.check(False, f"--once {kind}: returns (it blocked)")
            continue
        r = run.report
        t.check(run.rc == 1 and r.get("result") == "refused-invalid" and
                r.get("message") == f"not a regular file: {kind}",
                f"--once {kind}: refused-invalid, \"not a regular file: {kind}\": {run}")
        try:
            p = inspect(path)
        except subprocess.TimeoutExpired:
            t.check(False, f"--inspect {kind}: returns (it blocked)")
            continue
        t.check(p.returncode == 1 and f"not a regular file: {kind}" in p.stderr,
                f"--inspect {kind}: the same words, exit 1: {p.returncode} {p.stderr.strip()!r}")


def test_known_fields(work):
    # Skipped in use: format by name, size, and a raw image's virtual size.
    raw = os.path.join(work, "busy.raw")
    write_raw(raw, [("data", 1), ("zero", 1)])
    with open(raw, "rb"):
        run = oncetest.run_once(raw)
    r = run.report
    t.equal(r.get("result"), "skipped-in-use", "an open raw image: skipped-in-use")
    t.equal((r.get("format"), r.get("file_size"), r.get("virtual_size")), ("raw", 2 * MiB, 2 * MiB),
            "skipped-in-use raw: format, file_size and virtual_size are known")
    # Refused: its name says what it claimed to be, and its size is known.
    bad = os.path.join(work, "empty-head.vhdx")
    with open(bad, "wb") as f:
        f.truncate(4 * MiB)
    run = oncetest.run_once(bad)
    r = run.report
    t.equal((r.get("result"), r.get("format"), r.get("file_size")), ("refused-invalid", "vhdx", 4 * MiB),
            "refused .vhdx: format and file_size are known")


def test_path_bytes(work):
    name = b"caf\xe9-\xff.raw"       # Latin-1, not UTF-8
    path = os.path.join(os.fsencode(work), name)
    write_raw(os.fsdecode(path), [("data", 1)])
    run = oncetest.run_once(os.fsdecode(path), "--dry-run")
    r = run.report
    t.check("path_bytes" in r, f"non-UTF-8 name: path_bytes present: {run}")
    decoded = base64.b64decode(r.get("path_bytes", "")) if "path_bytes" in r else b""
    t.equal(decoded, path, "path_bytes (base64) gives back the exact bytes of the path")
    t.check(os.path.exists(decoded), "... which name the file")


def test_inspect_whole_disk_ext4(work):
    path = os.path.join(work, "fs.img")
    with open(path, "wb") as f:
        f.truncate(32 * MiB)
    oncetest.run(["mkfs.ext4", "-q", "-F", path], check=True)
    p = inspect(path)
    t.check(p.returncode == 0 and "ext4" in p.stdout, f"--inspect whole-disk ext4: listed: {p.stdout!r}")
    line = next((x for x in p.stdout.splitlines() if x.startswith("guest file systems")), "")
    t.check(not line.rstrip().endswith("none"), f"--inspect: the header does not say none above an ext4: {line!r}")


def test_vhdx_claims(work):
    # Zero-byte .vhdx: refused, --inspect too.
    empty = os.path.join(work, "empty.vhdx")
    open(empty, "wb").close()
    run = oncetest.run_once(empty)
    t.check(run.rc == 1 and run.report.get("result") == "refused-invalid" and "vhdxfile" in run.report.get("message", ""),
            f"zero-byte .vhdx: refused-invalid naming the signature: {run}")
    p = inspect(empty)
    t.check(p.returncode == 1 and "vhdxfile" in p.stderr, f"--inspect zero-byte .vhdx: exit 1: {p.returncode} {p.stderr!r}")

    # A VHDX whose first 192 KiB were zeroed: not raw, refused, untouched.
    vhdx = os.path.join(work, "headless.vhdx")
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", vhdx, "64M"], check=True)
    oncetest.qemu_io(vhdx, "vhdx", ["write -q -P 0 0 8M"])
    with open(vhdx, "r+b") as f:
        f.write(bytes(192 * KiB))
    sha = oncetest.sha256(vhdx)
    for opts in ([], ["--dry-run"]):
        run = oncetest.run_once(vhdx, *opts)
        t.check(run.rc == 1 and run.report.get("result") == "refused-invalid" and
                "vhdxfile" in run.report.get("message", ""),
                f".vhdx with its first 192 KiB zeroed {opts}: refused-invalid: {run}")
    p = inspect(vhdx)
    t.check(p.returncode == 1 and "raw" not in p.stdout, f"--inspect of it: refused, not raw: {p.returncode} {p.stdout!r}")
    untouched(vhdx, sha, ".vhdx with its first 192 KiB zeroed")

    # Raw by name or by --format=raw, never by falling through.
    raw = os.path.join(work, "disk.bin")
    write_raw(raw, [("data", 1), ("zero", 2)])
    sha = oncetest.sha256(raw)
    run = oncetest.run_once(raw)
    t.check(run.rc == 1 and run.report.get("result") == "refused-invalid" and "format=raw" in run.report.get("message", ""),
            f"raw image named .bin: refused, pointing at format=raw: {run}")
    untouched(raw, sha, "raw image named .bin")
    p = inspect(raw)
    t.check(p.returncode == 1 and "format=raw" in p.stderr, f"--inspect .bin: refused: {p.stderr.strip()!r}")
    p = inspect(raw, "--format=raw")
    t.check(p.returncode == 0 and "format              raw" in p.stdout, "--inspect --format=raw .bin: raw")
    run = oncetest.run_once(raw, "--format=raw", "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") == "success" and run.report.get("format") == "raw",
            f"--format=raw: the .bin image is reclaimed as raw: {run}")
    # The content: a fresh copy of what it held compares equal.
    ref = os.path.join(work, "ref.raw")
    write_raw(ref, [("data", 1), ("zero", 2)])
    ok, out = oncetest.qemu_img_compare(ref, raw, "raw")
    t.check(ok, "--format=raw: qemu-img compare with the original content: identical" + ("" if ok else f": {out}"))

    good = os.path.join(work, "good.vhdx")
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", good, "16M"], check=True)
    sha = oncetest.sha256(good)
    run = oncetest.run_once(good, "--format=raw")
    t.check(run.rc == 1 and run.report.get("result") == "refused-invalid" and "VHDX" in run.report.get("message", ""),
            f"--format=raw on a VHDX: refused: {run}")
    untouched(good, sha, "--format=raw on a VHDX")
    p = oncetest.run([oncetest.binary(), "--once", "--format=qcow2", good])
    t.check(p.returncode == 2 and "--format" in p.stderr, f"--format=qcow2: usage error: {p.returncode} {p.stderr!r}")


def main():
    oncetest.require_tools("qemu-img", "qemu-io", "mkfs.ext4")
    work = oncetest.workdir("test-once-claims-")
    try:
        test_dry_run_total(work)
        test_not_regular(work)
        test_known_fields(work)
        test_path_bytes(work)
        test_inspect_whole_disk_ext4(work)
        test_vhdx_claims(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
