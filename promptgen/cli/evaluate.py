"""`promptgen eval` and `promptgen features`: image features (cached) and zero-shot accuracy of heads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from promptgen.build_spec import split_build
from promptgen.cli.common import IMAGE_SPECS, emit_json, json_option, root_option, write_json_file
from promptgen.cli.heads import clip_options, image_loading_options, open_clip_model
from promptgen.errors import PromptgenError
from promptgen.paths import cache_dir
from promptgen.runlog import CommandRun, logged
from promptgen.steps import CLIP_RUN_ONLY, pipeline_step

COMMANDS = []


_OPTION_TYPES = {"pool": str, "zpe_mode": str, "zpe_group": str, "name": str, "zpe_tau": float,
                 "waffle_count": int, "seed": int, "source_weights": list, "k": int, "initial": str,
                 "scorer": str, "filters": str, "margin": float, "rename": str, "base": str,
                 "dedupe": bool, "sentence_rule": str, "capitalize": bool, "reps": int, "counts": str}


def parse_build_spec(spec: str) -> tuple[str, list[str], dict[str, Any]]:
    """`BUILDER[:SOURCE[+SOURCE...]][,key=value...]`, e.g. `cupl:cupl@v2`, `pooled:cupl@v1+openai80,
    source_weights=[1,2]`, `zpe:openai80,zpe_mode=mad,zpe_tau=2`, `fudd:differential@v1,k=10`. Options are checked against the
    builder's own before any model is loaded."""
    from promptgen.clip.heads import BUILDERS
    from promptgen.clip.registry import GENERIC_OPTIONS

    split = split_build(spec)
    builder = split.builder.strip()
    if builder not in BUILDERS:
        raise PromptgenError(f"--build {spec}: unknown builder {builder!r}", f"builders: {', '.join(sorted(BUILDERS))}")
    allowed = BUILDERS[builder].options + GENERIC_OPTIONS + ("name",) + (("reps",) if builder.startswith("waffle") else ())
    options: dict[str, Any] = {}
    for key, value in split.pairs():
        if key not in allowed:
            raise PromptgenError(f"--build {spec}: the {builder} builder has no option {key!r}",
                                 f"its options: {', '.join(allowed)}")
        try:
            parsed = json.loads(value) if _OPTION_TYPES[key] in (list, float, int, bool) else value
            if _OPTION_TYPES[key] is bool and not isinstance(parsed, bool):
                raise ValueError("not true or false")
            if _OPTION_TYPES[key] is list:
                if not isinstance(parsed, list) or not all(isinstance(x, (int, float)) for x in parsed):
                    raise ValueError("not a list of numbers")
                options[key] = [float(x) for x in parsed]
            else:
                options[key] = _OPTION_TYPES[key](parsed)
        except (ValueError, TypeError) as exc:
            raise PromptgenError(f"--build {spec}: bad value {value!r} for {key} ({exc})",
                                 "e.g. zpe_tau=2, waffle_count=15, source_weights=[1,0.5]") from exc
    return builder, [s for s in split.sources if s], options


def _split_sources(store, classes, names: list[str]) -> tuple[list[str], list[str]]:
    """A name is a CLIP template set when it is one (built-in or a .json file) and no prompt set of
    the dataset has that name; `templates:NAME` forces it."""
    from promptgen.clip.sources import list_template_sets

    sets, templates = [], []
    known_sets = set(store.list_sets(classes.dataset))
    for name in names:
        if name.startswith("templates:"):
            templates.append(name.split(":", 1)[1])
        elif (name in list_template_sets() or name.endswith(".json")) and name.split("@")[0] not in known_sets:
            templates.append(name)
        else:
            sets.append(name)
    return sets, templates


@pipeline_step(writes="file:.json", set_inputs=("build",), path_like=("images",), run_only=CLIP_RUN_ONLY)
@click.command("eval")
@click.argument("dataset")
@click.option("--images", "images_spec", help=f"Images: {IMAGE_SPECS}.")
@click.option("--features", "features_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Precomputed features: .npz or .pt with features (N, D) and labels (N,).")
@click.option("--head", "head_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A head file from `promptgen head` or any (D, C) tensor (.pt/.safetensors/.npy); repeatable.")
@click.option("--build", "build_specs", multiple=True,
              help="Build a head on the fly: BUILDER[:SOURCE[+SOURCE]][,key=value], e.g. cupl:cupl@v1, "
                   "template:openai80, pooled:cupl@v1+openai80, zpe:openai80,zpe_mode=mad, "
                   "fudd:differential@v1,k=10; waffle:dclip-published,reps=7 builds seeds 0-6 and reports "
                   "their mean and std; repeatable.")
@clip_options
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per forward pass.")
@image_loading_options
@click.option("--allow-empty", is_flag=True, help="Built heads give classes without texts 'a photo of a {c}.'.")
@click.option("--zpe-pool", type=click.Path(dir_okay=False, path_type=Path),
              help="zpe builds: features of a generic image pool for mu_pre (else test-only correction).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full results (per-class accuracy included) as JSON.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path))
@root_option
@json_option
@logged("eval")
def eval_command(dataset: str, images_spec: str | None, features_file: Path | None, head_files: tuple[Path, ...],
                 build_specs: tuple[str, ...], clip_model: str, pretrained: str, seed: int, device: str,
                 limit: int | None, batch_size: int, workers: int, precision: str, allow_empty: bool, zpe_pool: Path | None, output: Path | None,
                 classes_file: Path | None, root: Path | None, as_json: bool, run: CommandRun) -> None:
    """Zero-shot accuracy of several heads on DATASET's images (top-1, top-5, mean per-class recall)."""
    from promptgen.clip.api import collect_sources
    from promptgen.clip.embed import TextEncoder
    from promptgen.clip.evaluate import evaluate_heads, format_table, seed_summary
    from promptgen.clip.heads import build_head, load_head
    from promptgen.clip.encode import encode_images
    from promptgen.clip.images import load_feature_file, open_image_set

    started = time.perf_counter()
    if (images_spec is None) == (features_file is None):
        raise PromptgenError("give exactly one of --images and --features", "e.g. --images fashion-mnist:test")
    if not head_files and not build_specs:
        raise PromptgenError("no head to evaluate", "give --head FILE and/or --build BUILDER[:SET@vN]")
    store = run.store()
    classes = store.classes(dataset, classes_file)
    builds = []
    for spec in build_specs:
        builder, names, options = parse_build_spec(spec)
        if "k" in options:  # before any model loads
            from promptgen.clip.pairs import check_k

            check_k(options["k"], len(classes))
        sets, templates = _split_sources(store, classes, names)
        builds.append((spec, builder, collect_sources(store, classes, sets, templates), options))
    heads = [load_head(path, classes) for path in head_files]
    clip = None
    if images_spec is not None or builds:
        clip = open_clip_model(store.root, clip_model, pretrained, seed, device)
    if images_spec is not None:
        image_set = open_image_set(images_spec, classes)
        features = encode_images(clip, image_set, cache_dir(store.root), batch_size=batch_size, limit=limit,
                                 workers=workers, precision=precision)
    else:
        features = load_feature_file(features_file, classes, clip.embed_dim if clip else None)
        if limit:
            features.features, features.labels = features.features[:limit], features.labels[:limit]
    dims = {h.weights.shape[0] for h in heads}
    if dims and dims != {features.features.shape[1]}:
        bad = [h.name for h in heads if h.weights.shape[0] != features.features.shape[1]]
        raise PromptgenError(f"heads {', '.join(bad)} have dimension {sorted(dims)}, the image features "
                             f"{features.features.shape[1]}", "evaluate heads built with the same CLIP model as the features")
    feature_model = (clip.key if clip else None) or (features.meta.get("model") or {}).get("key")
    for head in heads:
        head_model = (head.info.get("model") or {}).get("key")
        if feature_model and head_model and head_model != feature_model:
            raise PromptgenError(f"head {head.name} was built with {head.info['model'].get('arch')} "
                                 f"{head.info['model'].get('weights')}, not the model of these features",
                                 "evaluate heads and features from the same CLIP model and weights")
    pool = load_feature_file(zpe_pool, embed_dim=features.features.shape[1]).features if zpe_pool else None
    encoder = TextEncoder(clip, cache_dir(store.root), show_progress=True) if builds else None
    repeated: list[tuple[str, list[int]]] = []  # builds over several seeds: (name, head positions)
    for spec, builder, sources, options in builds:
        extra = {k: v for k, v in options.items() if k not in ("name", "reps")}
        uses_images = builder == "zpe" or options.get("base") == "zpe"
        image_features = features.features if uses_images else None  # unlabeled use: labels never reach ZPE
        first_seed = extra.pop("seed", seed)
        reps = options.get("reps", 1)
        if reps < 1:
            raise PromptgenError(f"--build {spec}: reps={reps}", "reps is the number of seeds, 1 or more (WaffleCLIP: 7)")
        name = options.get("name", spec)
        positions = []
        for run_seed in range(first_seed, first_seed + reps):
            positions.append(len(heads))
            heads.append(build_head(builder, encoder=encoder, classes=classes, sources=list(sources),
                                    allow_empty=allow_empty, image_features=image_features,
                                    pool_features=pool if uses_images else None,
                                    name=f"{name} seed={run_seed}" if reps > 1 else name, store=store,
                                    **{"seed": run_seed, **extra}))
        if reps > 1:
            repeated.append((name, positions))
    results = evaluate_heads(features.features, features.labels, heads, len(classes))
    summaries = [seed_summary(f"{name} (mean of {len(positions)} seeds)", [results[p] for p in positions])
                 for name, positions in repeated]
    report = {"format": "promptgen.eval/1", "dataset": dataset, "classes": {"count": len(classes), "hash": classes.hash,
                                                                         "names": list(classes.names)},
              "images": {k: v for k, v in features.meta.items() if k != "model"},
              "model": clip.describe() if clip else None,
              "encoding": {**encoder.stats.as_dict(), "trimming": encoder.trim_reason} if encoder else None,
              "seconds": round(time.perf_counter() - started, 3),
              "heads": [{**result, "info": {k: v for k, v in head.info.items() if k not in ("classes", "prompt_counts")}}
                        for result, head in zip(results, heads)],
              **({"seed_means": summaries} if summaries else {})}
    if output:
        write_json_file(output, report)
    if as_json:
        emit_json(report)
        return
    meta = features.meta
    click.echo(f"{dataset}: {len(features.labels)} images"
               + (f" ({meta['skipped']} skipped: could not be decoded)" if meta.get("skipped") else "")
               + (", features from cache" if meta.get("from_cache") and images_spec else ""))
    click.echo(format_table(results, heads))
    for summary in summaries:
        click.echo(f"{summary['head']}: top-1 {100 * summary['top1']:.2f} +- {100 * summary['top1_std']:.2f}, "
                   f"top-5 {100 * summary['top5']:.2f} +- {100 * summary['top5_std']:.2f}, "
                   f"mean/class {100 * summary['mean_per_class_recall']:.2f} "
                   f"+- {100 * summary['mean_per_class_recall_std']:.2f}")
    for result in results:
        rerank = result.get("rerank")
        if rerank:
            recall = rerank["topk_recall"]
            click.echo(f"  {result['head']}: top-{rerank['k']} recall {100 * recall:.2f}% (the ceiling of re-ranking); "
                       f"{100 * rerank['fallback_fraction']:.1f}% of top-{rerank['k']} classes met a pair without "
                       f"descriptions there and got 'a photo of a {{c}}.' for it")
    if output:
        click.echo(f"wrote {output}")


@pipeline_step(writes="file:.npz", path_like=("images",), run_only=CLIP_RUN_ONLY)
@click.command("features")
@click.argument("dataset")
@click.option("--images", "images_spec", required=True, help=f"Images: {IMAGE_SPECS}.")
@clip_options
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@image_loading_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=".npz (numpy) or .pt (torch) with features (N, D) and labels (N,).")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path))
@root_option
@json_option
@logged("features")
def features_command(dataset: str, images_spec: str, clip_model: str, pretrained: str, seed: int, device: str,
                     limit: int | None, batch_size: int, workers: int, precision: str, output: Path, classes_file: Path | None, root: Path | None,
                     as_json: bool, run: CommandRun) -> None:
    """Encode DATASET's images with a CLIP image tower (cached) and write the features."""
    from promptgen.clip.encode import write_features
    from promptgen.clip.images import open_image_set

    store = run.store()
    classes = store.classes(dataset, classes_file)
    image_set = open_image_set(images_spec, classes)
    clip = open_clip_model(store.root, clip_model, pretrained, seed, device)
    meta = write_features(clip, image_set, output, cache_dir(store.root), batch_size=batch_size, limit=limit,
                          workers=workers, precision=precision)
    summary = {"file": str(output), "images": meta["encoded"], "dim": clip.embed_dim, "skipped": meta["skipped"],
               "skipped_images": meta["skipped_images"], "from_cache": meta["from_cache"], "parts": meta["parts"],
               "source": meta["source"], "precision": precision}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {output}: {summary['images']} x {summary['dim']} features"
                   + (f", {summary['skipped']} images skipped" if summary["skipped"] else "")
                   + (" (from cache)" if summary["from_cache"] else ""))


COMMANDS += [eval_command, features_command]
