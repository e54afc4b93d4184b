"""The commands a pipeline can run, each declared next to its own definition.

A command module decorates its click command with `@pipeline_step(...)`, saying what the command
writes and which of its options read prompt sets, name files by content, or only change how it
runs (not what it writes: they stay out of a unit's key). The pipeline reads these declarations
from `STEPS` and calls the command's function with typed values; it never builds a command line.
The commands register when `promptgen.cli` is imported (the `promptgen` entry point does).
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import click

from promptgen.errors import DISK_ERRNOS, ExitCode, PromptgenError
from promptgen.redact import redact

__all__ = ["StepSpec", "STEPS", "pipeline_step", "LLM_RUN_ONLY", "CLIP_RUN_ONLY", "report_failure", "run_step_function"]

# how an LLM command runs, not what it writes
LLM_RUN_ONLY = ("concurrency", "no-progress", "timeout", "max-attempts", "backoff", "batch", "batch-poll",
                "batch-retry", "transport", "wait")
CLIP_RUN_ONLY = ("device", "batch-size", "workers")


@dataclass(frozen=True)
class StepSpec:
    """What a command is to the pipeline. `writes`: "set" (a prompt-set version), "file:.SUFFIX"
    or "dir" (under ROOT/pipelines/NAME/DATASET/); `set_inputs`: options whose values name prompt
    sets (pinned to a version); `path_like`: text options that may name a file or folder (keyed by
    content, as path-typed options always are); `run_only`: options left out of the unit's key;
    `suffix_from`: an option whose value, when given, replaces the suffix of "file:.SUFFIX"
    (head's `format = "safetensors"` writes STEP.safetensors)."""

    command: click.Command
    writes: str
    set_inputs: tuple[str, ...] = ()
    path_like: tuple[str, ...] = ()
    run_only: tuple[str, ...] = ()
    suffix_from: str | None = None

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
                  run_only: tuple[str, ...] = (), suffix_from: str | None = None
                  ) -> Callable[[click.Command], click.Command]:
    """Register a click command as a pipeline step (apply it above @click.command)."""
    def register(command: click.Command) -> click.Command:
        STEPS[str(command.name)] = StepSpec(command, writes, set_inputs, path_like, run_only, suffix_from)
        return command
    return register


def report_failure(exc: BaseException) -> int | None:
    """Print a command's failure as the CLI does (`error: ...`, `fix: ...`, no traceback) and
    return its exit code; None for a failure that is a bug (the caller shows the traceback)."""
    if isinstance(exc, PromptgenError):
        click.echo(f"error: {redact(exc.message)}", err=True)
        if exc.hint:
            click.echo(f"  fix: {redact(exc.hint)}", err=True)
        return ExitCode.USAGE
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        action = "could not read or write" if exc.errno in (errno.EACCES, errno.EPERM) else "could not write"
        click.echo(f"error: {action}{where}: {exc.strerror or exc}", err=True)
        click.echo("  fix: free some space or make the folder writable (or give --root another folder), then "
                   "rerun with --resume: answers received so far are journalled, and complete versions are "
                   "untouched", err=True)
        return ExitCode.NOT_WRITTEN
    if isinstance(exc, KeyboardInterrupt):
        click.echo("\ninterrupted: the answers received and the caption parts counted so far are kept; rerun the "
                   "same command with --resume to finish without asking or scanning them again", err=True)
        return ExitCode.INTERRUPTED
    return None


def run_step_function(command: click.Command, values: dict[str, Any], run: Any) -> int:
    """Call a command's function with typed values (`StepSpec.params` converted them) under `run`,
    which logs it; its exit code. A crash in the command is this step's failure (exit 1, traceback
    on stderr), not its caller's."""
    try:
        with click.Context(command, info_name=command.name), run:
            result = command.callback(**values, run=run)
        return result if isinstance(result, int) else 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return ExitCode.INTERRUPTED
    except BaseException as exc:  # noqa: BLE001 - every failure of a step is reported, the pipeline goes on
        code = report_failure(exc)
        if code is None:
            click.echo(redact(traceback.format_exc()), err=True)
            code = 1
        return code
