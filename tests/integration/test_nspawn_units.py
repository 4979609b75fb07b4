#!/usr/bin/env python3
"""The units under a real systemd as PID 1 (systemd-nspawn, see
tests/nspawn/boot.py): the system boots, systemd-sysusers creates the
vhdreclaim group, the enabled socket listens with its mode and group, the
enabled timer is listed with its next elapse, and the service is not started
before a client calls. test_nspawn.py runs these and the daemon's checks."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ["SOURCE_ROOT"], "tests", "nspawn"))
import boot  # noqa: E402

boot.run_as_test(boot.UNIT_CHECKS)
