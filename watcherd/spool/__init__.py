"""The spool: inbox, running, done and failed folders, atomic claims and moves, names and lookup,
and the watcher that wakes the daemon."""

from __future__ import annotations

from watcherd.spool.folders import Claimed, InboxEntry, Layout, Spool

__all__ = ["Claimed", "InboxEntry", "Layout", "Spool"]
