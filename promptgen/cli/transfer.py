"""`promptgen import` and `promptgen export`: prompt sets in and out of other tools' formats."""

from __future__ import annotations

from pathlib import Path

import click

from promptgen.classes import ClassList
from promptgen.cli.common import emit_json, json_option, root_option, store_from, wait_option
from promptgen.errors import PromptgenError
from promptgen.formats import EXPORT_FORMATS, IMPORT_FORMATS, export_version, import_fudd_file, import_prompt_file
from promptgen.runlog import CommandRun, logged
from promptgen.steps import pipeline_step
from promptgen.store import SetRef, Store

COMMANDS = []


@pipeline_step(writes="set", run_only=("wait",))
@click.command("import")
@click.argument("dataset")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(IMPORT_FORMATS)), required=True,
              help="cupl: {class: [sentences]}; dclip: {class: [descriptors]} (DCLIP/WaffleCLIP); "
                   "fudd: FuDD's differential descriptions {\"i_j\": {...}} (default set: differential); "
                   "real-metrics: REAL's metrics-*.json {\"label\": {\"name\": ..., \"alternates\": {name: "
                   "count}}} as a counts set for `rename --counts` and the real head (default set: counts).")
@click.option("--set", "set_name", help="Prompt-set name (default: the format name, or as said under --format).")
@click.option("--match", type=click.Choice(["name", "loose", "order"]), default="name", show_default=True,
              help="Keys to classes: exact name; loose (case, spaces, _ and - ignored when unambiguous); "
                   "or position (files in label order with other names). real-metrics: always by label "
                   "index, the file's official names checked loosely against the class list.")
@click.option("--strict", is_flag=True, help="Fail on any unmatched, missing, empty or duplicated key.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list, for a dataset promptgen does not know yet.")
@click.option("--notice", help="Licence or provenance note to keep in the manifest.")
@click.option("--dedupe", is_flag=True, help="cupl, dclip: keep each text once per class. By default every text is "
                                             "kept as published, repeats included, as the authors' heads count them.")
@click.option("--class-names", "fudd_class_names", type=click.Path(dir_okay=False, path_type=Path),
              help="fudd: the file's own class list (FuDD's DATASET_class_names.json), checked against DATASET's.")
@click.option("--filter-attributes", is_flag=True,
              help="fudd: drop the attributes the differentiate stage's checks reject (swapped, identical, naming "
                   "another class). By default every attribute is kept as published and the flagged ones counted.")
@wait_option
@root_option
@json_option
@logged("import")
def import_command(dataset: str, file: Path, fmt: str, set_name: str | None, match: str, strict: bool,
                   classes_file: Path | None, notice: str | None, dedupe: bool, fudd_class_names: Path | None,
                   filter_attributes: bool, wait: bool, root: Path | None, as_json: bool, run: CommandRun) -> None:
    """Import a CuPL, DCLIP, FuDD or REAL metrics JSON FILE as a new prompt-set version of DATASET."""
    store = run.store(wait=wait)
    classes = store.classes(dataset, classes_file)
    if fmt == "real-metrics":
        _import_real_metrics(store, classes, file, set_name, match, notice, as_json)
        return
    if fmt == "fudd":
        info, report = import_fudd_file(store, classes, file, set_name or "differential", strict=strict, notice=notice,
                                        class_names=fudd_class_names, filter_attributes=filter_attributes)
    else:
        info, report = import_prompt_file(store, classes, file, fmt, set_name or fmt, match=match, strict=strict,
                                          notice=notice, dedupe=dedupe)
    if as_json:
        emit_json(info.manifest)
        return
    counts = info.manifest["counts"]
    click.echo(f"wrote {info.records_path}: {counts['records']} texts for "
               f"{counts['classes'] - counts['classes_without_texts']}/{counts['classes']} classes "
               f"({report.matched} {'pairs' if fmt == 'fudd' else 'keys matched by ' + match})")
    for reason, count in info.manifest.get("rejected", {}).items():
        if count:
            action = "dropped" if info.manifest.get("filter_attributes") else \
                "kept as published (--filter-attributes drops them)"
            click.echo(f"  {count} attribute(s) flagged {reason}: {action}", err=True)
    for line in report.problems:
        click.echo(f"  {line}", err=True)
    if report.renamed:
        click.echo(f"  {len(report.renamed)} keys matched by {match} have another name, e.g. "
                   + ", ".join(f"{r['key']!r} -> {r['class_name']!r}" for r in report.renamed[:4]), err=True)
    differ = (info.manifest.get("import") or {}).get("class_names_differ") or []
    if differ:
        click.echo(f"  {len(differ)} classes have another name in {fudd_class_names.name}, which FuDD's templates "
                   "use: " + ", ".join(f"{d['fudd']!r} for {d['ours']!r}" for d in differ[:4]), err=True)


def _import_real_metrics(store: Store, classes: ClassList, file: Path, set_name: str | None, match: str,
                         notice: str | None, as_json: bool) -> None:
    from promptgen.formats.real_metrics import import_real_metrics

    if match == "order":
        raise PromptgenError("--match order does not apply to real-metrics: its keys are label indices already",
                             "drop --match; the file's official names are checked loosely against the class list")
    info, section = import_real_metrics(store, classes, file, set_name or IMPORT_FORMATS["real-metrics"]["set"],
                                        notice=notice)
    if as_json:
        emit_json(info.manifest)
        return
    counts, check = info.manifest["counts"], section["real_rule"]
    click.echo(f"wrote {info.records_path}: {counts['records']} names with caption counts for {counts['classes']} "
               f"classes (a counts set: `promptgen rename {classes.dataset} --counts {info.set}@v{info.version}`)")
    click.echo(f"  REAL's rule on these counts gives the file's most_common_name for {check['reproduced']} of "
               f"{check['checked']} classes (ignoring case)")
    for row in check["differs"][:5]:
        click.echo(f"    {row['class_name']!r}: the rule gives {row['rule']!r}, the file says {row['published']!r}")
    if len(check["differs"]) > 5:
        click.echo(f"    ... and {len(check['differs']) - 5} more (--json lists them)")
    if section["official_names_absent"]:
        click.echo(f"  {len(section['official_names_absent'])} official name(s) are not among the file's names; "
                   "they count 0 (REAL's own lookup fails on them): " + ", ".join(repr(r["class_name"]) for r in section["official_names_absent"][:5]),
                   err=True)


@click.command("export")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(sorted(EXPORT_FORMATS)), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--benchmark-key", help="clip-benchmark: the dataset key (default: CLIP_benchmark's name for it).")
@click.option("--fill-empty", is_flag=True, help="clip-benchmark: give classes without texts 'a photo of a {c}.'")
@root_option
@json_option
def export_command(ref: str, fmt: str, output: Path, benchmark_key: str | None, fill_empty: bool,
                   root: Path | None, as_json: bool) -> None:
    """Export REF (DATASET/SET[@vN]) as cupl, dclip, clip-benchmark or fudd JSON."""
    store = store_from(root)
    info = store.resolve(SetRef.parse(ref))
    written = export_version(store, info, fmt, output, benchmark_key=benchmark_key, fill_empty=fill_empty)
    if as_json:
        emit_json({"ref": str(info.ref), "format": fmt, "files": [str(p) for p in written]})
        return
    click.echo(f"exported {info.ref} as {fmt}: " + ", ".join(str(p) for p in written))
    if fmt == "clip-benchmark":
        click.echo(f"  use: clip_benchmark eval --custom_template_file {written[0]} "
                   f"--custom_classname_file {written[1]} ...")


COMMANDS.extend([import_command, export_command])
