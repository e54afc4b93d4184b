"""`promptgen count-names`: how many captions of a corpus mention each name of each class (REAL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.cli.llm_options import llm_options, make_client
from promptgen.errors import ExitCode, PromptgenError
from promptgen.runlog import CommandRun, logged
from promptgen.steps import LLM_RUN_ONLY, pipeline_step

COMMANDS = []

_DRY_RUN_CAPTION = "x" * 200  # the price of --relevance is an upper bound: N captions of 200 characters a name


@pipeline_step(writes="set", set_inputs=("names",), path_like=("captions",),
               run_only=LLM_RUN_ONLY + ("workers", "spark-master", "batch-rows"))
@click.command("count-names")
@click.argument("dataset")
@click.option("--captions", "inputs", multiple=True, required=True,
              help="Caption files: paths, globs, folders or fsspec URLs (s3://..., where its package is installed); "
                   "parquet, CSV, TSV, JSONL or text (one caption a line), .gz/.bz2/.xz/.zst too. Repeat for more.")
@click.option("--column", default="TEXT", show_default=True, help="The caption column (LAION's is TEXT).")
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv", "tsv", "jsonl", "text"]),
              help="The files' format, when their names do not tell.")
@click.option("--names", "set_refs", multiple=True,
              help="Synonyms set SET[@vN] whose names are counted; repeat to merge sets [default: synonyms].")
@click.option("--engine", type=click.Choice(["embedded", "spark"]), default="embedded", show_default=True,
              help="embedded: worker processes on this machine; spark: a Spark cluster (pip install pyspark).")
@click.option("--workers", type=click.IntRange(min=0), default=0,
              help="embedded: worker processes [default: every core].")
@click.option("--spark-master", default="local[*]", show_default=True,
              help="spark: local[*], local[N], spark://HOST:PORT, k8s://... or yarn.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=65_536, show_default=True,
              help="Captions read and matched at a time per worker (bounds memory).")
@click.option("--strict", is_flag=True, help="Fail on an unreadable file instead of skipping and counting it.")
@click.option("--relevance", type=click.IntRange(min=0), default=0, show_default=True,
              help="Ask --model whether up to N sampled matching captions per name are about the class; "
                   "counts are kept raw and scaled by the share of yes (REAL).")
@click.option("--template", "template_name", default="caption-relevance", show_default=True,
              help="Query template of the relevance question.")
@click.option("--set", "set_name", default="counts", show_default=True, help="Counts set to write.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path))
@llm_options
@root_option
@json_option
@logged("count-names")
def count_names_command(dataset: str, inputs: tuple[str, ...], column: str, file_format: str | None,
                        set_refs: tuple[str, ...], engine: str, workers: int, spark_master: str, batch_rows: int,
                        strict: bool, relevance: int, template_name: str, set_name: str, classes_file: Path | None,
                        root: Path | None, as_json: bool, run: CommandRun, **values: Any) -> None:
    """Count, for every name of every class of DATASET (its synonyms sets), the captions that mention
    it, by REAL's rule, and write them as a counts set (prompts/DATASET/counts/vN.jsonl)."""
    from promptgen.counting.job import CountSettings, plan_count, run_count
    from promptgen.stages.synonyms import load_candidates, merge_candidates
    from promptgen.templates import load_template

    store = run.store(wait=values["wait"])
    classes = store.classes(dataset, classes_file)
    candidates, refs = merge_candidates([load_candidates(store, ref, classes) for ref in set_refs or ("synonyms",)])
    settings = CountSettings(list(inputs), column, file_format, engine, spark_master, workers, batch_rows, strict,
                             relevance, set_name)
    client = template = None
    if relevance:
        if not values["model"]:
            raise PromptgenError("--relevance needs --model", "name a litellm model (e.g. --model openai/gpt-4o-mini) "
                                                              "and --api-base for a local server")
        template = load_template(template_name, store.root)
        client = make_client(store.root, values, on_spend=run.on_spend)
    plan = plan_count(classes, candidates, refs, settings)
    if values["dry_run"]:
        _dry_run(plan, client, template, values)
        return
    if client is not None:
        client.check_credentials()
    bar = _Bar(values["no_progress"] or as_json)
    try:
        info, summary = run_count(plan, store, resume=values["resume"], resume_version=values["resume_version"],
                                  client=client, template=template, draw=values["draw"],
                                  answer_retries=values["answer_retries"], on_part=bar)
    finally:
        bar.close()
    if as_json:
        emit_json({"ref": str(info.ref), "records": str(info.records_path), "manifest": info.manifest})
    else:
        _print_summary(info, summary)
    if info.manifest.get("status") != "complete":
        raise SystemExit(ExitCode.PARTIAL)


class _Bar:
    """Parts counted and captions read; shown from the first part on, so a count that fails before
    scanning (a Spark master that does not answer) prints no empty bar."""

    def __init__(self, quiet: bool) -> None:
        self._quiet, self._rows = quiet, 0
        self._tqdm: Any = None

    def __call__(self, result: Any, done: int, total: int) -> None:
        if self._tqdm is None:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, unit="part", desc="counting", disable=self._quiet, dynamic_ncols=True)
        self._rows += result.rows
        self._tqdm.n = done
        self._tqdm.set_postfix(captions=f"{self._rows:,}", refresh=False)
        self._tqdm.refresh()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def _dry_run(plan: Any, client: Any, template: Any, values: dict) -> None:
    known = sum(p.rows or 0 for p in plan.parts)
    click.echo(f"{plan.classes.dataset}: {len(plan.names)} names of {len(plan.classes)} classes in "
               f"{len(plan.files)} file(s), {len(plan.parts)} part(s)"
               + (f", {known:,} rows known from parquet footers" if known else "")
               + (f"; {len(plan.unreadable_files)} file(s) cannot be opened" if plan.unreadable_files else ""))
    if client is None:
        click.echo("  counting asks no LLM: nothing to price; nothing was scanned (--dry-run)")
        return
    from promptgen.stages.relevance import RelevanceJob

    samples = {(c, cand.name): [_DRY_RUN_CAPTION] * plan.settings.relevance
               for c, per_class in enumerate(plan.candidates) for cand in per_class}
    requests = RelevanceJob(plan.classes, template, samples, draw=values["draw"]).plan_requests(client)
    click.echo(f"  relevance, at most: {len(requests)} questions ({plan.settings.relevance} captions x "
               f"{len(samples)} names, each caption taken as 200 characters; names with fewer matches ask fewer)")
    for line in client.estimate(requests).lines():
        click.echo("  " + line)
    click.echo("  nothing was scanned or sent (--dry-run)")


def _print_summary(info: Any, summary: dict) -> None:
    manifest = info.manifest
    corpus, counting = manifest["corpus"], manifest["counting"]
    click.echo(f"{info.ref} ({manifest['status']}): {counting['names']} names of {manifest['counts']['classes']} "
               f"classes counted in {corpus['rows_scanned']:,} captions from {len(corpus['files'])} file(s) "
               f"[{counting['engine']}, {counting['workers']} worker(s), {counting['seconds_this_run']:.1f} s]")
    if counting["parts_resumed"]:
        click.echo(f"  resumed: {counting['parts_resumed']} of {counting['parts']} parts were already counted; "
                   f"{counting['parts_this_run']} scanned now")
    if corpus["files_unreadable"] or corpus["rows_unreadable"]:
        click.echo(f"warning: {corpus['files_unreadable']} file(s) unreadable, {corpus['rows_unreadable']:,} row(s) "
                   f"skipped; see corpus.files in {info.manifest_path}", err=True)
        if corpus["files_unreadable"]:
            click.echo("  the set is partial: rerun with --resume to read those files again (the parts already "
                       "counted are kept), or --resume without them", err=True)
        for file in corpus["files"]:
            if file.get("error"):
                click.echo(f"  {file['path']}: {file['error']}", err=True)
    if corpus["rows_scanned"] == 0:
        click.echo("warning: no caption was read: every count is 0", err=True)
    relevance = manifest.get("relevance")
    if relevance:
        click.echo(f"  relevance: {relevance['judged']} captions judged for {relevance['names_checked']} names, "
                   f"{relevance['relevant']} about their class; {relevance['unanswered']} unanswered")
    click.echo(f"  records: {info.records_path}")


COMMANDS += [count_names_command]
