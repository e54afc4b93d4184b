"""`promptgen` command line: one module per group of commands, all registered on `main`.

Command modules take their shared options from promptgen.cli.common, and import promptgen.clip,
promptgen.audit (torch) and promptgen.stages (the LLM client) inside the commands, so that
`promptgen --help` loads none of them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from promptgen.cli import (audit, counts, datasets, describe, differentiate, evaluate, heads, pipeline, runs, sets,
                           synonyms, transfer)
from promptgen.errors import PromptgenError
from promptgen.redact import redact
from promptgen.steps import report_failure
from promptgen.version import __version__

__all__ = ["main"]


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


for module in (datasets, describe, differentiate, synonyms, counts, sets, transfer, heads, evaluate, audit, pipeline, runs):
    for command in module.COMMANDS:
        main.add_command(command)
