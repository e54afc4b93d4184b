"""`promptgen head`, `promptgen builders`, `promptgen clip-models`: classifier heads from prompt sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.errors import PromptgenError
from promptgen.paths import cache_dir
from promptgen.rename import FREQUENCY_MARGIN
from promptgen.runlog import CommandRun, logged
from promptgen.steps import pipeline_step

COMMANDS = []


def clip_options(function: Callable) -> Callable:
    """--clip-model / --pretrained / --seed / --device / --trim, shared by every CLIP command."""
    function = click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1.")(function)
    function = click.option("--seed", type=int, default=0, show_default=True,
                            help="Seed for random weights (--pretrained random) and random builders (waffle).")(function)
    function = click.option("--pretrained", default="openai", show_default=True,
                            help="Weights: an open_clip tag, a local state-dict file, or `random`.")(function)
    function = click.option("--clip-model", default="ViT-B-32", show_default=True,
                            help="open_clip architecture, a model-config JSON path, or hf-hub:org/repo.")(function)
    return function


def image_loading_options(function: Callable) -> Callable:
    """--workers / --precision, shared by the commands that encode images."""
    function = click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32",
                            show_default=True, help="Image tower under autocast at this precision (fp16/bf16 on "
                                                    "CUDA); features are stored as float32.")(function)
    function = click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                            help="Processes that decode and preprocess images (a DataLoader); 0 decodes here.")(function)
    return function


def builder_options(function: Callable) -> Callable:
    options = [
        click.option("--set", "sets", multiple=True, help="Prompt set SET[@vN] (or DATASET/SET@vN); repeatable."),
        click.option("--templates", "templates", multiple=True,
                     help="CLIP template set (photo, openai80, simple7, name) or a JSON file; repeatable."),
        click.option("--allow-empty", is_flag=True, help="Give classes without texts 'a photo of a {c}.' instead "
                                                         "of failing (recorded in the sidecar)."),
        click.option("--pool", type=click.Choice(["count", "mean"]), default=None,
                     help="pooled: weight each source by its text count (CuPL) or as one vote."),
        click.option("--source-weight", "source_weights", type=float, multiple=True,
                     help="pooled: one weight per source, sets first then templates, in the order given."),
        click.option("--zpe-features", type=click.Path(dir_okay=False, path_type=Path),
                     help="zpe: unlabeled image features (.npz/.pt) of the target images."),
        click.option("--zpe-pool", type=click.Path(dir_okay=False, path_type=Path),
                     help="zpe: features of a generic image pool for mu_pre (else test-only correction)."),
        click.option("--zpe-mode", type=click.Choice(["softmax", "mad", "mad-equal"]), default=None,
                     help="zpe: softmax weights (default), MAD selection keeping their softmax weights, or MAD "
                          "selection with equal weights (the paper's ablation)."),
        click.option("--zpe-tau", type=float, default=None, help="zpe mad: keep prompts with robust z > tau "
                                                                 "(0.5 ImageNet family, 2.0 fine-grained)."),
        click.option("--zpe-group", type=click.Choice(["auto", "family", "class"]), default=None,
                     help="zpe: weight templates/questions shared by all classes (ZPE), or each class's own texts "
                          "(class: promptgen's extension, not in the paper)."),
        click.option("--waffle-count", type=int, default=None, help="waffle, waffle+gpt: random word/character "
                                                                     "pairs (15)."),
        click.option("--dedupe", is_flag=True, default=None, help="Count each text once per class and source (the "
                                                                 "methods count every repeat)."),
        click.option("--sentence-rule", type=click.Choice(["authors", "grammatical"]), default=None,
                     help="Descriptor sets: DCLIP's own sentence rule (default) or the word-based a/an rule (ours)."),
        click.option("--no-capitalize", "capitalize", flag_value=False, default=None,
                     help="fudd, fudd-static: embed texts as written instead of FuDD's str.capitalize()."),
        click.option("--scorer", default=None, help="real: frequency, clip or first (llm: use --rename FILE)."),
        click.option("--filters", default=None, help="real, synonym-ensemble: ambiguous+subset+clip, or none."),
        click.option("--margin", type=float, default=None, help="real: a synonym must beat the official score by this "
                                                                f"(default: {FREQUENCY_MARGIN} for frequency, 0 otherwise; see "
                                                                "`promptgen rename --help`)."),
        click.option("--counts", type=click.Path(dir_okay=False), default=None,
                     help="real: caption counts per name, a counts set SET[@vN] or REAL's metrics JSON file (a path "
                          "that exists is the file); scored by REAL's rule."),
        click.option("--rename", type=click.Path(dir_okay=False), default=None,
                     help="real: a rename map from `promptgen rename -o`."),
        click.option("--base", default=None, help="real, synonym-ensemble: aggregate with template, cupl, dclip, "
                                                  "pooled or zpe."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def builder_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The builder options the user set, as build_head keywords."""
    names = ("pool", "zpe_mode", "zpe_tau", "zpe_group", "waffle_count", "scorer", "filters", "margin", "rename", "base",
             "dedupe", "sentence_rule", "capitalize", "counts")
    kwargs = {name: values[name] for name in names if values.get(name) is not None}
    if values.get("source_weights"):
        kwargs["source_weights"] = list(values["source_weights"])
    return kwargs


def open_clip_model(root_path: Path, clip_model: str, pretrained: str, seed: int, device: str):
    from promptgen.clip.models import load_clip

    return load_clip(clip_model, pretrained, device=device, seed=seed, cache=cache_dir(root_path))


HEAD_FORMATS = ("pt", "safetensors", "npy")


def check_head_format(output: Path, head_format: str | None) -> None:
    """--format must agree with -o's suffix: the file's name is how every reader (load_head,
    CLIP_benchmark) tells its format."""
    if head_format is not None and output.suffix != f".{head_format}":
        raise PromptgenError(f"--format {head_format} writes a .{head_format} file, but -o {output} names a "
                             f"{output.suffix or 'suffix-less'} file",
                             f"name it {output.with_suffix('.' + head_format).name}, or drop --format")


@pipeline_step(writes="file:.pt", set_inputs=("set",), path_like=("templates",), run_only=("device",),
               suffix_from="format")
@click.command("head")
@click.argument("dataset")
@click.option("--builder", "-b", default="template", show_default=True, help="Head builder: see `promptgen builders`.")
@builder_options
@clip_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Head file: .pt (a (D, C) tensor CLIP_benchmark's --load_clfs reads), .safetensors (tensor "
                   "'weights' with the class names and provenance as metadata) or .npy; FILE.json gets the sidecar.")
@click.option("--format", "head_format", type=click.Choice(HEAD_FORMATS), default=None,
              help="The head file's format; by default the one -o's suffix names (.pt for any other). In a pipeline "
                   "it names the step's file: format = \"safetensors\" writes STEP.safetensors.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own class list, for a dataset promptgen does not know yet.")
@root_option
@json_option
@logged("head")
def head_command(dataset: str, builder: str, sets: tuple[str, ...], templates: tuple[str, ...], allow_empty: bool,
                 zpe_features: Path | None, zpe_pool: Path | None, clip_model: str, pretrained: str, seed: int,
                 device: str, output: Path, head_format: str | None, classes_file: Path | None, root: Path | None,
                 as_json: bool, run: CommandRun, **values: Any) -> None:
    """Build a classifier head for DATASET and write it to FILE (+ FILE.json)."""
    from promptgen.clip.api import collect_sources
    from promptgen.clip.embed import TextEncoder
    from promptgen.clip.heads import BUILDERS, build_head, save_head
    from promptgen.clip.images import load_feature_file

    if builder not in BUILDERS:
        raise PromptgenError(f"unknown head builder {builder!r}", f"builders: {', '.join(sorted(BUILDERS))}")
    if BUILDERS[builder].per_image:
        raise PromptgenError(f"the {builder} builder re-ranks each image and has no single (D, C) head to write",
                             f"evaluate it with `promptgen eval {dataset} --build {builder}:SET@vN`, or write the "
                             f"static variant with --builder {builder}-static")
    check_head_format(output, head_format)
    if (zpe_features or zpe_pool) and builder != "zpe" and values.get("base") != "zpe":
        raise PromptgenError(f"--zpe-features/--zpe-pool are options of the zpe builder, not {builder}",
                             "drop them, or use --builder zpe")
    store = run.store()
    classes = store.classes(dataset, classes_file)
    sources = collect_sources(store, classes, sets, templates)  # errors about sets before the model loads
    clip = open_clip_model(store.root, clip_model, pretrained, seed, device)
    features = load_feature_file(zpe_features, embed_dim=clip.embed_dim).features if zpe_features else None
    pool = load_feature_file(zpe_pool, embed_dim=clip.embed_dim).features if zpe_pool else None
    encoder = TextEncoder(clip, cache_dir(store.root), show_progress=True)
    head = build_head(builder, encoder=encoder, classes=classes, sources=sources, allow_empty=allow_empty,
                      image_features=features, pool_features=pool, name=output.stem, seed=seed, store=store,
                      **builder_kwargs(values))
    head.info["encoding"] = {**encoder.stats.as_dict(), "trimming": encoder.trim_reason}
    sidecar = save_head(head, output)
    if as_json:
        emit_json({**head.info, "file": str(output), "sidecar": str(sidecar)})
        return
    stats = encoder.stats
    click.echo(f"wrote {output}: {builder} head {tuple(head.weights.shape)} for {len(classes)} classes of {dataset} "
               f"from {head.info['prompts_total']} prompts ({stats.unique} unique texts: {stats.from_cache} cached, "
               f"{stats.encoded} encoded in {stats.seconds:.1f}s)")
    click.echo(f"sidecar {sidecar}")
    if head.info["fallback_classes"]:
        click.echo(f"  {len(head.info['fallback_classes'])} classes without texts use 'a photo of a {{c}}.': "
                   + ", ".join(head.info["fallback_classes"][:8]), err=True)


@click.command("builders")
@json_option
def builders_command(as_json: bool) -> None:
    """List the head builders."""
    from promptgen.clip.heads import BUILDERS

    rows = [{"name": b.name, "summary": b.summary, "needs_set": b.needs_set, "needs_images": b.needs_images,
             "default_templates": b.default_templates} for b in sorted(BUILDERS.values(), key=lambda b: b.name)]
    if as_json:
        emit_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        click.echo(f"{row['name'].ljust(width)}  {row['summary']}")


@click.command("clip-models")
@click.option("--templates", "show_templates", is_flag=True, help="List the CLIP template sets instead.")
@json_option
def clip_models_command(show_templates: bool, as_json: bool) -> None:
    """List the open_clip architectures (with their pretrained tags), or the CLIP template sets."""
    if show_templates:
        from promptgen.clip.sources import list_template_sets, load_template_set

        rows = []
        for name in list_template_sets():
            _, templates, digest = load_template_set(name)
            rows.append({"name": name, "count": len(templates), "first": templates[0], "sha256": digest})
        if as_json:
            emit_json(rows)
        else:
            for row in rows:
                click.echo(f"{row['name']:10} {row['count']:3} templates, e.g. {row['first']!r}")
        return
    import open_clip

    from promptgen.clip.models import list_clip_models

    rows = [{"name": name, "pretrained": open_clip.list_pretrained_tags_by_model(name)} for name in list_clip_models()]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:32} {', '.join(row['pretrained']) or '(random weights only)'}")


COMMANDS += [head_command, builders_command, clip_models_command]
