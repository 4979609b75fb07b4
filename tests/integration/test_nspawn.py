#!/usr/bin/env python3
"""vhdreclaimd under a real systemd as PID 1, in one boot (systemd-nspawn,
see tests/nspawn/boot.py and inside.sh): the system boots, systemd-sysusers
creates the vhdreclaim group, the enabled socket listens with its mode and
group, the enabled timer is listed with its next elapse, and the service
waits for a client; the first vhdreclaimctl call starts it through the
socket and it reports a STATUS=; systemctl reload applies a new
configuration, and a broken one fails the reload (file:line in the journal)
without killing the service; a frozen daemon (SIGSTOP) is killed and
restarted by the watchdog; vhdreclaim.service (the timer's) reclaims
qemu-img-made images in /srv and in another user's home (qemu-img check and
compare) and trims an ext4 on a loop device; the journal carries the
pass-end fields; the daemon stops cleanly, without sanitizer reports."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ["SOURCE_ROOT"], "tests", "nspawn"))
import boot  # noqa: E402

boot.run_as_test(boot.ALL_CHECKS)
