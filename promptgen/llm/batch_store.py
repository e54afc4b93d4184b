"""What promptgen keeps of the batches it submits: one state file per batch, and its files.

A state is written, durably, as soon as the provider returns a batch id, so that an interrupted
run (or the next one) picks the batch up instead of paying for its lines again. Nothing here
talks to the provider or holds a credential.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from promptgen.fileio import atomic_write_text
from promptgen.llm.cache import LLMCache

__all__ = ["ENDED", "BatchState", "BatchStore"]

# the logger batch mode has always reported under (its warnings show the name)
log = logging.getLogger("promptgen.llm.batch")

# "lost": the provider no longer knows the batch (another account or server); its lines are asked again
ENDED = ("completed", "failed", "expired", "cancelled", "lost")


@dataclass
class BatchState:
    """What promptgen knows of a submitted batch; saved as <cache>/batches/<batch_id>.json."""

    batch_id: str
    input_file_id: str
    model: str
    api_base: str | None
    custom_ids: list[str]
    submitted: str                 # ISO time, for people
    submitted_at: float            # seconds since the epoch, for the answers' latency
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)  # why a batch failed, as the provider said
    joined: bool = False           # every answer it holds is in the cache

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def lines_done(self) -> int:
        if self.ended:
            return len(self.custom_ids)
        counts = self.request_counts or {}
        return int(counts.get("completed") or 0) + int(counts.get("failed") or 0)

    @classmethod
    def from_json(cls, data: dict) -> BatchState:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class BatchStore:
    """Batch states and their files, in one folder next to the LLM cache: <batch_id>.json (the
    state), <input_file_id>.requests.jsonl (each line's cache-key payload, so whoever joins the
    results caches them as the online path would), <batch_id>.output.jsonl and .errors.jsonl (the
    results as fetched). Nothing here holds a credential."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def beside(cls, cache: LLMCache) -> BatchStore:
        """The store next to `cache`: <cache>/batches/."""
        return cls(cache.directory / "batches")

    def _path(self, object_id: str, suffix: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", object_id) + suffix)

    def state_path(self, batch_id: str) -> Path:
        return self._path(batch_id, ".json")

    def save(self, state: BatchState) -> None:
        atomic_write_text(self.state_path(state.batch_id), json.dumps(asdict(state), indent=1) + "\n", durable=True)

    def states(self) -> list[BatchState]:
        """Every saved state, oldest first; an unreadable one is reported and skipped."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(BatchState.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable batch state %s (%s)", path, exc)
        return sorted(found, key=lambda state: state.submitted_at)

    def open_states(self, model: str, api_base: str | None) -> list[BatchState]:
        """Batches of `model` at `api_base` (as keys record it) that no run has joined yet."""
        if not self.directory.is_dir():
            return []
        return [state for state in self.states() if not state.joined and state.model == model
                and state.api_base == api_base]

    def write(self, object_id: str, kind: str, text: str) -> None:
        atomic_write_text(self._path(object_id, f".{kind}.jsonl"), text, durable=True)

    def read(self, object_id: str, kind: str) -> str | None:
        try:
            return self._path(object_id, f".{kind}.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
