"""Test-only start-up hooks for a subprocess daemon (or any Python the tests start).

Python imports ``sitecustomize`` at start-up from the first folder on sys.path that has
one; this folder is put on PYTHONPATH only by the tests that want these hooks:

WATCHERD_TEST_MDWX=1
    Apply systemd's MemoryDenyWriteExecute= filter (tests/support/mdwx.py) before the
    program imports anything, as the unit does (tests/test_systemd_unit.py).

WATCHERD_TEST_STALL_FILE=<path>
    While that file exists, ``Spool.scan_inbox`` (called on every turn of the daemon's
    main loop, on the main thread) blocks. Job threads, the inbox watcher and the
    signal relay keep running, as they would if the loop itself hung
    (tests/test_sdnotify.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

if os.environ.get("WATCHERD_TEST_MDWX") == "1":
    from tests.support import mdwx

    mdwx.install()

_STALL_FILE = os.environ.get("WATCHERD_TEST_STALL_FILE")

if _STALL_FILE:
    from watcherd.spool.folders import InboxEntry, Spool

    _scan_inbox = Spool.scan_inbox
    _stall = Path(_STALL_FILE)

    def _stalling_scan_inbox(self: Spool) -> list[InboxEntry]:
        if _stall.exists():
            _stall.with_suffix(".entered").touch()  # tells the test the loop is stuck now
            while _stall.exists():
                time.sleep(0.01)  # this wait *is* the stall under test
        return _scan_inbox(self)

    Spool.scan_inbox = _stalling_scan_inbox  # type: ignore[method-assign]
