"""Classifier heads: named builders that turn per-class texts into a (D, C) matrix W, so that
logits = 100 * v @ W for normalised image features v (methods.md, preamble).

Every builder is registered with `@register_builder`; `build_head` is the one factory. Builders
share the embedding engine, so a text used by several heads or runs is encoded once.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from promptgen import __version__
from promptgen.classes import ClassList
from promptgen.clip.embed import TextEncoder
from promptgen.clip.sources import FALLBACK_TEMPLATE, TEMPLATE_DIR, PromptSource
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text
from promptgen.formats import dclip_sentence
from promptgen.store import describe_class_mismatch, now_iso

__all__ = ["Head", "HeadBuilder", "BUILDERS", "register_builder", "list_builders", "build_head", "save_head",
           "load_head", "HEAD_FORMAT"]

HEAD_FORMAT = "promptgen.head/1"


@dataclass
class HeadBuilder:
    name: str
    build: Callable[["BuildContext"], tuple[torch.Tensor, dict]]
    summary: str
    default_templates: str | None = None   # used when no source is given
    needs_set: bool = False
    needs_images: bool = False
    options: tuple[str, ...] = ()           # the builder's own options (seed is always accepted)
    covers_all: bool = True                 # every class needs a text (else --allow-empty)
    per_image: bool = False                 # re-ranks each image: no single (D, C) head to save


BUILDERS: dict[str, HeadBuilder] = {}


def register_builder(name: str, *, summary: str, default_templates: str | None = None, needs_set: bool = False,
                     needs_images: bool = False, options: tuple[str, ...] = (), covers_all: bool = True,
                     per_image: bool = False) -> Callable:
    def decorator(function: Callable) -> Callable:
        BUILDERS[name] = HeadBuilder(name, function, summary, default_templates, needs_set, needs_images, options,
                                     covers_all, per_image)
        return function
    return decorator


def list_builders() -> list[str]:
    return sorted(BUILDERS)


@dataclass
class Head:
    """W (D, C), float32, and everything needed to reproduce it."""

    weights: torch.Tensor
    info: dict = field(default_factory=dict)
    scorer: Any = None      # a per-image re-ranker (fudd); then `weights` is its initial head

    def logits(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) logits for normalised image features: 100 * v @ W, or the re-ranker's."""
        if self.scorer is not None:
            return self.scorer.logits(features, labels)
        return 100 * features @ self.weights

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("classes", {}).get("names", []))

    @property
    def name(self) -> str:
        return self.info.get("name") or self.info.get("builder", "head")


@dataclass
class BuildContext:
    encoder: TextEncoder
    classes: ClassList
    sources: list[PromptSource]
    options: dict
    image_features: torch.Tensor | None = None    # normalised (N, D), unlabeled test images (ZPE)
    pool_features: torch.Tensor | None = None     # normalised (M, D), a generic image pool (ZPE mu_pre)
    _embedded: list[list[torch.Tensor]] | None = None
    allow_empty: bool = False

    def embedded(self) -> list[list[torch.Tensor]]:
        """e(t) for every text, per source and class: one encoder call for all sources."""
        if self._embedded is None:
            flat = [t for source in self.sources for texts in source.texts for t in texts]
            vectors = self.encoder.encode_normalized(flat)
            out, position = [], 0
            for source in self.sources:
                per_class = []
                for texts in source.texts:
                    per_class.append(vectors[position:position + len(texts)])
                    position += len(texts)
                out.append(per_class)
            self._embedded = out
        return self._embedded

    def per_class(self) -> list[torch.Tensor]:
        """All of a class's e(t), sources concatenated."""
        embedded = self.embedded()
        dim = self.encoder.clip.embed_dim
        return [torch.cat([source[c] for source in embedded]) if embedded else torch.empty(0, dim)
                for c in range(len(self.classes))]


def _stack_columns(columns: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(columns, dim=1).contiguous().float()


def _mean_head(per_class: list[torch.Tensor], renormalise: bool) -> torch.Tensor:
    columns = [vectors.mean(dim=0) for vectors in per_class]
    head = _stack_columns(columns)
    return F.normalize(head, dim=0) if renormalise else head


@register_builder("template", default_templates="photo",
                  summary="one template or a template set (e.g. openai80): mean of e(t), renormalised (methods.md 1)")
def _template(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return _mean_head(ctx.per_class(), renormalise=True), {}


@register_builder("cupl", needs_set=True,
                  summary="CuPL: mean of the class's sentence embeddings, renormalised (methods.md 2)")
def _cupl(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return _mean_head(ctx.per_class(), renormalise=True), {}


@register_builder("dclip", needs_set=True,
                  summary="DCLIP: mean of '{c}, which (is|has) {d}' embeddings, NOT renormalised (methods.md 3)")
def _dclip(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return _mean_head(ctx.per_class(), renormalise=False), {}


@register_builder("pooled", options=("pool", "source_weights"),
                  summary="several sources pooled into one mean per class, weighted per source, renormalised "
                          "(CuPL + templates, methods.md 2)")
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
    return F.normalize(_stack_columns(columns), dim=0), {"pool": mode, "source_weights": [float(w) for w in weights]}


def _zpe_scores_correction(scores: torch.Tensor, pool_scores: torch.Tensor | None) -> torch.Tensor:
    """(mu_pre + mu_test) / 2 per column, or mu_test alone without a generic pool (methods.md 6, step 2)."""
    mu_test = scores.mean(dim=0)
    return mu_test if pool_scores is None else (pool_scores.mean(dim=0) + mu_test) / 2


def _zpe_select(quality: torch.Tensor, mode: str, tau: float) -> tuple[torch.Tensor, dict]:
    """Weights over prompts from their quality q (methods.md 6, steps 4 and 6)."""
    if mode == "softmax":
        return torch.softmax(quality, dim=0), {}
    q = quality.double().numpy()
    median = float(np.median(q))
    mad = float(np.median(np.abs(q - median)))
    keep = np.ones_like(q, dtype=bool) if mad == 0 else (q - median) / mad > tau
    note = {}
    if not keep.any():
        keep[int(np.argmax(q))] = True
        note = {"no_prompt_above_tau": True}
    weights = torch.from_numpy(keep / keep.sum()).to(quality.dtype)
    return weights, {"median": median, "mad": mad, "kept": int(keep.sum()), **note}


@register_builder("zpe", needs_images=True, options=("zpe_mode", "zpe_tau", "zpe_group"),
                  summary="ZPE: prompts weighted by their zero-shot quality on unlabeled images, softmax or MAD "
                          "selection, no renormalisation (methods.md 6)")
def _zpe(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    images = ctx.image_features
    if images is None or len(images) == 0:
        raise PromptgenError("the zpe builder needs unlabeled image features",
                             "give --zpe-features FILE (or build it inside `promptgen eval`, which uses the "
                             "evaluation images without their labels)")
    mode = ctx.options.get("zpe_mode", "softmax")
    if mode not in ("softmax", "mad"):
        raise PromptgenError(f"unknown ZPE mode {mode!r}", "use --zpe-mode softmax or --zpe-mode mad")
    tau = float(ctx.options.get("zpe_tau", 0.5))
    group = ctx.options.get("zpe_group", "auto")
    images = images.float()
    pool = ctx.pool_features.float() if ctx.pool_features is not None else None
    embedded = ctx.embedded()
    # families: (source, template/question) pairs that give every class a prompt, as ZPE's p
    families: list[tuple[int, str]] = []
    covering = True
    for s, source in enumerate(ctx.sources):
        labels = list(dict.fromkeys(label for per_class in source.families for label in per_class))
        for label in labels:
            if not all(label in per_class for per_class in source.families):
                covering = False
            families.append((s, label))
    if group == "auto":
        group = "family" if covering and len(families) > 1 else "class"
    if group == "family" and not covering:
        raise PromptgenError("zpe --zpe-group family needs every template/question to cover every class",
                             "use --zpe-group class to weight each class's texts separately")
    info: dict[str, Any] = {"zpe_mode": mode, "zpe_group": group, "correction": "pre+test" if pool is not None
                            else "test-only", "images": int(len(images))}
    if mode == "mad":
        info["tau"] = tau
    if group == "family":
        # (P, C, D): e(prompt_p(c)), the family's texts for class c averaged and normalised
        prompt_vectors = torch.zeros(len(families), len(ctx.classes), ctx.encoder.clip.embed_dim)
        family_index = {family: p for p, family in enumerate(families)}
        for s, source in enumerate(ctx.sources):
            for c, labels in enumerate(source.families):
                rows = torch.tensor([family_index[(s, label)] for label in labels], dtype=torch.long)
                prompt_vectors[:, c].index_add_(0, rows, embedded[s][c])
        prompt_vectors = F.normalize(prompt_vectors, dim=-1)
        quality = []
        for vectors in prompt_vectors:
            scores = 100 * images @ vectors.T
            pool_scores = 100 * pool @ vectors.T if pool is not None else None
            corrected = scores - _zpe_scores_correction(scores, pool_scores)
            quality.append(corrected.max(dim=1).values.double().mean())
        quality_t = torch.stack(quality)
        weights, selection = _zpe_select(quality_t, mode, tau)
        head = torch.einsum("p,pcd->dc", weights.float(), prompt_vectors)
        info.update({"families": [f"{ctx.sources[s].name}#{label}" for s, label in families],
                     "quality": [round(float(q), 6) for q in quality_t], "weights": [float(w) for w in weights],
                     **selection})
        return head.contiguous(), info
    # class mode: a description belongs to one class only, so "max over classes" becomes "the images
    # the equal-weight head assigns to that class"; the rest of the rule is unchanged
    per_class = ctx.per_class()
    assigned = (images @ _mean_head(per_class, renormalise=True)).argmax(dim=1)
    columns, kept, uniform = [], [], 0
    for c, vectors in enumerate(per_class):
        scores = 100 * images @ vectors.T
        pool_scores = 100 * pool @ vectors.T if pool is not None else None
        corrected = scores - _zpe_scores_correction(scores, pool_scores)
        mine = assigned == c
        if len(vectors) == 1 or not bool(mine.any()):
            weights = torch.full((len(vectors),), 1.0 / len(vectors))
            uniform += 1
            kept.append(len(vectors))
        else:
            weights, selection = _zpe_select(corrected[mine].double().mean(dim=0), mode, tau)
            kept.append(int((weights > 0).sum()))
        columns.append(weights.float() @ vectors)
    info.update({"classes_with_uniform_weights": uniform, "kept_per_class": kept})
    return _stack_columns(columns), info


def _waffle_descriptors(count: int, seed: int) -> list[str]:
    """WaffleCLIP's random descriptors (methods.md 4): `count` pairs of a random word from the
    authors' word list and a random character string of the same length; the same for all classes."""
    words = [w for w in (TEMPLATE_DIR / "waffle_words.txt").read_text(encoding="utf-8").splitlines() if w.strip()]
    rng = random.Random(seed)
    descriptors = []
    for _ in range(count):
        word = rng.choice(words)
        descriptors.append(word)
        descriptors.append("".join(rng.choice(string.ascii_lowercase) for _ in range(len(word))))
    return descriptors


@register_builder("waffle", options=("waffle_count",),
                  summary="WaffleCLIP control: 'A photo of a {c}, which (is|has) {random}' over seeded random "
                          "word/character pairs, mean NOT renormalised; with --set adds its texts (Waffle+GPT) "
                          "(methods.md 4)")
def _waffle(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    count = int(ctx.options.get("waffle_count", 15))
    seed = int(ctx.options.get("seed", 0))
    if count < 1:
        raise PromptgenError("--waffle-count must be at least 1", "WaffleCLIP uses 15 pairs")
    descriptors = _waffle_descriptors(count, seed)
    texts = [[dclip_sentence(f"A photo of a {c}", d) + "." for d in descriptors] for c in ctx.classes.names]
    ctx.sources.append(PromptSource(f"waffle:seed={seed}", "random", texts, [["waffle"] * len(t) for t in texts],
                                    {"count": count, "seed": seed}))
    ctx._embedded = None
    return _mean_head(ctx.per_class(), renormalise=False), {"waffle_count": count, "seed": seed,
                                                            "descriptors": descriptors}


def _unique_per_class(ctx: BuildContext) -> list[torch.Tensor]:
    """Each class's embeddings with repeated texts counted once (a sentence shared by two pairs)."""
    embedded = ctx.embedded()
    columns = []
    for c in range(len(ctx.classes)):
        seen, rows = set(), []
        for s, source in enumerate(ctx.sources):
            for t, text in enumerate(source.texts[c]):
                if text not in seen:
                    seen.add(text)
                    rows.append(embedded[s][c][t])
        columns.append(torch.stack(rows) if rows else torch.zeros(0, ctx.encoder.clip.embed_dim))
    return columns


@register_builder("fudd-static", needs_set=True,
                  summary="FuDD static: mean of each class's differential sentences over all its pairs, "
                          "de-duplicated, renormalised (methods.md 5, step 5)")
def _fudd_static(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    return _mean_head(_unique_per_class(ctx), renormalise=True), {}


def _initial_head(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    """FuDD's initial head: a template set by name (default photo: "a photo of a {c}."), a head
    file, or (from Python) a tensor or Head."""
    initial = ctx.options.get("initial", "photo")
    if isinstance(initial, Head):
        initial = initial.weights
    if isinstance(initial, torch.Tensor):
        weights, described = initial.float(), {"initial": "tensor"}
    elif str(initial).endswith((".pt", ".npy")):
        weights = load_head(Path(initial), ctx.classes, ctx.encoder.clip.embed_dim).weights
        described = {"initial": str(initial)}
    else:
        from promptgen.clip.sources import source_from_templates

        source = source_from_templates(str(initial), ctx.classes)
        vectors = ctx.encoder.encode_normalized([t for texts in source.texts for t in texts])
        per_class = list(vectors.split(source.counts))
        weights, described = _mean_head(per_class, renormalise=True), {"initial": source.name}
    if weights.shape != (ctx.encoder.clip.embed_dim, len(ctx.classes)):
        raise PromptgenError(f"the initial head has shape {tuple(weights.shape)}, expected "
                             f"({ctx.encoder.clip.embed_dim}, {len(ctx.classes)})",
                             "use a head of the same CLIP model and class list")
    return weights, described


@register_builder("fudd", needs_set=True, options=("k", "initial"), covers_all=False, per_image=True,
                  summary="FuDD: per image, re-rank the initial head's top-k with each class's differential "
                          "sentences from its pairs inside the top-k (methods.md 5, step 4)")
def _fudd(ctx: BuildContext) -> tuple[torch.Tensor, dict, Any]:
    from promptgen.clip.fudd import FuddReranker

    pair_sources = [s for s in ctx.sources if s.partners is not None]
    others = [s.name for s in ctx.sources if s.partners is None]
    if not pair_sources or others:
        raise PromptgenError(f"the fudd builder takes differential sets (records with pairs); "
                             f"{', '.join(others)} has none",
                             f"make one with `promptgen differentiate {ctx.classes.dataset} ...`; give another head "
                             f"as its initial head with initial=FILE.pt, or mix sets with the pooled builder")
    k = int(ctx.options.get("k", min(10, len(ctx.classes))))
    initial, described = _initial_head(ctx)
    side_texts: dict[tuple[int, int], list[str]] = {}
    for source in pair_sources:
        for c, (texts, partners) in enumerate(zip(source.texts, source.partners)):
            for text, partner in zip(texts, partners):
                if partner is not None and partner != c:
                    side_texts.setdefault((c, partner), []).append(text)
    reranker = FuddReranker.from_texts(initial, k, side_texts, ctx.encoder.encode_normalized)
    pairs = {tuple(sorted(side)) for side in side_texts}
    details = {"k": k, **described, "pairs": len(pairs), "unique_sentences": int(len(reranker.vectors)),
               "failed_pairs": sum(int(s.meta.get("failed_pairs", 0)) for s in pair_sources)}
    return initial, details, reranker


def _synonym_candidates(ctx: BuildContext) -> tuple[list, list[PromptSource]]:
    """The candidates of the synonyms set among the sources, and the other sources (whose texts get
    the new names); without other sources, the photo template."""
    from promptgen.stages.synonyms import Candidate, add_name

    synonyms = [s for s in ctx.sources if s.meta.get("text_kind") == "synonym"]
    if not synonyms:
        raise PromptgenError("this builder needs a synonyms set among its sources",
                             f"make one with `promptgen synonyms {ctx.classes.dataset} --source wordnet`")
    candidates = []
    for c in range(len(ctx.classes)):  # several sets (wordnet + llm) merge: the union of their names
        per_class = [Candidate(ctx.classes.names[c], ["official"])]
        for source in synonyms:
            for name, family in zip(source.texts[c], source.families[c]):
                add_name(per_class, name, [] if family == "official" else [family or "set"])
        candidates.append(per_class)
    others = [s for s in ctx.sources if all(s is not syn for syn in synonyms)]
    if not others:
        from promptgen.clip.sources import source_from_templates

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
    from promptgen.parsing import name_pattern as pattern_of
    from promptgen.rename import replace_name

    out = []
    for source in sources:
        texts, families, unmatched = [], [], 0
        for c, (class_texts, class_families) in enumerate(zip(source.texts, source.families)):
            official = ctx.classes.names[c]
            texts.append([])
            families.append([])
            for text, family in zip(class_texts, class_families):
                variants = list(dict.fromkeys(replace_name(text, official, name) for name in names[c]))
                if any(name != official for name in names[c]) and not pattern_of(official).search(text):
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


def _filters(ctx: BuildContext) -> tuple[str, ...]:
    value = ctx.options.get("filters", "ambiguous+subset")
    return tuple(f for f in re.split(r"[+,\s]+", value) if f and f != "none") if isinstance(value, str) else tuple(value)


@register_builder("real", needs_set=True, options=_RENAME_OPTIONS + _BASE_OPTIONS,
                  summary="REAL-Prompt: each class's most recognisable name (synonyms set + scorer, or a rename "
                          "file) in the templates or descriptions (methods.md 7)")
def _real(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    from promptgen.rename import choose_names, load_rename_file

    candidates, others = _synonym_candidates(ctx)
    if ctx.options.get("scorer") == "llm" and not ctx.options.get("rename"):
        raise PromptgenError("the real builder does not ask an LLM itself",
                             f"run `promptgen rename {ctx.classes.dataset} --scorer llm --model ... -o names.json`, "
                             f"then build with rename=names.json")
    if ctx.options.get("rename"):
        chosen = load_rename_file(Path(ctx.options["rename"]), ctx.classes)
        how = {"rename_file": str(ctx.options["rename"])}
    else:
        result = choose_names(ctx.classes, candidates, ctx.options.get("scorer", "frequency"), filters=_filters(ctx),
                              margin=float(ctx.options.get("margin", 0.0)), encoder=ctx.encoder)
        chosen = result.chosen
        how = {"scorer": result.scorer, "filters": list(result.filters)}
    synonyms = [src.name for src in ctx.sources if src.meta.get("text_kind") == "synonym"]
    ctx.sources = _renamed_sources(ctx, others, [[name] for name in chosen])  # the texts the head is made of
    weights, details = _delegate(ctx, ctx.sources, _RENAME_OPTIONS)
    renamed = {ctx.classes.names[c]: name for c, name in enumerate(chosen) if name != ctx.classes.names[c]}
    return weights, {"synonyms": synonyms, **how, "renamed": len(renamed), "names": renamed, **details}


@register_builder("synonym-ensemble", needs_set=True, options=_RENAME_OPTIONS + _BASE_OPTIONS,
                  summary="every kept name of a class (synonyms set, filtered) in every template or description, "
                          "averaged per class (methods.md 7)")
def _synonym_ensemble(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    from promptgen.rename import filter_candidates

    candidates, others = _synonym_candidates(ctx)
    verdicts = filter_candidates(ctx.classes, candidates, _filters(ctx), encoder=ctx.encoder)
    names = [[cand.name for cand, reason in zip(per_class, reasons) if reason is None]
             for per_class, reasons in zip(candidates, verdicts)]
    synonyms = [src.name for src in ctx.sources if src.meta.get("text_kind") == "synonym"]
    ctx.sources = _renamed_sources(ctx, others, names)
    weights, details = _delegate(ctx, ctx.sources, _RENAME_OPTIONS)
    return weights, {"synonyms": synonyms, "filters": list(_filters(ctx)), "names": names,
                     "names_per_class": [len(n) for n in names], **details}


def build_head(builder: str, *, encoder: TextEncoder, classes: ClassList, sources: list[PromptSource],
               allow_empty: bool = False, image_features: torch.Tensor | None = None,
               pool_features: torch.Tensor | None = None, name: str | None = None, **options: Any) -> Head:
    """Build a head with a registered builder. Classes without any text are an error listing them,
    or with `allow_empty` get the template "a photo of a {c}." (recorded in `info`)."""
    if builder not in BUILDERS:
        raise PromptgenError(f"unknown head builder {builder!r}", f"builders: {', '.join(list_builders())}")
    spec = BUILDERS[builder]
    unknown = sorted(k for k, v in options.items() if v is not None and k not in spec.options + ("seed",))
    if unknown:
        raise PromptgenError(f"the {builder} builder has no option {', '.join(unknown)}",
                             f"its options: {', '.join(spec.options + ('seed',))}")
    sources = list(sources)
    if spec.needs_set and not any(s.kind == "set" for s in sources):
        raise PromptgenError(f"the {builder} builder needs a prompt set", f"give --set {classes.dataset}/SET@vN")
    if not sources and spec.default_templates:
        from promptgen.clip.sources import source_from_templates

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
    if spec.covers_all and (sources or builder != "waffle"):
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
                       allow_empty=allow_empty)
    weights, details, *extra = spec.build(ctx)
    counts = [sum(s.counts[c] for s in ctx.sources) for c in range(len(classes))]
    info = {"format": HEAD_FORMAT, "name": name or builder, "builder": builder, "created": now_iso(),
            "promptgen_version": __version__, "shape": list(weights.shape),
            "classes": {"dataset": classes.dataset, "count": len(classes), "hash": classes.hash,
                        "names": list(classes.names)},
            "model": encoder.clip.describe(),
            "sources": [{"name": s.name, "kind": s.kind, "texts": sum(s.counts), **s.meta} for s in ctx.sources],
            "options": {k: v for k, v in options.items() if v is not None},
            "prompt_counts": counts, "prompts_total": sum(counts), "fallback_classes": fallback,
            "details": details}
    return Head(weights.float().contiguous(), info, scorer=extra[0] if extra else None)


def save_head(head: Head, path: Path) -> Path:
    """The (D, C) tensor as CLIP_benchmark's `--load_clfs` reads it (a plain `torch.save` of a
    tensor) and `<path stem>.json` beside it. Returns the sidecar's path."""
    if head.scorer is not None:
        raise PromptgenError(f"the {head.info.get('builder')} head re-ranks each image and has no single (D, C) "
                             "matrix to save", "evaluate it with `promptgen eval --build fudd:SET`, or save the "
                             "static variant (--builder fudd-static)")
    sidecar = path.with_suffix(".json")
    if path.suffix == ".json":
        raise PromptgenError(f"{path} would be overwritten by its own sidecar", "name the head FILE.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".npy":
        with open(temp, "wb") as handle:
            np.save(handle, head.weights.detach().cpu().numpy(), allow_pickle=False)
    else:
        torch.save(head.weights.detach().cpu().contiguous().clone(), temp)
    temp.replace(path)
    atomic_write_text(sidecar, json.dumps({**head.info, "file": path.name}, ensure_ascii=False, indent=1) + "\n")
    return sidecar


def load_head(path: Path, classes: ClassList | None = None, embed_dim: int | None = None) -> Head:
    """A head written by `save_head`, or any (D, C) tensor in a `.pt` or `.npy` file. With `classes`,
    a sidecar's class list must match (its mismatches are named); the shape must fit either way."""
    if not path.is_file():
        raise PromptgenError(f"head file {path} not found", "write one with `promptgen head`")
    try:
        if path.suffix == ".npy":
            weights = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PromptgenError(f"cannot read head {path}: {exc}".splitlines()[0],
                             "give a tensor saved with torch.save (.pt) or numpy (.npy)") from exc
    if isinstance(weights, dict) and "weights" in weights:
        weights = weights["weights"]
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        raise PromptgenError(f"{path} does not hold a 2-D tensor", "a head is a (D, C) tensor: D = embedding size")
    info: dict = {"name": path.stem, "file": str(path)}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        # only our own sidecars count: a foo.json beside foo.pt may be anything
        if isinstance(data, dict) and data.get("format") == HEAD_FORMAT and isinstance(data.get("classes"), dict):
            info = {**data, "name": path.stem, "file": str(path)}
    if classes is not None:
        names = info.get("classes", {}).get("names")
        if names is not None and info["classes"].get("hash") != classes.hash:
            raise PromptgenError(f"head {path.name} was built for another class list than {classes.dataset}'s: "
                                 + describe_class_mismatch(classes.names, names),
                                 f"build the head for {classes.dataset} with `promptgen head {classes.dataset} ...`")
        if weights.shape[1] != len(classes):
            hint = (" (it looks transposed: save W as (D, C))" if weights.shape[0] == len(classes) else "")
            raise PromptgenError(f"head {path.name} has {weights.shape[1]} columns for the {len(classes)} classes "
                                 f"of {classes.dataset}{hint}", "a head is a (D, C) tensor, one column per class")
    if embed_dim is not None and weights.shape[0] != embed_dim:
        raise PromptgenError(f"head {path.name} has dimension {weights.shape[0]}, the features {embed_dim}",
                             "use a head built with the same CLIP model as the features")
    return Head(weights.float().contiguous(), info)
