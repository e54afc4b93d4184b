"""Exclusive locks on files: one writer of a set, of a version, of a pipeline's state at a time.

A lock is an open file with an exclusive lock on it, taken with filelock's `lock_descriptor`:
flock(2) on Unix, the primitive these locks have always used (a lockf lock would not exclude a
run of an older promptgen, nor a test holding the file with fcntl.flock). The kernel drops it
when its process dies, so a lock left by a killed run blocks nobody: its file stays, and may
still say who held it, but nobody holds it. A lock belongs to an open file, not to a process:
two `LockFile`s on one path exclude each other in one process too (a status check sees the
version this process is writing as held).

The file can carry a note of who holds it, which a refused run reads to name what is in its way.
That is why filelock's `FileLock` is not used: up to 3.29 every attempt to take it truncated the
file (filelock#591), and 3.30 to 3.32 truncate it once taken, which would erase the note of a
killed holder that the next run reports when it takes over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from promptgen.clock import utc_now
from promptgen.messages import shorten
from promptgen.redact import redacted_command

__all__ = ["LockFile", "is_locked", "holder_note", "describe_holder"]


class LockFile:
    """One lock file, open: `try_acquire` or `wait` takes its lock, `release` lets it go and closes
    the file. The file is made if missing and never truncated on opening: its note is the holder's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = open(path, "a+", encoding="utf-8")
        self._held = False

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once if somebody does."""
        from filelock import lock_descriptor  # heavy: about 10 ms, paid only when a lock is taken

        self._held = lock_descriptor(self._handle.fileno(), blocking=False)
        return self._held

    def wait(self, poll_interval: float = 0.2) -> None:
        """Take the lock, however long its holder keeps it (a holder that dies lets it go)."""
        from filelock import lock_descriptor

        lock_descriptor(self._handle.fileno(), blocking=True, poll_interval=poll_interval)
        self._held = True

    def read_note(self) -> str:
        """The note in the file: the holder's, or one a holder that died left behind ("" if none)."""
        self._handle.seek(0)
        return self._handle.read()

    def write_note(self, text: str) -> None:
        """Replace the note; only the holder writes it."""
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text)
        self._handle.flush()

    def release(self) -> None:
        """Let the lock go (if held) and close the file; a second call does nothing."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            if self._held:
                self._held = False
                from filelock import unlock_descriptor

                unlock_descriptor(handle.fileno())
        finally:
            handle.close()


def is_locked(path: Path) -> bool:
    """Whether somebody holds the lock on `path` (this process included), without keeping it; a
    missing file is not locked and is not made."""
    if not path.exists():
        return False
    probe = LockFile(path)
    try:
        return not probe.try_acquire()
    finally:
        probe.release()


def holder_note() -> str:
    """This process as a lock's note: its pid, when it took the lock and its (redacted) command."""
    command = shorten(redacted_command(), 300)
    return json.dumps({"pid": os.getpid(), "started": utc_now(), "command": command}) + "\n"


def describe_holder(note: str) -> str:
    """A `holder_note` for a message ("pid 12, started ...: promptgen describe ..."); "unknown" for
    an empty note (released cleanly) or one promptgen did not write."""
    try:
        holder = json.loads(note or "null")
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return "unknown"
    return f"pid {holder.get('pid')}, started {holder.get('started')}: {holder.get('command')}"
