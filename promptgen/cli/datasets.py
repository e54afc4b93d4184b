"""`promptgen datasets`, `promptgen templates`, `promptgen paths`: what there is and where."""

from __future__ import annotations

from pathlib import Path

import click

from promptgen.classes import list_datasets, load_dataset
from promptgen.cli.common import emit_json, json_option, root_option, store_from
from promptgen.paths import BUILTIN_PROMPTS_DIR, cache_dir, prompts_dir, resolve_root, user_templates_dir
from promptgen.templates import list_templates

COMMANDS = []


@click.command("datasets")
@root_option
@json_option
def datasets_command(root: Path | None, as_json: bool) -> None:
    """List the built-in datasets (and those with a stored class list) and their class counts."""
    rows = []
    for name in list_datasets():
        classes = load_dataset(name)
        rows.append({"dataset": name, "classes": len(classes), "title": classes.title, "source": classes.source,
                     "builtin": True})
    store = store_from(root)
    for path in sorted(store.prompts.glob("*/classes.json")):
        if path.parent.name not in {r["dataset"] for r in rows}:
            classes = store.classes(path.parent.name)
            rows.append({"dataset": classes.dataset, "classes": len(classes), "title": classes.title,
                         "source": classes.source, "builtin": False})
    if as_json:
        emit_json(rows)
        return
    width = max(len(r["dataset"]) for r in rows)
    for row in rows:
        click.echo(f"{row['dataset']:<{width}}  {row['classes']:>5}  {row['title']}")


@click.command("templates")
@root_option
@json_option
def templates_command(root: Path | None, as_json: bool) -> None:
    """List the LLM query templates (built-in and your own in prompts/templates/)."""
    templates = list_templates(resolve_root(root))
    if as_json:
        emit_json([{**t.manifest_entry(), "description": t.description, "sampling": t.sampling} for t in templates])
        return
    width = max((len(t.ref) for t in templates), default=0)
    for t in templates:
        click.echo(f"{t.ref:<{width}}  {t.kind:<5} {len(t.questions)} question(s), n={t.n}, {t.parser:<9} {t.description}")


@click.command("paths")
@root_option
@json_option
def paths_command(root: Path | None, as_json: bool) -> None:
    """Show where prompt sets, caches and templates are read and written."""
    resolved = resolve_root(root)
    paths = {"root": resolved, "prompts": prompts_dir(resolved), "cache": cache_dir(resolved),
             "llm_cache": cache_dir(resolved) / "llm", "user_templates": user_templates_dir(resolved),
             "builtin_prompts": BUILTIN_PROMPTS_DIR}
    if as_json:
        emit_json({k: str(v) for k, v in paths.items()})
        return
    for key, value in paths.items():
        click.echo(f"{key:<16} {value}")


COMMANDS.extend([datasets_command, templates_command, paths_command])
