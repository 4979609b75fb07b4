#!/usr/bin/env python3
"""vhdreclaimd under a real systemd as PID 1 (systemd-nspawn, see
tests/nspawn/boot.py and inside.sh): every check of the units, then those of
the daemon: the first vhdreclaimctl call starts the service through the
socket; systemctl reload applies a new configuration, and a broken one fails
the reload without killing the service; a frozen daemon (SIGSTOP) is killed
and restarted by the watchdog; vhdreclaim.service (the timer's) reclaims
qemu-img-made images in /srv and in another user's home; the journal carries
the pass-end fields."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ["SOURCE_ROOT"], "tests", "nspawn"))
import boot  # noqa: E402

boot.run_as_test(boot.ALL_CHECKS)
