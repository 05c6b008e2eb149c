"""PACS integration: follow an Orthanc server's change feed, measure new ultrasound images, store SR + SC.

``orthanc``: the small REST client (basic auth, timeouts, bounded back-off, streamed
downloads). ``state``: the SQLite bookkeeping (change cursor, one row per instance).
``watch``: the loop itself (``fetometry pacs watch``). See docs/DEPLOYMENT.md.
Decision support, never diagnosis: the SR is marked PRELIMINARY and unverified.
"""

from __future__ import annotations

__all__ = ["orthanc", "state", "watch"]
