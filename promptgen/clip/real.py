"""REAL-Prompt (Parashar et al., CVPR 2024; docs/methods.md, real): each class's most recognisable
name in the templates or descriptions, and the synonym ensemble."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from promptgen.clip.registry import BUILDERS, BuildContext, register_builder
from promptgen.clip.sources import FALLBACK_TEMPLATE, PromptSource, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.names import Candidate, add_name
from promptgen.parsing import name_pattern
from promptgen.name_counts import load_counts_set
from promptgen.rename import (choose_names, count_lookup, default_margin, filter_candidates, load_counts_file,
                              load_rename_file, replace_name)

__all__: list[str] = []


def _synonym_candidates(ctx: BuildContext, counted: list | None = None) -> tuple[list, list[PromptSource]]:
    """The candidates of the synonyms set(s) among the sources and of caption counts, and the other
    sources (whose texts get the new names); without other sources, the photo template."""
    synonyms = [s for s in ctx.sources if s.meta.get("text_kind") == "synonym"]
    if not synonyms and counted is None:
        raise PromptgenError("this builder needs a synonyms set among its sources (or counts=SET|FILE for real)",
                             f"make one with `promptgen synonyms {ctx.classes.dataset} --source wordnet`")
    candidates = []
    for c in range(len(ctx.classes)):  # several sets (wordnet + llm) merge: the union of their names
        per_class = [Candidate(ctx.classes.names[c], ["official"])]
        for source in synonyms:
            for name, family in zip(source.texts[c], source.families[c]):
                add_name(per_class, name, [] if family == "official" else [family or "set"])
        for name, _ in counted[c] if counted is not None else []:
            add_name(per_class, name, ["counts"])
        candidates.append(per_class)
    others = [s for s in ctx.sources if all(s is not syn for syn in synonyms)]
    if not others:
        others = [source_from_templates("photo", ctx.classes)]
    # the synonyms set covers every class (its official names); the texts that get renamed must too
    counts = [sum(s.counts[c] for s in others) for c in range(len(ctx.classes))]
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty and not ctx.allow_empty:
        raise PromptgenError(f"{len(empty)} of {len(ctx.classes)} classes have no text in "
                             f"{', '.join(s.name for s in others)} to rename: "
                             + ", ".join(repr(ctx.classes.names[c]) for c in empty[:12]),
                             f"add texts for them, or pass --allow-empty to give them \"{FALLBACK_TEMPLATE}\"")
    if empty:
        texts = [[FALLBACK_TEMPLATE.replace("{c}", name)] if c in empty else [] for c, name in enumerate(ctx.classes.names)]
        others = others + [PromptSource("fallback", "templates", texts, [["fallback"] * len(t) for t in texts],
                                        {"template": FALLBACK_TEMPLATE})]
    return candidates, others


def _renamed_sources(ctx: BuildContext, sources: list[PromptSource], names: list[list[str]]) -> list[PromptSource]:
    """Each source's texts with the official class name replaced by each of the class's names."""
    out = []
    for source in sources:
        texts, families, unmatched = [], [], 0
        for c, (class_texts, class_families) in enumerate(zip(source.texts, source.families)):
            official = ctx.classes.names[c]
            texts.append([])
            families.append([])
            for text, family in zip(class_texts, class_families):
                # templates are formatted with the name as REAL does; in descriptions, a/an follows it (ours)
                variants = list(dict.fromkeys(replace_name(text, official, name, source.kind != "templates")
                                              for name in names[c]))
                if any(name != official for name in names[c]) and not name_pattern(official).search(text):
                    unmatched += 1  # the text never names the class: it stays as it is, once
                texts[-1] += variants
                families[-1] += [family] * len(variants)
        out.append(PromptSource(source.name, source.kind, texts, families,
                                {**source.meta, "renamed": True, "texts_without_the_class_name": unmatched}))
    return out


def _delegate(ctx: BuildContext, sources: list[PromptSource], own: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    """Aggregate renamed sources with the `base` builder (template, cupl, dclip, pooled or zpe)."""
    base = ctx.options.get("base", "template")
    if base not in ("template", "cupl", "dclip", "pooled", "zpe"):
        raise PromptgenError(f"unknown base {base!r}", "use base template, cupl, dclip, pooled or zpe")
    options = {k: v for k, v in ctx.options.items() if k not in own}
    inner = BuildContext(ctx.encoder, ctx.classes, sources, options, ctx.image_features, ctx.pool_features)
    weights, details, *_ = BUILDERS[base].build(inner)
    return weights, {"base": base, **details}


_RENAME_OPTIONS = ("scorer", "filters", "margin", "rename", "base")
_BASE_OPTIONS = ("zpe_mode", "zpe_tau", "zpe_group", "pool", "source_weights")


def _filters(ctx: BuildContext, default: str = "ambiguous+subset") -> tuple[str, ...]:
    value = ctx.options.get("filters", default)
    return tuple(f for f in re.split(r"[+,\s]+", value) if f and f != "none") if isinstance(value, str) else tuple(value)


def _counted(ctx: BuildContext) -> tuple[list[list[tuple[str, float]]] | None, str | None]:
    """The caption counts of option `counts`: REAL's metrics file when the value is a file that
    exists, else a counts set of the dataset; and how the sidecar names them."""
    value = ctx.options.get("counts")
    if not value:
        return None, None
    path = Path(str(value)).expanduser()
    if path.is_file():
        return load_counts_file(path, ctx.classes), str(value)
    if path.suffix.lower() == ".json":  # meant as a file: say so, not "no such set"
        raise PromptgenError(f"counts file {value} does not exist", "give REAL's metrics-*.json, or a counts set "
                                                                    "SET[@vN] of the dataset")
    if ctx.store is None:
        raise PromptgenError(f"counts={value} names a counts set, but no prompt store was given to read it from",
                             "build the head with `promptgen head`/`eval`, or pass store= to build_head")
    counted, info = load_counts_set(ctx.store, str(value), ctx.classes)
    return counted, str(info.ref)


@register_builder("real", options=_RENAME_OPTIONS + ("counts",) + _BASE_OPTIONS, covers_all=False,
                  summary="REAL-Prompt: each class's most recognisable name by REAL's rule (synonyms set and/or "
                          "counts=SET|FILE, a scorer, or a rename file) in the templates or descriptions "
                          "(docs/methods.md, real)")
def _real(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    counted, counts_name = _counted(ctx)
    candidates, others = _synonym_candidates(ctx, counted)
    if ctx.options.get("scorer") == "llm" and not ctx.options.get("rename"):
        raise PromptgenError("the real builder does not ask an LLM itself",
                             f"run `promptgen rename {ctx.classes.dataset} --scorer llm --model ... -o names.json`, "
                             f"then build with rename=names.json")
    if ctx.options.get("rename"):
        chosen = load_rename_file(Path(ctx.options["rename"]), ctx.classes)
        how = {"rename_file": str(ctx.options["rename"])}
    else:
        counts = count_lookup(counted) if counted else None
        scorer = ctx.options.get("scorer", "counts" if counts else "frequency")
        # REAL's rule has no margin; frequency's default (ours) is measured (rename.FREQUENCY_MARGIN)
        margin = float(ctx.options.get("margin", default_margin(scorer)))
        result = choose_names(ctx.classes, candidates, scorer, filters=_filters(ctx, "subset"), margin=margin,
                              encoder=ctx.encoder, counts=counts)
        chosen = result.chosen
        how = {"scorer": result.scorer, "filters": list(result.filters), **({"counts": counts_name} if counts else {})}
    synonyms = [src.name for src in ctx.sources if src.meta.get("text_kind") == "synonym"]
    ctx.sources = _renamed_sources(ctx, others, [[name] for name in chosen])  # the texts the head is made of
    weights, details = _delegate(ctx, ctx.sources, _RENAME_OPTIONS + ("counts",))
    renamed = {ctx.classes.names[c]: name for c, name in enumerate(chosen) if name != ctx.classes.names[c]}
    return weights, {"synonyms": synonyms, **how, "renamed": len(renamed), "names": renamed, **details}


@register_builder("synonym-ensemble", needs_set=True, options=_RENAME_OPTIONS + _BASE_OPTIONS,
                  summary="every kept name of a class (synonyms set, filtered) in every template or description, "
                          "averaged per class (docs/methods.md, real)")
def _synonym_ensemble(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    candidates, others = _synonym_candidates(ctx)
    verdicts = filter_candidates(ctx.classes, candidates, _filters(ctx), encoder=ctx.encoder)
    names = [[cand.name for cand, reason in zip(per_class, reasons) if reason is None]
             for per_class, reasons in zip(candidates, verdicts)]
    synonyms = [src.name for src in ctx.sources if src.meta.get("text_kind") == "synonym"]
    ctx.sources = _renamed_sources(ctx, others, names)
    weights, details = _delegate(ctx, ctx.sources, _RENAME_OPTIONS)
    return weights, {"synonyms": synonyms, "filters": list(_filters(ctx)), "names": names,
                     "names_per_class": [len(n) for n in names], **details}
