"""Options and helpers shared by the command modules.

They live apart from promptgen.cli, which imports every command module to register it, so that
a command module never has to import the package that imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from promptgen.fileio import atomic_write_text
from promptgen.paths import resolve_root
from promptgen.store import Store

__all__ = ["root_option", "json_option", "wait_option", "emit_json", "store_from", "write_json_file", "IMAGE_SPECS"]

# what --images takes (promptgen.clip.images.open_image_set), in every command that reads images
IMAGE_SPECS = ("an ImageFolder directory, a CSV of path,label, fashion-mnist[:test|train], wds:DIR/{0..9}.tar, "
               "hf:PATH[:SPLIT][?image=COL&label=COL] or clip_benchmark:NAME:ROOT[:SPLIT]")


def root_option(function: Callable) -> Callable:
    return click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder holding prompts/ and cache/ (default: $PROMPTGEN_HOME or the current folder).")(function)


def json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def write_json_file(path: Path, value: Any) -> None:
    """A report written atomically (a reader never sees half of it), its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=1) + "\n")


def store_from(root: Path | None, wait: bool = False) -> Store:
    return Store(resolve_root(root), wait_for_writers=wait)


def wait_option(function: Callable) -> Callable:
    return click.option("--wait", is_flag=True,
                        help="If another run is writing the same set, wait for it (then reuse its answers) "
                             "instead of stopping.")(function)
