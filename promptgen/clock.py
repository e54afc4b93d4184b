"""The one timestamp format promptgen writes: manifests, journals, run logs, pipeline state, caches.

UTC to the second with a `Z` ("2024-05-01T12:00:00Z"): files written by different commands (and
different machines) then sort and compare as plain text.
"""

from __future__ import annotations

import time

__all__ = ["utc_now", "iso_from_epoch"]

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """Now, as promptgen writes it."""
    return time.strftime(_FORMAT, time.gmtime())


def iso_from_epoch(seconds: float) -> str:
    """A `time.time()` value as promptgen writes it (the run log keeps the float for durations)."""
    return time.strftime(_FORMAT, time.gmtime(seconds))
