#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a pass of the real vhdreclaimd resumes, and what it reports, when
it stops early (issue 9 bug 1, issue 10 item 2):

- scheduled passes under minReclaim and maxPassTime report
  skipped-threshold (never success with nothing punched), move on through
  the image, and come back to its start once a round ends;
- with minReclaim the zero tier reads the image once (the pass takes the
  time of one read at ioLimit, not two);
- a cancelled pass, and one stopped by SIGTERM, say `cancelled` (history,
  status) and keep where they got to: the next pass starts there, after a
  restart too, unless the image changed since the stop: then it starts
  from the beginning.

Content is compared with what it was before every time (all zeros)."""

import os
import re
import signal
import time

from daemonlib import MiB, Daemon, allocated, config, main, require_tools, wait_for


def zero_image(path, size):
    """Written zeros: allocated, every byte of them a zero run to punch."""
    with open(path, "wb") as f:
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return path


def all_zero(path, size):
    with open(path, "rb") as f:
        data = f.read()
    return len(data) == size and data.count(0) == size


def state_value(d, name, key):
    try:
        with open(os.path.join(d.state, "disks", f"{name}.state")) as f:
            for line in f:
                if line.startswith(key + "="):
                    return line.split("=", 1)[1].strip()
    except FileNotFoundError:
        return None
    return None


def resume_offset(d, name):
    v = state_value(d, name, "resume_offset")
    return int(v) if v is not None else None


def test_scheduled_threshold_round(tmp):
    """The issue's case, smaller: minReclaim 1T, ioLimit 32M, maxPassTime 1s."""
    size = 96 * MiB
    img = zero_image(os.path.join(tmp, "zero.img"), size)
    before = allocated(img)
    d = Daemon(tmp, config(tmp, [("z", img)], reclaim={
        "interval": "1s", "idleDelay": "1s", "minReclaim": "1T", "ioLimit": "32M", "maxPassTime": "1s"})).start()
    # Every pass below the threshold moves on through the image; a round's
    # end says so. The image unchanged since, the next periodic pass reads
    # nothing (issue 12); once it changed, the next round starts from the
    # beginning again.
    def unchanged(e):
        return e["result"] == "nothing-to-do" and e["message"].startswith("unchanged since")
    h = wait_for(lambda: (lambda x: x if any(unchanged(e) for e in x) else None)(d.history("z")), 40, 0.1,
                 what="a round's end and an unchanged pass")
    os.utime(img)       # a change: mtime and ctime
    n = len(h)
    h = wait_for(lambda: (lambda x: x if len(x) > n and not any(unchanged(e) for e in x[n:]) else None)(
        d.history("z")), 20, 0.1, what="a pass after the change")
    d.stop()
    for e in h:
        print(f"{e['result']}: {e['message']}")
    first = next(i for i, e in enumerate(h) if unchanged(e))
    assert all(unchanged(e) for e in h[first:n]), h
    h = h[:first] + h[n:]
    assert all(e["result"] == "skipped-threshold" and e["reclaimed"] == 0 for e in h), h
    stops = [int(m.group(1), 16) if m else None
             for m in (re.search(r"stopped after the maximum pass time at file offset 0x([0-9a-f]+)", e["message"])
                       for e in h)]
    rounds = [i for i, s in enumerate(stops) if s is None]
    assert rounds and rounds[0] + 1 < len(h), ("no round ended, or none began after it", stops)
    first_round = stops[:rounds[0]]
    assert first_round and all(0 < a < b <= size for a, b in zip(first_round, first_round[1:] + [size])), stops
    # From the beginning: about as far as the first pass got (maxPassTime at ioLimit), before the second's stop.
    assert stops[rounds[0] + 1] and stops[rounds[0] + 1] < (first_round[1] if len(first_round) > 1 else size), \
        ("the next round starts from the beginning", stops)
    assert allocated(img) == before and all_zero(img, size)


def test_threshold_reads_once(tmp):
    """64 MiB at ioLimit 32M is two seconds of reading; an estimate scan and
    then a punching scan were four."""
    size = 64 * MiB
    img = zero_image(os.path.join(tmp, "zero.img"), size)
    d = Daemon(tmp, config(tmp, [("z", img)], reclaim={
        "interval": "1h", "idleDelay": "1s", "minReclaim": "16M", "ioLimit": "32M"})).start()
    x = d.wait_passes("z", 1)
    h = d.history("z")
    d.stop()
    assert x["last_result"] == "success" and x["reclaimed_total"] == size, x
    assert len(h) == 1 and h[0]["zero_bytes"] == size, h
    took = h[0]["duration_usec"] / 1e6
    print(f"the pass took {took:.2f} s")
    assert 1.8 < took < 3.3, f"the pass took {took:.2f} s: more than one read of the image at ioLimit"
    assert allocated(img) == 0 and all_zero(img, size)


def test_cancel_and_sigterm_keep_resume_point(tmp):
    size = 192 * MiB
    img = zero_image(os.path.join(tmp, "zero.img"), size)
    d = Daemon(tmp, config(tmp, [("z", img)], reclaim={"ioLimit": "32M"})).start()

    # Cancel.
    job = d.reclaim("z")[0]
    wait_for(lambda: d.disk("z")["job_done"] >= 32 * MiB, 15, what="the pass to get past 32 MiB")
    d.call("Cancel", "t", job)
    x = d.wait_passes("z", 1)
    assert x["last_result"] == "cancelled", x
    h = d.history("z")
    assert len(h) == 1 and h[0]["result"] == "cancelled", h
    first = resume_offset(d, "z")
    assert first is not None and 16 * MiB <= first < size, first
    assert all_zero(img, size)

    # The next pass starts there; SIGTERM stops it further on.
    d.reclaim("z")
    wait_for(lambda: d.disk("z")["job_total"] > 0, 10, what="the second pass to start")
    total = d.disk("z")["job_total"]
    assert total == size - first, (total, size, first)
    wait_for(lambda: d.disk("z")["job_done"] >= 32 * MiB, 15, what="the second pass to get past 32 MiB more")
    assert d.stop(signal.SIGTERM) < 2
    second = resume_offset(d, "z")
    assert second is not None and first < second < size, (first, second)
    assert state_value(d, "z", "last_result") == "cancelled"
    assert all_zero(img, size)

    # After a restart: shown as cancelled, and the next pass starts at the second stop.
    d.start()
    x = d.disk("z")
    assert x["last_result"] == "cancelled", x
    assert [e["result"] for e in d.history("z")] == ["cancelled", "cancelled"], d.history("z")
    d.reclaim("z")
    wait_for(lambda: d.disk("z")["job_total"] > 0, 10, what="the third pass to start")
    assert d.disk("z")["job_total"] == size - second, (d.disk("z"), second)
    y = d.wait_passes("z", 3, timeout=30)
    assert y["last_result"] == "success", y
    assert resume_offset(d, "z") == 0
    assert allocated(img) == 0 and all_zero(img, size)
    d.stop()


def test_changed_since_stop_starts_over(tmp):
    """A pass stopped at X (here a cancel; in use, an opener's lease
    break), then the image is written below X (a user signs in, writes and
    frees): the next pass must read from the start, or the zeros below X
    stay allocated while status says the round is done (a new user's trial
    found 32 MiB left so, and later periodic passes then skipped the image
    as unchanged)."""
    size = 192 * MiB
    img = zero_image(os.path.join(tmp, "zero.img"), size)
    d = Daemon(tmp, config(tmp, [("z", img)], reclaim={"ioLimit": "32M"})).start()
    job = d.reclaim("z")[0]
    wait_for(lambda: d.disk("z")["job_done"] >= 48 * MiB, 15, what="the pass to get past 48 MiB")
    d.call("Cancel", "t", job)
    x = d.wait_passes("z", 1)
    assert x["last_result"] == "cancelled", x
    stop = resume_offset(d, "z")
    assert stop is not None and stop >= 32 * MiB, stop
    # Written below the stop: fresh zeros, allocated.
    with open(img, "r+b") as f:
        f.write(bytes(16 * MiB))
        f.flush()
        os.fsync(f.fileno())
    d.reclaim("z")
    wait_for(lambda: d.disk("z")["job_total"] > 0, 10, what="the second pass to start")
    assert d.disk("z")["job_total"] == size, (d.disk("z"), "the pass resumed at", stop)
    y = d.wait_passes("z", 2, timeout=30)
    assert y["last_result"] == "success", y
    assert allocated(img) == 0 and all_zero(img, size), allocated(img)
    d.stop()


if __name__ == "__main__":
    require_tools("busctl")
    main([test_scheduled_threshold_round, test_threshold_reads_once, test_cancel_and_sigterm_keep_resume_point,
          test_changed_since_stop_starts_over])
