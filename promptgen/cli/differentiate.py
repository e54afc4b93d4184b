"""`promptgen differentiate`: ask an LLM what tells each confusable pair of classes apart (FuDD)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from promptgen.cli.common import IMAGE_SPECS, emit_json, json_option, root_option
from promptgen.cli.heads import clip_options, image_loading_options, open_clip_model
from promptgen.cli.llm_options import llm_options, make_client
from promptgen.errors import ExitCode, PromptgenError
from promptgen.paths import cache_dir
from promptgen.runlog import CommandRun, logged
from promptgen.steps import CLIP_RUN_ONLY, LLM_RUN_ONLY, pipeline_step
from promptgen.templates import load_template

COMMANDS = []


def _initial_head(store, classes, head_file: Path | None, initial: str, clip) -> tuple[Any, dict]:
    from promptgen.clip.embed import TextEncoder
    from promptgen.clip.heads import build_head, load_head
    from promptgen.clip.sources import source_from_templates

    if head_file is not None:
        head = load_head(head_file, classes, clip.embed_dim if clip else None)
        return head.weights, {"head": str(head_file), "builder": head.info.get("builder")}
    encoder = TextEncoder(clip, cache_dir(store.root))
    head = build_head("template", encoder=encoder, classes=classes, sources=[source_from_templates(initial, classes)])
    return head.weights, {"builder": "template", "templates": initial, "model": clip.describe()}


def find_pairs(store, classes, *, pairs_from: str, images_spec: str | None, features_file: Path | None,
               head_file: Path | None, initial: str, k: int | None, partners: int, min_count: int,
               max_pairs: int | None, limit: int | None, batch_size: int, clip_args: tuple, workers: int = 0,
               precision: str = "fp32"):
    """The PairPlan the options describe; the CLIP model is loaded only when something needs it."""
    from promptgen.clip.encode import encode_images
    from promptgen.clip.images import load_feature_file, open_image_set
    from promptgen.clip.pairs import all_pairs, check_k, pairs_from_images, pairs_from_text

    if pairs_from == "all":
        return all_pairs(len(classes), max_pairs=max_pairs)
    if pairs_from == "images":
        if (images_spec is None) == (features_file is None):
            raise PromptgenError("--pairs-from images needs exactly one of --images and --features",
                                 "e.g. --images DIR (labels optional) or --features FILE.npz; or use --pairs-from text")
        k = check_k(k, len(classes)) if k is not None else min(10, len(classes))
    needs_model = images_spec is not None or head_file is None
    clip = open_clip_model(store.root, *clip_args) if needs_model else None
    weights, head_info = _initial_head(store, classes, head_file, initial, clip)
    if pairs_from == "text":
        return pairs_from_text(weights, partners, max_pairs=max_pairs, head_info=head_info)
    images = str(features_file)
    if images_spec is not None:
        image_set = open_image_set(images_spec, classes)
        images = image_set.meta.get("url", images_spec)
        features = encode_images(clip, image_set, cache_dir(store.root),
                                 batch_size=batch_size, limit=limit, workers=workers, precision=precision)
    else:
        features = load_feature_file(features_file, classes, weights.shape[0])
        if limit:
            features.features, features.labels = features.features[:limit], features.labels[:limit]
    return pairs_from_images(features.features, weights, k, labels=features.labels, min_count=min_count,
                             max_pairs=max_pairs, head_info={**head_info, "images": images})


@pipeline_step(writes="set", path_like=("images",), run_only=LLM_RUN_ONLY + CLIP_RUN_ONLY)
@click.command("differentiate")
@click.argument("dataset")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list (see `promptgen describe --help`).")
@click.option("--pairs-from", type=click.Choice(["images", "text", "all"]),
              help="Confusable pairs from the top-k of images (default with --images/--features), from the most "
                   "similar head columns (default otherwise), or all C(C-1)/2 pairs.")
@click.option("--images", "images_spec", help=f"Images to find pairs in (labels optional): {IMAGE_SPECS}.")
@click.option("--features", "features_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Cached image features (.npz/.pt) instead of --images.")
@click.option("--head", "head_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Initial head file (.pt/.safetensors/.npy) for the top-k / similarities (default: --initial "
                   "templates).")
@click.option("--initial", default="photo", show_default=True,
              help="CLIP template set of the initial head (FuDD: 'a photo of a {c}.').")
@click.option("--k", "k", type=int, help="Top-k classes per image that form the ambiguous set [default: 10, or C].")
@click.option("--partners", type=int, help="--pairs-from text: the most similar classes kept per class [default: 5].")
@click.option("--min-count", type=click.IntRange(min=1),
              help="--pairs-from images: ask only about pairs in the top-k of at least this many images [default: 1].")
@click.option("--max-pairs", type=click.IntRange(min=1), help="Ask about at most this many pairs (most confusable first).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per forward pass.")
@image_loading_options
@clip_options
@click.option("--style", default="fudd", show_default=True, help="Pair template: fudd, or your own NAME[@vN] / JSON file.")
@click.option("--set", "set_name", default="differential", show_default=True, help="Prompt-set name.")
@click.option("--structured", type=click.Choice(["auto", "schema", "prompt"]), default="auto", show_default=True,
              help="schema: the provider's JSON-schema response format; prompt: ask for JSON in words and parse "
                   "tolerantly; auto: schema where litellm reports support.")
@click.option("--no-repair", is_flag=True, help="No repair request after an answer that is not valid JSON.")
@click.option("--reask-failed", is_flag=True,
              help="Ask again (a new draw) the pairs whose answers were unusable in the latest version; every other "
                   "pair comes from the cache.")
@llm_options
@root_option
@json_option
@logged("differentiate")
def differentiate_command(dataset: str, classes_file: Path | None, pairs_from: str | None, images_spec: str | None,
                          features_file: Path | None, head_file: Path | None, initial: str, k: int | None,
                          partners: int | None, min_count: int | None, max_pairs: int | None, limit: int | None,
                          batch_size: int, clip_model: str, pretrained: str, seed: int, device: str, style: str,
                          set_name: str, structured: str, no_repair: bool, reask_failed: bool, root: Path | None,
                          as_json: bool, run: CommandRun, **values: Any) -> None:
    """Differential descriptions for DATASET's confusable class pairs, as a new prompt-set version."""
    from promptgen.stages.differentiate import DifferentiateJob, plan_requests, resume_plan, run_differentiate

    store = run.store(wait=values["wait"])
    classes = store.classes(dataset, classes_file)
    if not values["model"]:
        raise PromptgenError("no --model given", "name a litellm model (e.g. --model openai/gpt-4o-mini), or "
                                                 "--api-base URL --model openai/NAME for a local server")
    template = load_template(style, store.root)
    if template.kind != "pair":
        raise PromptgenError(f"template {template.ref} asks about one class, not a pair",
                             "use a pair template, such as --style fudd")
    if len(classes) < 2:
        raise PromptgenError(f"{dataset} has one class: there is no pair to tell apart", "use two or more classes")
    route = pairs_from or ("images" if images_spec or features_file else "text")
    misplaced = [flag for flag, value, used_by in (("--k", k, "images"), ("--min-count", min_count, "images"),
                                                   ("--partners", partners, "text")) if value is not None and route != used_by]
    if misplaced:
        raise PromptgenError(f"{', '.join(misplaced)} do(es) nothing with --pairs-from {route}",
                             "--k and --min-count shape pairs from images, --partners pairs from text; drop them or "
                             "change --pairs-from")
    if values["resume"]:
        if reask_failed:
            raise PromptgenError("--reask-failed makes a new version", "drop --resume")
        plan, pair_draws, resume_version = resume_plan(store, dataset, set_name, values["resume_version"])
    else:
        resume_version = None
        plan = find_pairs(store, classes, pairs_from=route, images_spec=images_spec, features_file=features_file,
                          head_file=head_file, initial=initial, k=k, partners=partners or 5, min_count=min_count or 1,
                          max_pairs=max_pairs, limit=limit, batch_size=batch_size,
                          clip_args=(clip_model, pretrained, seed, device), workers=values["workers"],
                          precision=values["precision"])
        pair_draws = _pair_draws(store, dataset, set_name, reask_failed)
    client = make_client(store.root, values, on_spend=run.on_spend)
    job = DifferentiateJob(classes, template, set_name, plan, structured=structured,
                           answer_retries=values["answer_retries"], repair=not no_repair, draw=values["draw"],
                           pair_draws=pair_draws)
    if values["dry_run"]:
        _dry_run(job, client, plan_requests(job, client), as_json)
        return
    result = run_differentiate(job, client, store, resume=values["resume"], resume_version=resume_version)
    _report(result, as_json)
    if result.failures:
        click.echo(f"warning: {len(result.failures)} pair(s) got no usable answer; they are listed under "
                   f"'failed_pairs' in {result.info.manifest_path} and the fudd head scores their classes with the "
                   f"initial head" + ("; rerun with --resume to retry the failed requests"
                                      if result.manifest["status"] == "partial" else ""), err=True)
        raise SystemExit(ExitCode.PARTIAL)


def _pair_draws(store, dataset: str, set_name: str, reask_failed: bool) -> dict[str, int]:
    """Per-pair draws carried from the latest version of the set (so pairs re-asked before keep
    their answers), plus one for each pair that failed on its content there, with --reask-failed."""
    versions = [v for v in store.list_versions(dataset, set_name) if v.status in ("complete", "partial")]
    if not versions:
        if reask_failed:
            raise PromptgenError(f"{dataset}/{set_name} has no version to re-ask failed pairs from",
                                 "run without --reask-failed first")
        return {}
    latest = versions[-1].manifest
    draws = dict((latest.get("job") or {}).get("pair_draws") or {})
    if reask_failed:
        failed = [f["pair"] for f in latest.get("failed_pairs") or []
                  if not str(f.get("reason", "")).startswith("request failed")]
        if not failed:
            raise PromptgenError(f"{versions[-1].ref} has no pair that failed on its answers",
                                 "nothing to re-ask; pairs whose requests failed are retried with --resume")
        for key in failed:
            draws[key] = draws.get(key, 0) + 1
    return draws


def _pair_lines(plan, names: tuple[str, ...], count: int = 8) -> list[str]:
    label = "images" if plan.method == "images" else "cosine"
    return [f"    {names[i]} / {names[j]}  ({label} {score:g})" for (i, j), score in
            list(zip(plan.pairs, plan.scores))[:count]]


def _dry_run(job, client, requests, as_json: bool) -> None:
    plan = job.plan
    estimate = client.estimate(requests)
    cost = estimate.headline_cost_usd  # the batch price with --batch
    per_pair = cost / estimate.requests if cost is not None and estimate.requests else None
    all_pairs_cost = per_pair * plan.all_pairs if per_pair is not None else None
    summary = plan.summary()
    if as_json:
        emit_json({"dataset": job.classes.dataset, "template": job.template.ref, "model": client.model,
                   "structured": job.fingerprint(client)["structured"], "pairs": summary,
                   "planned_requests": len(requests), **estimate.__dict__, "all_pairs_cost_usd": all_pairs_cost,
                   "top_pairs": [[job.classes.names[i], job.classes.names[j], s]
                                 for (i, j), s in list(zip(plan.pairs, plan.scores))[:20]]})
        return
    how = {"images": f"top-{summary.get('k')} of {summary.get('images', 0):,} images",
           "text": f"{summary.get('partners')} most similar partners per class", "all": "every pair"}[plan.method]
    click.echo(f"{job.classes.dataset}: {len(plan.pairs):,} distinct pairs from {how}, of {plan.all_pairs:,} possible "
               f"(C(C-1)/2 for {plan.num_classes} classes)")
    if summary.get("dropped_below_min_count") or summary.get("dropped_over_max_pairs"):
        click.echo(f"  {summary.get('candidates', 0):,} candidates; {summary.get('dropped_below_min_count', 0):,} below "
                   f"--min-count, {summary.get('dropped_over_max_pairs', 0):,} over --max-pairs")
    if summary.get("topk_recall") is not None:
        click.echo(f"  top-{summary['k']} recall {100 * summary['topk_recall']:.2f}% of "
                   f"{summary['labelled_images']:,} labelled images (re-ranking cannot do better)")
    if plan.method != "all":
        for line in _pair_lines(plan, job.classes.names):
            click.echo(line)
    for line in estimate.lines():
        click.echo("  " + line)
    if all_pairs_cost is not None:
        click.echo(f"  all {plan.all_pairs:,} pairs would cost about ${all_pairs_cost:,.4f}"
                   + (" through the batch API" if estimate.batch else ""))
    click.echo("  nothing was sent (--dry-run)")


def _report(result, as_json: bool) -> None:
    manifest = result.manifest
    if as_json:
        emit_json(manifest)
        return
    counts, pairs = manifest["counts"], manifest["pairs"]
    cost, cost_now = manifest.get("cost_usd"), manifest.get("cost_usd_this_run")
    click.echo(f"wrote {result.info.records_path} ({manifest['status']}): {counts['records']} sentences, "
               f"{counts['attributes']} attributes for {pairs['pairs']} pairs of {pairs['all_pairs']:,} possible")
    click.echo(f"  pairs: {pairs['answered']} answered, {pairs['salvaged']} salvaged from cut-off answers, "
               f"{pairs['failed']} failed; {pairs['queried']} asked for this version, {pairs['reused']} reused from "
               f"the cache" + (f", {pairs['reasked_pairs']} re-asked with a new draw" if pairs.get("reasked_pairs") else ""))
    if pairs.get("topk_recall") is not None:
        click.echo(f"  top-{pairs['k']} recall of the initial head {100 * pairs['topk_recall']:.2f}% on "
                   f"{pairs['labelled_images']:,} labelled images (the ceiling of fudd's re-ranking)")
    rejected = {k: v for k, v in manifest["rejected"].items() if v}
    if rejected:
        click.echo("  rejected attributes: " + ", ".join(f"{v} {k}" for k, v in rejected.items()))
    click.echo(f"  requests: {counts['requests']} ({counts['requests_sent_this_run']} sent, "
               f"{counts['cache_hits_this_run']} from cache, {counts['repairs']} repairs, "
               f"{counts['reasked_after_unusable_answer']} re-asked); tokens: {manifest['tokens']['prompt']:,} prompt + "
               f"{manifest['tokens']['completion']:,} completion (reused answers included)")
    if cost is None:
        click.echo("  cost: unknown (no price for this model; give --price)")
    else:
        click.echo(f"  cost this run: ${cost_now or 0:.4f}; all answers in this version are worth ${cost:.4f}")


COMMANDS.append(differentiate_command)
