#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A disk that holds both a file system at offset 0 and a partition table
(trial finding 13): one of them is stale, and nothing on the disk says which.
The free tier punching the "free" blocks of the wrong one destroys the live
file system, so it is skipped (skipped-unclean-fs, naming both); the image's
content is unchanged, e2fsck -fn stays clean and every file reads back
identical. A normal partitioned disk next to it still gets the free tier."""

import os
import random
import shutil
import sys
import tempfile
import unittest

from test_free_tier import (DAEMON, IN_CI, MiB, copy_into, extract, make_ext, make_tree, reclaim, run,
                            sha256, verify_ext)


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), data, offset)


def read_at(path, offset, size):
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size, offset)


def truncate(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def ext_magic_at(path, offset):
    """Whether an ext superblock magic (0xEF53 at +1024+56) sits at offset."""
    return read_at(path, offset + 1024 + 56, 2) == b"\x53\xef"


class LayoutAmbiguous(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="test-layout-")
        self.rng = random.Random(self._testMethodName)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.dir, name)

    def assert_refused(self, image, *names):
        """The free tier is skipped naming names; the content is what it was."""
        before = self.p("before.raw")
        run("qemu-img", "convert", "-O", "raw", image, before)
        rc, rep = reclaim(image)
        self.assertEqual((rc, rep["result"]), (0, "skipped-unclean-fs"), rep)
        self.assertIn("ambiguous layout", rep["message"])
        for n in names:
            self.assertIn(n, rep["message"])
        self.assertEqual(rep["free_bytes"], 0, rep)
        p = run("qemu-img", "compare", before, image, check=False)
        self.assertEqual(p.returncode, 0, "content unchanged: " + p.stdout + p.stderr)
        os.unlink(before)
        return rep

    def test_stale_mbr_over_live_whole_disk_ext4(self):
        """The trial's repro: an MBR and its partition's old, clean ext4
        left over beneath a whole-disk ext4 holding the live files."""
        disk, old = self.p("st.raw"), self.p("old.part")
        truncate(disk, 300 * MiB)
        run("sfdisk", "-q", "--label", "dos", disk, input="2048,204800,83\n")
        truncate(old, 100 * MiB)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", old)
        copy_into(old, disk, 1 * MiB)
        mbr = read_at(disk, 446, 66)
        src = self.p("src")
        files = make_tree(src, self.rng, 40)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", "-d", src, disk)
        write_at(disk, 446, mbr)
        # What the trial saw: both are there, and the live one is clean.
        self.assertEqual(run("e2fsck", "-fn", disk, check=False).returncode, 0)
        blkid = run("blkid", "-p", disk, check=False).stdout
        self.assertIn('TYPE="ext4"', blkid)
        self.assertIn('PTTYPE="dos"', blkid)

        for image in (disk, self.to_vhdx(disk)):
            with self.subTest(image=os.path.basename(image)):
                rep = self.assert_refused(image, "ext4 file system at offset 0",
                                          "MBR partition table with partition 1 at offset 0x100000")
                self.assertIn("cannot tell which is live", rep["message"])
                raw = image if image.endswith(".raw") else self.back_to_raw(image)
                verify_ext(raw, files)

    def test_stale_whole_disk_superblock_under_live_partition(self):
        """The other way round: a disk formatted whole, then partitioned
        (sfdisk in script mode does not wipe the old superblock at 1024) and
        a file system made in the partition."""
        disk = self.p("disk.raw")
        truncate(disk, 160 * MiB)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", disk)
        run("sfdisk", "-q", disk, input="label: dos\nstart=2048, size=120M, type=83\n")
        self.assertTrue(ext_magic_at(disk, 0), "the whole-disk superblock survives sfdisk's MBR")
        part = self.p("p1.raw")
        files = make_ext(part, 120, self.rng)
        copy_into(part, disk, 1 * MiB)
        self.assert_refused(disk, "ext4 file system at offset 0",
                            "MBR partition table with partition 1 at offset 0x100000")
        extract(disk, part, 1 * MiB, 120 * MiB)
        verify_ext(part, files)

    def test_gpt_over_whole_disk_ext4_clears_its_superblock(self):
        """A GPT's entry array (sectors 2-33) covers the superblock at 1024:
        the old whole-disk file system is gone and the disk is not ambiguous."""
        disk = self.p("disk.raw")
        truncate(disk, 160 * MiB)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", disk)
        run("sfdisk", "-q", disk, input="label: gpt\nstart=2048, size=120M, type=L\n")
        self.assertFalse(ext_magic_at(disk, 0), "sfdisk's GPT overwrote the superblock")
        part = self.p("p1.raw")
        files = make_ext(part, 120, self.rng)
        copy_into(part, disk, 1 * MiB)
        rc, rep = reclaim(disk)
        self.assertEqual((rc, rep["result"], rep["filesystem"]), (0, "success", "gpt: ext4"), rep)
        self.assertGreater(rep["free_bytes"], 0)
        extract(disk, part, 1 * MiB, 120 * MiB)
        verify_ext(part, files)

    def test_normal_mbr_disk_still_reclaimed(self):
        """Partition 1 at 1 MiB with a clean ext4, nothing before it."""
        disk = self.p("disk.raw")
        truncate(disk, 100 * MiB)
        run("sfdisk", "-q", disk, input="label: dos\nstart=2048, size=90M, type=83\n")
        part = self.p("p1.raw")
        files = make_ext(part, 90, self.rng)
        copy_into(part, disk, 1 * MiB)
        rc, rep = reclaim(disk)
        self.assertEqual((rc, rep["result"], rep["filesystem"]), (0, "success", "mbr: ext4"), rep)
        self.assertGreater(rep["free_bytes"], 0)
        extract(disk, part, 1 * MiB, 90 * MiB)
        verify_ext(part, files)

    def to_vhdx(self, raw):
        vhdx = raw[:-4] + ".vhdx"
        run("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, vhdx)
        return vhdx

    def back_to_raw(self, vhdx):
        p = run("qemu-img", "check", vhdx, check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        raw = vhdx + ".after.raw"
        run("qemu-img", "convert", "-O", "raw", vhdx, raw)
        return raw


if __name__ == "__main__":
    for tool in ("qemu-img", "mkfs.ext4", "debugfs", "e2fsck", "sfdisk", "blkid"):
        if not shutil.which(tool):
            print("missing %s" % tool)
            sys.exit(1 if IN_CI else 77)
    result = unittest.main(verbosity=2, exit=False).result
    if not result.wasSuccessful() or result.testsRun == 0:
        sys.exit(1)
    if result.skipped:
        print("%d test(s) skipped: exit 77" % len(result.skipped))
        sys.exit(77)
    sys.exit(0)
