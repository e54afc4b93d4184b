"""Classifier heads: named builders that turn per-class texts into a (D, C) matrix W, so that
logits = 100 * v @ W for normalised image features v (docs/methods.md, notation).

Every builder is registered with `@register_builder` (promptgen/clip/registry.py): template,
cupl, dclip and pooled here, the others in the module of their method (zpe, waffle, fudd, real).
`build_head` is the one factory. Builders share the embedding engine, so a text used by several
heads or runs is encoded once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import promptgen.clip.fudd  # noqa: F401  (these four register their builders when imported)
import promptgen.clip.real  # noqa: F401
import promptgen.clip.waffle  # noqa: F401
import promptgen.clip.zpe  # noqa: F401
from promptgen.classes import ClassList
from promptgen.clip.embed import TextEncoder
from promptgen.clip.head_files import load_head, save_head
from promptgen.clip.registry import (BUILDERS, GENERIC_OPTIONS, HEAD_FORMAT, BuildContext, Head, HeadBuilder,
                                     list_builders, mean_head, register_builder, stack_columns)
from promptgen.clip.sources import FALLBACK_TEMPLATE, PromptSource, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.clock import utc_now
from promptgen.version import __version__

__all__ = ["Head", "HeadBuilder", "BUILDERS", "register_builder", "list_builders", "build_head", "save_head",
           "load_head", "HEAD_FORMAT"]


@register_builder("template", default_templates="photo",
                  summary="one template or a template set (e.g. openai80): mean of e(t), renormalised "
                          "(docs/methods.md, template)")
def _template(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return mean_head(ctx.per_class(), renormalise=True), {}


@register_builder("cupl", needs_set=True,
                  summary="CuPL: mean of the class's sentence embeddings, renormalised (docs/methods.md, cupl)")
def _cupl(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return mean_head(ctx.per_class(), renormalise=True), {}


@register_builder("dclip", needs_set=True,
                  summary="DCLIP: mean of '{c}, which (is|has) {d}' embeddings, NOT renormalised (docs/methods.md, dclip)")
def _dclip(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return mean_head(ctx.per_class(), renormalise=False), {}


@register_builder("pooled", options=("pool", "source_weights"),
                  summary="several sources pooled into one mean per class, weighted per source, renormalised "
                          "(CuPL + templates, docs/methods.md, cupl)")
def _pooled(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    """pool=count (CuPL's "CuPL + templates"): W_c = normalise(sum_s w_s * sum_t e(t)), so each
    source counts by its number of texts; pool=mean: W_c = normalise(sum_s w_s * mean_t e(t)),
    so each source counts as one vote whatever its size. Weights default to 1."""
    given = [s for s in ctx.sources if s.name != "fallback"]
    weights = list(ctx.options.get("source_weights") or [1.0] * len(given))
    if len(weights) != len(given):
        raise PromptgenError(f"{len(weights)} source weights for {len(given)} sources",
                             "give one --source-weight per --set/--templates, in the same order")
    weights += [1.0] * (len(ctx.sources) - len(given))  # the --allow-empty fallback counts once
    mode = ctx.options.get("pool", "count")
    if mode not in ("count", "mean"):
        raise PromptgenError(f"unknown pooling {mode!r}", "use --pool count or --pool mean")
    embedded = ctx.embedded()
    columns = []
    for c in range(len(ctx.classes)):
        total = torch.zeros(ctx.encoder.clip.embed_dim)
        for weight, source in zip(weights, embedded):
            if len(source[c]):
                total += float(weight) * (source[c].sum(0) if mode == "count" else source[c].mean(0))
        columns.append(total)
    return F.normalize(stack_columns(columns), dim=0), {"pool": mode, "source_weights": [float(w) for w in weights]}


def build_head(builder: str, *, encoder: TextEncoder, classes: ClassList, sources: list[PromptSource],
               allow_empty: bool = False, image_features: torch.Tensor | None = None,
               pool_features: torch.Tensor | None = None, name: str | None = None, store: Any = None,
               **options: Any) -> Head:
    """Build a head with a registered builder. Classes without any text are an error listing them,
    or with `allow_empty` get the template "a photo of a {c}." (recorded in `info`). `store`: where
    an option naming a set is read (real: counts=SET)."""
    if builder not in BUILDERS:
        raise PromptgenError(f"unknown head builder {builder!r}", f"builders: {', '.join(list_builders())}")
    spec = BUILDERS[builder]
    unknown = sorted(k for k, v in options.items() if v is not None and k not in spec.options + GENERIC_OPTIONS)
    if unknown:
        raise PromptgenError(f"the {builder} builder has no option {', '.join(unknown)}",
                             f"its options: {', '.join(spec.options + GENERIC_OPTIONS)}")
    sources = list(sources)
    if options.get("sentence_rule") is not None:  # DCLIP's rule by default (docs/methods.md, dclip)
        sources = [s.with_sentence_rule(str(options["sentence_rule"]), classes) for s in sources]
    if options.get("dedupe") is not None and not isinstance(options["dedupe"], bool):
        raise PromptgenError(f"dedupe={options['dedupe']!r} is not true or false", "use dedupe=true")
    if options.get("dedupe") and any(s.partners is not None for s in sources):
        raise PromptgenError("dedupe does not apply to differential sets: a sentence shared by two pairs belongs to "
                             "both", "drop dedupe; the fudd builders de-duplicate each class's texts per image, as "
                             "FuDD does")
    if options.get("dedupe"):  # our option: the methods count every repeat
        sources = [s.deduplicated() for s in sources]
    if spec.needs_set and not any(s.kind == "set" for s in sources):
        raise PromptgenError(f"the {builder} builder needs a prompt set", f"give --set {classes.dataset}/SET@vN")
    if not sources and spec.default_templates:
        sources = [source_from_templates(spec.default_templates, classes)]
    if builder == "pooled" and len(sources) < 2:
        raise PromptgenError("the pooled builder needs at least two sources",
                             "give several --set and/or --templates, e.g. a CuPL set and --templates openai80")
    for feature_name, features in (("image", image_features), ("pool", pool_features)):
        if features is not None and features.shape[-1] != encoder.clip.embed_dim:
            raise PromptgenError(f"{feature_name} features have dimension {features.shape[-1]}, but "
                                 f"{encoder.clip.arch} embeds in {encoder.clip.embed_dim}",
                                 "compute the features with the same CLIP model as the head")
    fallback: list[str] = []
    if spec.covers_all:
        counts = [sum(s.counts[c] for s in sources) for c in range(len(classes))]
        empty = [classes.names[c] for c, n in enumerate(counts) if n == 0]
        if empty and not allow_empty:
            raise PromptgenError(f"{len(empty)} of {len(classes)} classes have no prompt in "
                                 f"{', '.join(s.name for s in sources)}: {', '.join(map(repr, empty[:12]))}"
                                 + (f" and {len(empty) - 12} more" if len(empty) > 12 else ""),
                                 f"add texts for them, or pass --allow-empty to give them \"{FALLBACK_TEMPLATE}\"")
        if empty:
            fallback = empty
            texts = [[FALLBACK_TEMPLATE.replace("{c}", c)] if counts[i] == 0 else []
                     for i, c in enumerate(classes.names)]
            sources.append(PromptSource("fallback", "templates", texts, [["fallback"] * len(t) for t in texts],
                                        {"template": FALLBACK_TEMPLATE}))
    ctx = BuildContext(encoder, classes, sources, options,
                       F.normalize(image_features.float(), dim=-1) if image_features is not None else None,
                       F.normalize(pool_features.float(), dim=-1) if pool_features is not None else None,
                       allow_empty=allow_empty, store=store)
    weights, details, *extra = spec.build(ctx)
    counts = [sum(s.counts[c] for s in ctx.sources) for c in range(len(classes))]
    info = {"format": HEAD_FORMAT, "name": name or builder, "builder": builder, "created": utc_now(),
            "promptgen_version": __version__, "shape": list(weights.shape),
            "classes": {"dataset": classes.dataset, "count": len(classes), "hash": classes.hash,
                        "names": list(classes.names)},
            "model": encoder.clip.describe(),
            "sources": [{"name": s.name, "kind": s.kind, "texts": sum(s.counts), **s.meta} for s in ctx.sources],
            "options": {k: v for k, v in options.items() if v is not None},
            "prompt_counts": counts, "prompts_total": sum(counts), "fallback_classes": fallback,
            "details": details}
    return Head(weights.float().contiguous(), info, scorer=extra[0] if extra else None)


