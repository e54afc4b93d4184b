"""The commands a pipeline can run, each declared next to its own definition.

A command module decorates its click command with `@pipeline_step(...)`, saying what the command
writes and which of its options read prompt sets, name files by content, or only change how it
runs (not what it writes: they stay out of a unit's key). The pipeline reads these declarations
from `STEPS`.
The commands register when `promptgen.cli` is imported (the `promptgen` entry point does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import click

__all__ = ["StepSpec", "STEPS", "pipeline_step", "LLM_RUN_ONLY", "CLIP_RUN_ONLY"]

# how an LLM command runs, not what it writes
LLM_RUN_ONLY = ("concurrency", "no-progress", "timeout", "max-attempts", "backoff", "batch", "batch-poll",
                "batch-retry", "transport", "wait")
CLIP_RUN_ONLY = ("device", "batch-size")


@dataclass(frozen=True)
class StepSpec:
    """What a command is to the pipeline. `writes`: "set" (a prompt-set version), "file:.SUFFIX"
    or "dir" (under ROOT/pipelines/NAME/DATASET/); `set_inputs`: options whose values name prompt
    sets (pinned to a version); `path_like`: text options that may name a file or folder (keyed by
    content, as path-typed options always are); `run_only`: options left out of the unit's key."""

    command: click.Command
    writes: str
    set_inputs: tuple[str, ...] = ()
    path_like: tuple[str, ...] = ()
    run_only: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(self.command.name)

    @property
    def params(self) -> dict[str, click.Parameter]:
        """Options by their long flag without dashes (what a pipeline file writes), arguments by name."""
        found: dict[str, click.Parameter] = {}
        for param in self.command.params:
            if isinstance(param, click.Argument):
                found[str(param.name)] = param
                continue
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--"):
                    found.setdefault(opt[2:], param)
        return found


STEPS: dict[str, StepSpec] = {}


def pipeline_step(writes: str, *, set_inputs: tuple[str, ...] = (), path_like: tuple[str, ...] = (),
                  run_only: tuple[str, ...] = ()) -> Callable[[click.Command], click.Command]:
    """Register a click command as a pipeline step (apply it above @click.command)."""
    def register(command: click.Command) -> click.Command:
        STEPS[str(command.name)] = StepSpec(command, writes, set_inputs, path_like, run_only)
        return command
    return register

