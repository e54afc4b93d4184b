"""`promptgen audit`: a dataset's prompt sets checked and reported as HTML, Markdown and JSON."""

from __future__ import annotations

import os
from pathlib import Path

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.cli.heads import clip_options, open_clip_model
from promptgen.errors import PromptgenError
from promptgen.paths import cache_dir
from promptgen.runlog import CommandRun, logged
from promptgen.steps import pipeline_step
from promptgen.store import SetRef

COMMANDS = []


def _refs(texts: tuple[str, ...], dataset: str) -> list:
    return [SetRef.parse(part.strip(), dataset) for text in texts for part in text.split(",") if part.strip()]


def check_writable(directory: Path) -> None:
    """The report folder, made and tried before any work, so a bad -o fails at once."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".audit-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PromptgenError(f"cannot write the reports to {directory}: {exc.strerror or exc}",
                             "give -o a folder you can write to") from None


@pipeline_step(writes="dir", set_inputs=("sets", "against"), run_only=("device",))
@click.command("audit")
@click.argument("dataset")
@click.option("--sets", "set_specs", multiple=True,
              help="SET[@vN] to audit, comma-separated or repeated (default: every set, latest complete version).")
@click.option("--eval", "eval_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results from `promptgen eval ... -o FILE`: per-class accuracy, deltas, confused pairs; repeatable.")
@click.option("--baseline", help="The head in --eval results that deltas are taken against (default: the first).")
@click.option("--against", "against_specs", multiple=True,
              help="SET@vM to diff against the audited version of the same set; repeatable.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.html, report.md and audit.json (default: ROOT/reports/DATASET).")
@clip_options
@click.option("--no-embed", is_flag=True,
              help="Skip the checks that need the text tower (near-duplicates, closeness to other names, "
                   "diversity, similar pairs); tokens are then counted with CLIP's BPE at 77.")
@click.option("--min-texts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Flag classes with fewer texts than this.")
@click.option("--near-duplicate", "near_duplicate", type=click.FloatRange(-1, 1), default=0.95, show_default=True,
              help="Cosine at or above which texts of different classes count as near-duplicates.")
@click.option("--top", type=click.IntRange(min=1), default=50, show_default=True,
              help="Rows per list in the reports; audit.json keeps every flagged text (of near-duplicate "
                   "pairs, the count and the closest --top).")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path))
@root_option
@json_option
@logged("audit")
def audit_command(dataset: str, set_specs: tuple[str, ...], eval_files: tuple[Path, ...], baseline: str | None,
                  against_specs: tuple[str, ...], output: Path | None, clip_model: str, pretrained: str, seed: int,
                  device: str, no_embed: bool, min_texts: int, near_duplicate: float, top: int,
                  classes_file: Path | None, root: Path | None, as_json: bool, run: CommandRun) -> None:
    """Audit DATASET's prompt sets: texts kept and dropped, leaks of other class names, texts shared
    by classes, over-long texts, diversity, confusion and, with --eval, accuracy per class."""
    from promptgen.audit import AuditOptions, TextModel, load_results, run_audit, summary_text, write_reports
    from promptgen.audit.checks import token_counter

    store = run.store()
    classes = store.classes(dataset, classes_file)
    refs = _refs(set_specs, dataset) or None  # None: every set, skipping those that cannot be audited
    against = _refs(against_specs, dataset)
    evaluations = [load_results(path) for path in eval_files]
    directory = output or store.root / "reports" / dataset

    def load_text_model() -> TextModel:  # called by run_audit once every input has been checked
        check_writable(directory)
        if no_embed:
            import open_clip

            return TextModel(None, token_counter(open_clip.get_tokenizer("ViT-B-32")), 77)
        from promptgen.clip.embed import TextEncoder

        clip = open_clip_model(store.root, clip_model, pretrained, seed, device)
        encoder = TextEncoder(clip, cache_dir(store.root), show_progress=not as_json)
        return TextModel(encoder.encode_normalized, token_counter(clip.tokenizer), clip.context_length, clip.describe())

    audit = run_audit(store, classes, refs, load_text_model, evaluations=evaluations, against=against,
                      options=AuditOptions(min_texts=min_texts, near_duplicate_cosine=near_duplicate, top=top,
                                           baseline=baseline))
    written = write_reports(audit, directory)
    if as_json:
        emit_json({"files": {name: str(path) for name, path in written.items()}, "totals": audit["totals"],
                   "sets": [{"ref": s["ref"], **s["summary"]} for s in audit["sets"]]})
        return
    click.echo(summary_text(audit, written))


COMMANDS.append(audit_command)
