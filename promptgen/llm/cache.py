"""A content-addressed JSON cache of LLM answers: one file per request, named by its key.

The key is the sha256 of the canonical JSON of everything that determines the answer (model,
API base, messages, sampling parameters, sample index). Files are written atomically, so a
crash never leaves half an entry; an unreadable entry is reported and treated as missing.
No pickle anywhere: entries are plain JSON that a person can read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from promptgen.clock import utc_now
from promptgen.fileio import atomic_write_text, canonical_json

__all__ = ["cache_key", "LLMCache", "restore_from_journal"]

log = logging.getLogger(__name__)


def cache_key(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class LLMCache:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable LLM cache entry %s (%s); the request will be sent again", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("response"), dict):
            log.warning("ignoring malformed LLM cache entry %s; the request will be sent again", path)
            return None
        return entry["response"]

    def put(self, key: str, request: dict, response: dict) -> None:
        entry = {"key": key, "created": utc_now(),
                 "request": request, "response": response}
        atomic_write_text(self.path(key), json.dumps(entry, ensure_ascii=False, indent=1))

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def restore_from_journal(cache: LLMCache | None, entries: list[dict]) -> int:
    """Put back answers a version's journal holds and the cache lost (a cleared cache/, another
    machine): they were paid for, so they must not be asked again. Returns how many."""
    if cache is None:
        return 0
    restored = 0
    for entry in entries:
        if entry.get("response") is not None and entry.get("key") and entry["key"] not in cache:
            cache.put(entry["key"], entry.get("request", {}), entry["response"])
            restored += 1
    return restored
