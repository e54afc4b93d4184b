"""`promptgen describe`: ask an LLM (or WordNet) what each class looks like."""

from __future__ import annotations

from pathlib import Path

import click

from promptgen.cli import emit_json, json_option, root_option, store_from
from promptgen.errors import ExitCode, PromptgenError
from promptgen.paths import cache_dir

COMMANDS = []


def _parse_price(value: str | None) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        prompt, completion = (float(part) for part in value.split(","))
    except ValueError:
        raise PromptgenError(f"--price {value!r} is not PROMPT,COMPLETION", "e.g. --price 0.15,0.60 (USD per million tokens)") from None
    return prompt, completion


@click.command("describe")
@click.argument("dataset")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list: one name per line (or id<TAB>name), or a JSON list.")
@click.option("--source", type=click.Choice(["llm", "wordnet"]), default="llm", show_default=True,
              help="llm asks --model; wordnet uses WordNet glosses offline (no key, no network).")
@click.option("--style", default="cupl", show_default=True,
              help="Query template: cupl, cupl-base, dclip, your own NAME[@vN] in prompts/templates/, or a JSON file.")
@click.option("--model", help="Any litellm model string, e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-20241022.")
@click.option("--api-base", help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama's /v1, ...).")
@click.option("--api-key-env", help="Environment variable that holds the key, when not the provider's usual one.")
@click.option("--set", "set_name", help="Prompt-set name (default: the style, or 'wordnet').")
@click.option("--concurrency", type=int, default=16, show_default=True, help="Requests in flight at once.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request before it is retried.")
@click.option("--max-attempts", type=int, default=6, show_default=True, help="Tries per request on 429/5xx/timeouts.")
@click.option("--backoff", type=float, default=1.0, show_default=True, help="First retry wait in seconds (doubles each try).")
@click.option("--answer-retries", type=int, default=2, show_default=True,
              help="Re-asks when an answer is empty, a refusal or unparseable.")
@click.option("--price", help="USD per million prompt,completion tokens, for models litellm has no price for.")
@click.option("--transport", type=click.Choice(["auto", "litellm", "openai"]), default="auto", show_default=True,
              help="auto: the openai SDK for OpenAI-compatible providers (faster), litellm for the rest.")
@click.option("--split-samples", is_flag=True, help="Get n samples from n requests even if the provider supports n.")
@click.option("--draw", type=int, default=0, show_default=True,
              help="A fresh draw of samples: a different number asks again instead of reusing cached answers.")
@click.option("--dry-run", is_flag=True, help="Print requests, tokens and price; send nothing.")
@click.option("--resume", is_flag=True, help="Continue the latest unfinished version of the set.")
@click.option("--resume-version", type=int, help="With --resume: the version number to continue.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@root_option
@json_option
def describe_command(dataset: str, classes_file: Path | None, source: str, style: str, model: str | None,
                     api_base: str | None, api_key_env: str | None, set_name: str | None, concurrency: int,
                     timeout: float, max_attempts: int, backoff: float, answer_retries: int, price: str | None,
                     transport: str, split_samples: bool, draw: int, dry_run: bool, resume: bool, resume_version: int | None,
                     no_progress: bool, root: Path | None, as_json: bool) -> None:
    """Write descriptions of every class of DATASET as a new prompt-set version."""
    from promptgen.stages.describe import DescribeJob, describe_wordnet, plan_requests, run_describe

    store = store_from(root)
    classes = store.classes(dataset, classes_file)
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
                       + "; ".join(f"{m.class_name!r} -> {m.synset.gloss[:40]!r} ({len(m.alternatives)} other)"
                                   for m in ambiguous[:6]) + (" ..." if len(ambiguous) > 6 else ""), err=True)
        return
    if not model:
        raise PromptgenError("no --model given for --source llm",
                             "name a litellm model (e.g. --model openai/gpt-4o-mini), or use --source wordnet")
    from promptgen.llm.cache import LLMCache
    from promptgen.llm.client import LLMClient
    from promptgen.templates import load_template

    template = load_template(style, store.root)
    client = LLMClient(model, api_base=api_base, api_key_env=api_key_env, cache=LLMCache(cache_dir(store.root) / "llm"),
                       concurrency=concurrency, timeout=timeout, max_attempts=max_attempts, backoff=backoff,
                       price=_parse_price(price), split_samples=True if split_samples else None, transport=transport,
                       progress=not no_progress)
    job = DescribeJob(classes, template, set_name or template.name, draw=draw, answer_retries=answer_retries)
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
    result = run_describe(job, client, store, resume=resume, resume_version=resume_version)
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
