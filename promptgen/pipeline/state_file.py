"""The state file of a pipeline (`ROOT/pipelines/NAME.json`), typed.

`format` is the state's format version (STATE_FORMAT); `units` holds, per "DATASET/STEP", what the
runner last recorded: the key of the unit's inputs, its status, the version it reserved, its
output, and the identity the key was made from. A state of another format is not an error: the
runner ignores it with a warning and checks every step again (pipeline.state.PipelineState); a state of
this format with a key the runner never writes is refused, naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from promptgen.typed_files import FileModel, Number, refusal

__all__ = ["STATE_FORMAT", "PipelineStateFile", "check_state", "state_text"]

STATE_FORMAT = 2


class UnitIdentity(FileModel):
    """What a unit's key hashes (credentials removed): PipelineRunner._resolve."""

    command: str | None = None
    dataset: str | None = None
    classes: str | None = None
    options: dict[str, Any] | None = None   # the step's options as the pipeline file gives them
    inputs: dict[str, Any] | None = None    # one content hash per reference as written
    template: str | None = None


class UnitOutput(FileModel):
    """A set version (`set`, `records_sha256`) or a file or folder (`path`, `sha256`)."""

    set: str | None = None
    records_sha256: str | None = None
    path: str | None = None
    sha256: str | None = None


class UnitState(FileModel):
    key: str | None = None
    status: str | None = None
    started: str | None = None
    identity: UnitIdentity | None = None
    set_name: str | None = None
    version: int | None = None
    output: UnitOutput | None = None
    finished: str | None = None
    seconds: Number | None = None
    exit_code: int | None = None
    batches: list[str] | None = None


class PipelineStateFile(FileModel):
    format: Literal[2]
    units: dict[str, UnitState]
    file: str | None = None  # the pipeline file last run under this name


_FIX = "delete it to check every step again (answers come from the cache), or correct the key"


def check_state(data: dict, path: Path | str) -> dict:
    """`data` itself, once it fits the model (its format already checked by the caller)."""
    try:
        PipelineStateFile.model_validate(data)
    except ValidationError as exc:
        raise refusal(path, "pipeline state", exc, PipelineStateFile, _FIX) from None
    return data


def state_text(data: dict, path: Path | str) -> str:
    """The state as written, after checking that what lands on disk reads back."""
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    check_state(json.loads(text), path)
    return text
