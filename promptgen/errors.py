"""User-facing errors: each names the problem and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

import errno

__all__ = ["PromptgenError", "ExitCode", "DISK_ERRNOS"]

# a write the disk or the file system refused: full, over quota, read-only, no permission
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class ExitCode:
    OK = 0
    USAGE = 2          # bad input: nothing was sent or written
    PARTIAL = 3        # the run finished but some requests failed; see the manifest
    NOT_WRITTEN = 4    # the disk refused a write (full, read-only, no permission); earlier versions are intact
    INTERRUPTED = 130  # Ctrl-C; resume with --resume


class PromptgenError(Exception):
    """An error in what the user asked for, with the fix in `hint`."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message
