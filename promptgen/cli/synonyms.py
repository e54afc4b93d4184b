"""`promptgen synonyms` and `promptgen rename`: the names each class goes by, and the best one (REAL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from promptgen.cli.common import emit_json, json_option, root_option, write_json_file
from promptgen.cli.describe import _report
from promptgen.cli.heads import clip_options, open_clip_model
from promptgen.cli.llm_options import llm_options, make_client
from promptgen.errors import ExitCode, PromptgenError
from promptgen.paths import cache_dir
from promptgen.name_counts import load_counts_set
from promptgen.rename import (FILTERS, FREQUENCY_MARGIN, SCORERS, ScoreContext, choose_names, counted_candidates,
                              default_margin, rating_job)
from promptgen.runlog import CommandRun, logged
from promptgen.steps import LLM_RUN_ONLY, pipeline_step
from promptgen.templates import load_template

COMMANDS = []


@pipeline_step(writes="set", run_only=LLM_RUN_ONLY)
@click.command("synonyms")
@click.argument("dataset")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list (see `promptgen describe --help`).")
@click.option("--source", type=click.Choice(["llm", "wordnet"]), default="wordnet", show_default=True,
              help="wordnet: the lemmas of each class's WordNet synset (offline); llm: ask --model.")
@click.option("--style", default="synonyms", show_default=True, help="List template for --source llm.")
@click.option("--set", "set_name", default="synonyms", show_default=True, help="Prompt-set name.")
@llm_options
@root_option
@json_option
@logged("synonyms")
def synonyms_command(dataset: str, classes_file: Path | None, source: str, style: str, set_name: str,
                     root: Path | None, as_json: bool, run: CommandRun, **values: Any) -> None:
    """Write the names each class of DATASET goes by (official name always included) as a new version."""
    from promptgen.stages.runner import run_stage
    from promptgen.stages.synonyms import synonyms_job, synonyms_wordnet

    store = run.store(wait=values["wait"])
    classes = store.classes(dataset, classes_file)
    if source == "wordnet":
        if values["dry_run"]:
            click.echo(f"wordnet source: {len(classes)} classes, 0 requests, no network, cost $0")
            return
        info, unmatched = synonyms_wordnet(classes, store, set_name)
        _report(info.manifest, info.records_path, as_json)
        if unmatched:
            click.echo(f"{len(unmatched)} classes matched no WordNet synset and keep only their official name: "
                       + ", ".join(repr(m.class_name) for m in unmatched[:10])
                       + (" ..." if len(unmatched) > 10 else ""), err=True)
        return
    if not values["model"]:
        raise PromptgenError("no --model given for --source llm",
                             "name a litellm model (e.g. --model openai/gpt-4o-mini), or use --source wordnet")
    template = load_template(style, store.root)
    if template.text_kind != "synonym":
        raise PromptgenError(f"template {template.ref} does not answer with names (its texts are {template.text_kind}s)",
                             "use a list template, such as --style synonyms")
    client = make_client(store.root, values, on_spend=run.on_spend)
    job = synonyms_job(classes, template, set_name, draw=values["draw"], answer_retries=values["answer_retries"])
    if values["dry_run"]:
        estimate = client.estimate(job.plan_requests(client))
        click.echo(f"{dataset}: {len(classes)} classes x {len(template.questions)} question(s) of {template.ref}")
        for line in estimate.lines():
            click.echo("  " + line)
        click.echo("  nothing was sent (--dry-run)")
        return
    result = run_stage(job, client, store, resume=values["resume"], resume_version=values["resume_version"])
    _report(result.manifest, result.info.records_path, as_json)
    if result.failures:
        click.echo(f"warning: {len(result.failures)} class(es) got no usable list; they keep their official name "
                   f"(listed under 'failures' in {result.info.manifest_path})", err=True)
        raise SystemExit(ExitCode.PARTIAL)


@pipeline_step(writes="file:.json", set_inputs=("set", "counts"), run_only=LLM_RUN_ONLY + ("device",))
@click.command("rename")
@click.argument("dataset")
@click.option("--set", "set_refs", multiple=True, help="Synonyms set SET[@vN]; repeat to merge sets (e.g. wordnet "
                                                           "and llm) [default: synonyms, none with --counts].")
@click.option("--counts", "counts_ref", help="Counts set SET[@vN] (caption counts per name: `import --format "
                                             "real-metrics` or `count-names`): its names are the candidates (with "
                                             "any --set given), scored by REAL's rule.")
@click.option("--scorer", default=None,
              help="counts (caption counts, --counts), frequency (wordfreq), clip (self-consistency margin), llm "
                   "(rated by --model), first (official) [default: counts with --counts, else frequency].")
@click.option("--filters", default=None,
              help="Comma-separated: ambiguous (another class's name or synonym), subset (words inside the "
                   "official name), clip (nearer another class); 'none' for no filter [default: subset with "
                   "--counts (REAL's rule), else ambiguous,subset].")
@click.option("--margin", type=float, default=None,
              help="Rename only when a synonym's score beats the official name's by more than this [default: "
                   f"{FREQUENCY_MARGIN} for frequency, 0 for the other scorers]. The frequency default is ours: on "
                   "ImageNet, wordfreq's renames agree with REAL's LAION-400M choices less often than the official "
                   "names at every smaller margin (71.6 % against 87.0 % at margin 0; benchmarks/README.md); at "
                   f"{FREQUENCY_MARGIN} it renames only names far more common than the official one.")
@click.option("--limit", type=int, default=20, show_default=True, help="Renamed classes to print (0: all).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rename map (every candidate with its score and verdict) as JSON, for `real` heads.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path))
@clip_options
@llm_options
@root_option
@json_option
@logged("rename")
def rename_command(dataset: str, set_refs: tuple[str, ...], counts_ref: str | None, scorer: str | None,
                   filters: str | None, margin: float | None, limit: int, output: Path | None, classes_file: Path | None,
                   clip_model: str, pretrained: str, seed: int, device: str, root: Path | None, as_json: bool,
                   run: CommandRun, **values: Any) -> None:
    """Choose each class's most recognisable name from synonyms sets or a counts set and print the rename table."""
    from promptgen.stages.synonyms import load_candidates, merge_candidates

    store = run.store(wait=values["wait"])
    classes = store.classes(dataset, classes_file)
    # with caption counts the defaults are REAL's: its scorer and its one filter
    scorer = scorer or ("counts" if counts_ref else "frequency")
    filters = filters if filters is not None else ("subset" if counts_ref else "ambiguous,subset")
    margin = default_margin(scorer) if margin is None else margin
    if scorer not in SCORERS:
        raise PromptgenError(f"unknown scorer {scorer!r}", f"scorers: {', '.join(sorted(SCORERS))}")
    if scorer == "counts" and not counts_ref:
        raise PromptgenError("the counts scorer needs caption counts: no --counts given",
                             f"give --counts SET, a counts set of {dataset} (`promptgen import {dataset} FILE "
                             f"--format real-metrics` or `promptgen count-names {dataset}`)")
    chosen_filters = tuple(f.strip() for f in filters.split(",") if f.strip() and f.strip() != "none")
    unknown = sorted(set(chosen_filters) - set(FILTERS))
    if unknown:
        raise PromptgenError(f"unknown filter(s) {', '.join(unknown)}", f"filters: {', '.join(FILTERS)}, or none")
    loaded = [load_candidates(store, ref, classes) for ref in set_refs or (() if counts_ref else ("synonyms",))]
    counts = None
    if counts_ref:
        counted, counts_info = load_counts_set(store, counts_ref, classes)
        from_counts, counts = counted_candidates(classes, counted)
        loaded.insert(0, (from_counts, counts_info))
    candidates, refs = merge_candidates(loaded)
    encoder = client = None
    if scorer == "clip" or "clip" in chosen_filters:
        from promptgen.clip.embed import TextEncoder

        encoder = TextEncoder(open_clip_model(store.root, clip_model, pretrained, seed, device), cache_dir(store.root))
    if scorer == "llm":
        if not values["model"]:
            raise PromptgenError("the llm scorer needs --model", "e.g. --model openai/gpt-4o-mini")
        client = make_client(store.root, values, on_spend=run.on_spend)
        if values["dry_run"]:
            requests = rating_job(ScoreContext(classes, candidates, client=client, root=store.root,
                                               draw=values["draw"])).plan_requests(client)
            click.echo(f"{dataset}: {len(requests)} rating question(s), one per class")
            for line in client.estimate(requests).lines():
                click.echo("  " + line)
            click.echo("  nothing was sent (--dry-run)")
            return
        client.check_credentials()
    elif values["dry_run"]:
        click.echo(f"the {scorer} scorer asks no LLM: nothing to price")
        return
    result = choose_names(classes, candidates, scorer, filters=chosen_filters, margin=margin, encoder=encoder,
                          client=client, root=store.root, draw=values["draw"], answer_retries=values["answer_retries"],
                          counts=counts)
    report = {**result.to_json(), "dataset": dataset, "sets": refs, **({"counts": refs[0]} if counts_ref else {})}
    if output:
        write_json_file(output, report)
    if as_json:
        emit_json(report)
        return
    renamed = result.renamed
    click.echo(f"{dataset}: {len(renamed)} of {len(classes)} classes renamed by {scorer} "
               f"(filters: {', '.join(chosen_filters) or 'none'}; names from {', '.join(refs)})")
    rejected = {k: v for k, v in result.rejected.items() if v}
    if rejected:
        click.echo("  candidates dropped: " + ", ".join(f"{v} {k}" for k, v in rejected.items()))
        collisions = [(row["official"], c["name"], c["rejected"]) for row in result.rows for c in row["candidates"]
                      if (c["rejected"] or "").startswith("ambiguous")]
        for official, name, reason in collisions[:5]:
            click.echo(f"    {name!r} for {official!r}: {reason}")
    shown = renamed if limit == 0 else renamed[:limit]
    if shown:
        width = max(len(r["official"]) for r in shown)
        for row in shown:
            scores = {c["name"]: c["score"] for c in row["candidates"]}
            click.echo(f"  {row['official'].ljust(width)} -> {row['chosen']}  "
                       f"({scores[row['official']]:.2f} -> {scores[row['chosen']]:.2f})")
        if len(renamed) > len(shown):
            click.echo(f"  ... and {len(renamed) - len(shown)} more (--limit 0 shows all, --json every candidate)")
    report_llm = result.scorer_report
    if report_llm.get("failed") or report_llm.get("classes_unrated"):
        click.echo(f"warning: {len(report_llm.get('classes_unrated', []))} class(es) got no usable rating and keep "
                   f"their official name ({len(report_llm.get('failed', []))} request(s) failed); see "
                   f"scorer_report in --json", err=True)
    if output:
        click.echo(f"wrote {output}")
    if report_llm.get("failed"):
        raise SystemExit(ExitCode.PARTIAL)


COMMANDS += [synonyms_command, rename_command]
