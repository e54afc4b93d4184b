"""`promptgen` command line: one module per group of commands, all registered on `main`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from promptgen import __version__
from promptgen.errors import PromptgenError
from promptgen.paths import resolve_root
from promptgen.redact import redact
from promptgen.steps import report_failure

__all__ = ["main", "root_option", "json_option", "wait_option", "emit_json", "store_from", "write_json_file"]


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


class PromptgenGroup(click.Group):
    """Prints user errors as `error: ...` + `fix: ...` (no traceback) and maps them to exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PromptgenError, OSError, KeyboardInterrupt) as exc:
            code = report_failure(exc)
            if code is None:
                raise
            ctx.exit(code)


def root_option(function: Callable) -> Callable:
    return click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder holding prompts/ and cache/ (default: $PROMPTGEN_HOME or the current folder).")(function)


def json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def write_json_file(path: Path, value: Any) -> None:
    """A report written atomically (a reader never sees half of it), its folder created."""
    from promptgen.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=1) + "\n")


def store_from(root: Path | None, wait: bool = False):
    from promptgen.store import Store

    return Store(resolve_root(root), wait_for_writers=wait)


def wait_option(function: Callable) -> Callable:
    return click.option("--wait", is_flag=True,
                        help="If another run is writing the same set, wait for it (then reuse its answers) "
                             "instead of stopping.")(function)


@click.group(cls=PromptgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="promptgen")
@click.option("-v", "--verbose", is_flag=True, help="Log retries and cache decisions to stderr.")
def main(verbose: bool) -> None:
    """Turn class names into better zero-shot image classifiers: LLM descriptions, kept as
    versioned prompt sets."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("promptgen")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


from promptgen.cli import (audit, datasets, describe, differentiate, evaluate, heads, pipeline, runs,  # noqa: E402
                           sets, synonyms, transfer)

for module in (datasets, describe, differentiate, synonyms, sets, transfer, heads, evaluate, audit, pipeline, runs):
    for command in module.COMMANDS:
        main.add_command(command)
