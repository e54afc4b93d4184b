"""`promptgen versions` and `promptgen show`: look at prompt sets and their records."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from promptgen.cli.common import emit_json, json_option, root_option, store_from
from promptgen.errors import PromptgenError
from promptgen.store import SetRef

COMMANDS = []


def _version_row(info) -> dict:
    m = info.manifest
    model = m.get("model") or {}
    return {"ref": str(info.ref), "set": info.set, "version": info.version, "status": info.status,
            "stage": m.get("stage"), "source": m.get("source"),
            "model": model.get("model") if isinstance(model, dict) else model,
            "template": (m.get("template") or {}).get("ref") or (m.get("import") or {}).get("format"),
            "records": (m.get("counts") or {}).get("records"), "cost_usd": m.get("cost_usd"),
            "created": m.get("created"), "parent": m.get("parent"), "path": str(info.records_path)}


@click.command("versions")
@click.argument("dataset")
@click.option("--set", "set_name", help="Only this set.")
@root_option
@json_option
def versions_command(dataset: str, set_name: str | None, root: Path | None, as_json: bool) -> None:
    """List the prompt-set versions of DATASET."""
    store = store_from(root)
    sets = [set_name] if set_name else store.list_sets(dataset)
    rows = [_version_row(info) for name in sets for info in store.list_versions(dataset, name)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no prompt sets for {dataset} under {store.prompts}")
        return
    for row in rows:
        cost = f"${row['cost_usd']:.4f}" if isinstance(row["cost_usd"], (int, float)) else "-"
        click.echo(f"{row['ref']:<36} {row['status']:<11} {str(row['records']):>6} texts  {row['source'] or '':<8} "
                   f"{row['template'] or '':<14} {row['model'] or '':<24} {cost:>9}  {row['created'] or ''}")


@click.command("show")
@click.argument("ref")
@click.option("--class", "class_name", help="Only this class (exact name).")
@click.option("--id", "record_ids", multiple=True, help="Only the record with this id (as audit reports show); repeatable.")
@click.option("--manifest", is_flag=True, help="Print the manifest instead of the records.")
@click.option("--limit", type=int, default=0, help="At most this many texts per class (0: all).")
@root_option
@json_option
def show_command(ref: str, class_name: str | None, record_ids: tuple[str, ...], manifest: bool, limit: int, root: Path | None,
                 as_json: bool) -> None:
    """Show a prompt set: REF is DATASET/SET[@vN] (latest complete version without @vN)."""
    store = store_from(root)
    parsed = SetRef.parse(ref)
    if parsed.set is None:
        sets = store.list_sets(parsed.dataset)
        if as_json:
            emit_json({"dataset": parsed.dataset, "sets": sets})
        else:
            click.echo(f"{parsed.dataset}: {', '.join(sets) if sets else 'no prompt sets'}")
        return
    info = store.resolve(parsed)
    if manifest:
        emit_json(info.manifest)
        return
    records = store.read_records(info)
    if record_ids:
        known = {r["id"] for r in records}
        unknown = [i for i in record_ids if i not in known]
        if unknown:
            raise PromptgenError(f"{info.ref} has no record {', '.join(map(repr, unknown))}",
                                 "copy the id from the audit report or `promptgen show --json`; ids belong to one "
                                 "set version")
        records = [r for r in records if r["id"] in set(record_ids)]
    if class_name is not None:
        names = sorted({r["class_name"] for r in records} | set(store.classes(info.dataset).names))
        if class_name not in names:
            close = difflib.get_close_matches(class_name, names, n=3)
            raise PromptgenError(f"{info.dataset} has no class {class_name!r}",
                                 f"did you mean {', '.join(map(repr, close))}?" if close else
                                 f"see the class names with `promptgen show {info.ref} --json`")
        # a differential set shows whole pairs: the class's sentences and what they were contrasted with
        records = [r for r in records if r["class_name"] == class_name or r.get("other_class_name") == class_name]
    if limit:
        shown: dict[int, int] = {}
        kept = []
        for record in records:
            shown[record["class_index"]] = shown.get(record["class_index"], 0) + 1
            if shown[record["class_index"]] <= limit:
                kept.append(record)
        records = kept
    if as_json:
        emit_json(records)
        return
    click.echo(f"# {info.ref}  ({info.status}, {info.manifest.get('stage')}, {len(records)} texts shown)")
    if records and all("pair" in r for r in records):
        _show_pairs(records)
        return
    current = None
    for record in records:
        if record["class_index"] != current:
            current = record["class_index"]
            click.echo(f"\n[{current}] {record['class_name']}")
        origin = record.get("template") or record.get("stage")
        click.echo(f"  - {record['text']}  ({origin}; {record['id']})")


def _show_pairs(records: list[dict]) -> None:
    """Differential records by pair and attribute: each class's sentence side by side."""
    current = None
    for record in records:
        if record["pair"] != current:
            current = record["pair"]
            i, j = record["pair_classes"]
            names = {record["class_index"]: record["class_name"], record["other_class_index"]: record["other_class_name"]}
            click.echo(f"\n[{current}] {names[i]} / {names[j]}")
        click.echo(f"  - {record['attribute']}: [{record['class_name']}] {record['text']}  ({record['id']})")


COMMANDS.extend([versions_command, show_command])
