"""ROOT/pipelines/NAME.json: each unit's key, status, output and identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from promptgen.fileio import atomic_write_text
from promptgen.pipeline.state_file import STATE_FORMAT, check_state, state_text

__all__ = ["PipelineState", "STATE_FORMAT", "RESUMABLE"]

RESUMABLE = ("running", "interrupted", "partial", "failed")  # such a unit continues its own version


class PipelineState:
    """ROOT/pipelines/NAME.json, rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"format": STATE_FORMAT, "units": {}}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and loaded.get("format") == STATE_FORMAT and \
                        isinstance(loaded.get("units"), dict):
                    self.data = check_state(loaded, path)  # a key the runner never writes is refused
                else:
                    click.echo(f"warning: {path} is from another promptgen version; every step is checked "
                               f"again (answers come from the cache)", err=True)
            except ValueError:
                click.echo(f"warning: {path} is not readable JSON; every step runs again (answers come from "
                           f"the cache)", err=True)

    def unit(self, unit_id: str) -> dict:
        return self.data["units"].get(unit_id) or {}

    def update(self, unit_id: str, **values: Any) -> None:
        self.data["units"][unit_id] = {**self.unit(unit_id), **values}
        self.save()

    def replace(self, unit_id: str, values: dict) -> None:
        self.data["units"][unit_id] = values
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, state_text(self.data, self.path), durable=True)
