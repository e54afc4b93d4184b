"""`promptgen describe`: ask an LLM (or WordNet) what each class looks like."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.cli.llm_options import llm_options, make_client
from promptgen.errors import ExitCode, PromptgenError
from promptgen.messages import shorten
from promptgen.runlog import CommandRun, logged
from promptgen.steps import LLM_RUN_ONLY, pipeline_step
from promptgen.templates import load_template

COMMANDS = []


@pipeline_step(writes="set", run_only=LLM_RUN_ONLY)
@click.command("describe")
@click.argument("dataset")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list: one name per line (or id<TAB>name), or a JSON list.")
@click.option("--source", type=click.Choice(["llm", "wordnet"]), default="llm", show_default=True,
              help="llm asks --model; wordnet uses WordNet glosses offline (no key, no network).")
@click.option("--style", default="cupl", show_default=True,
              help="Query template: cupl, cupl-base, dclip, your own NAME[@vN] in prompts/templates/, or a JSON file.")
@click.option("--set", "set_name", help="Prompt-set name (default: the style, or 'wordnet').")
@click.option("--split-samples", is_flag=True, help="Get n samples from n requests even if the provider supports n.")
@click.option("--dedupe", is_flag=True, help="Keep each text once per class. By default every repeat is kept, as "
                                             "CuPL and DCLIP count it (docs/methods.md); the audit reports repeats.")
@llm_options
@root_option
@json_option
@logged("describe")
def describe_command(dataset: str, classes_file: Path | None, source: str, style: str, set_name: str | None,
                     split_samples: bool, dedupe: bool, root: Path | None, as_json: bool, run: CommandRun, **values: Any) -> None:
    """Write descriptions of every class of DATASET as a new prompt-set version."""
    from promptgen.stages.describe import DescribeJob, describe_wordnet, plan_requests, run_describe

    store = run.store(wait=values["wait"])
    classes = store.classes(dataset, classes_file)
    model, dry_run = values["model"], values["dry_run"]
    if source == "wordnet":
        if dry_run:
            click.echo(f"wordnet source: {len(classes)} classes, 0 requests, no network, cost $0")
            return
        info, unmatched, ambiguous = describe_wordnet(classes, store, set_name or "wordnet")
        _report(info.manifest, info.records_path, as_json)
        if unmatched:
            click.echo(f"{len(unmatched)} classes matched no WordNet synset and have no text: "
                       + ", ".join(repr(m.class_name) for m in unmatched[:10])
                       + (" ..." if len(unmatched) > 10 else ""), err=True)
        if ambiguous:
            click.echo(f"{len(ambiguous)} classes have several WordNet senses and the chosen one may be wrong "
                       f"(all listed under 'matching' in {info.manifest_path.name}; pin one with an "
                       f"n########<TAB>name line in a --classes file): "
                       + "; ".join(f"{m.class_name!r} -> {shorten(m.synset.gloss, 60)!r} ({len(m.alternatives)} other)"
                                   for m in ambiguous[:6]) + (" ..." if len(ambiguous) > 6 else ""), err=True)
        return
    if not model:
        raise PromptgenError("no --model given for --source llm",
                             "name a litellm model (e.g. --model openai/gpt-4o-mini), or use --source wordnet")

    template = load_template(style, store.root)
    if template.kind != "class":
        raise PromptgenError(f"template {template.ref} asks about pairs of classes",
                             f"use it with `promptgen differentiate {dataset} --style {template.name}`; describe "
                             f"takes a class template (cupl, cupl-base, dclip)")
    client = make_client(store.root, values, split_samples=True if split_samples else None, on_spend=run.on_spend)
    job = DescribeJob(classes, template, set_name or template.name, draw=values["draw"],
                      answer_retries=values["answer_retries"], dedupe=dedupe)
    if dry_run:
        requests = plan_requests(job, client)
        estimate = client.estimate(requests)
        if as_json:
            emit_json({"dataset": dataset, "classes": len(classes), "template": template.ref, "model": model,
                       "planned_requests": len(requests), **estimate.__dict__})
            return
        click.echo(f"{dataset}: {len(classes)} classes x {len(template.questions)} question(s) of {template.ref}, "
                   f"n={template.n} ({'n requests per question' if client.split_samples else 'one request per question'})")
        for line in estimate.lines():
            click.echo("  " + line)
        click.echo("  nothing was sent (--dry-run)")
        return
    result = run_describe(job, client, store, resume=values["resume"], resume_version=values["resume_version"])
    _report(result.manifest, result.info.records_path, as_json)
    if result.failures:
        click.echo(f"warning: {len(result.failures)} request(s) gave no usable text; they are listed under "
                   f"'failures' in {result.info.manifest_path}"
                   + ("; rerun with --resume to retry the failed ones" if result.manifest["status"] == "partial" else ""),
                   err=True)
        raise SystemExit(ExitCode.PARTIAL)


def _report(manifest: dict, records_path: Path, as_json: bool) -> None:
    if as_json:
        emit_json(manifest)
        return
    counts = manifest.get("counts", {})
    dropped = {k: v for k, v in manifest.get("dropped", {}).items() if v}
    click.echo(f"wrote {records_path} ({manifest['status']}): {counts.get('records', 0)} texts for "
               f"{counts.get('classes', 0) - counts.get('classes_without_texts', 0)}/{counts.get('classes', 0)} classes")
    if dropped:
        click.echo("  dropped: " + ", ".join(f"{v} {k}" for k, v in dropped.items()))
    if "requests" in counts:
        cost = manifest.get("cost_usd")
        click.echo(f"  requests: {counts['requests']} ({counts.get('requests_sent_this_run', 0)} sent, "
                   f"{counts.get('cache_hits_this_run', 0)} from cache); tokens: "
                   f"{manifest['tokens']['prompt']:,} prompt + {manifest['tokens']['completion']:,} completion; "
                   f"cost: {'$%.4f' % cost if cost is not None else 'unknown (no price for this model)'}")


COMMANDS.append(describe_command)
