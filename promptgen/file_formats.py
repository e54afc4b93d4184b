"""Format versions of the files promptgen writes, in a module light enough for start-up: the
typed models that check them (manifests.py, pydantic) are imported only when a file is read or
written."""

from __future__ import annotations

__all__ = ["MANIFEST_FORMAT"]

MANIFEST_FORMAT = "promptgen.prompt-set/1"  # a prompt-set version's manifest (and its records' fields)
