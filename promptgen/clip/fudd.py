"""FuDD (Esfandiarpoor & Bach, ICLR 2024; docs/methods.md, fudd): per-image re-ranking with
differential descriptions, every sentence embedded once, and the static variant.

For an image v: S = its top-k classes under the initial head; for each class c in S, its
differential sentences from the pairs (c, d) with d in S; a pair without descriptions gives c the
template "a photo of a {c}." instead (FuDD's `get_cls_pair_prompts`); the union is de-duplicated,
capitalised as FuDD does (`str.capitalize`), embedded, averaged and renormalised; the prediction
is the argmax of v . column over S only. Without templates (a bare `from_texts` call), a class
with no sentence keeps its initial-head column.

The per-image heads are never built one by one: the sentence embeddings are computed once, and
for a batch of images a sparse (images x k, unique sentences) incidence matrix, de-duplicated,
multiplies them, so the cost per image is a few sparse products rather than a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from promptgen.clip.head_files import HEAD_SUFFIXES, load_head
from promptgen.clip.pairs import check_k
from promptgen.clip.registry import BuildContext, mean_head, register_builder
from promptgen.clip.sources import FALLBACK_TEMPLATE, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.formats import wordify

__all__ = ["FuddReranker", "OUTSIDE_TOP_K", "fudd_text"]

# logits of classes outside the top-k are pushed below every re-ranked class, keeping their initial order
OUTSIDE_TOP_K = 1e4


@dataclass
class FuddReranker:
    """initial: (D, C) head; k: ambiguous-set size; sides[(c, d)] = indices into `vectors` of
    class c's sentences from the pair {c, d}; vectors: (U, D) normalised embeddings of the unique
    (class, sentence) units."""

    initial: torch.Tensor
    k: int
    sides: dict[tuple[int, int], list[int]]
    vectors: torch.Tensor
    template_units: torch.Tensor | None = None   # (C,) unit of each class's "a photo of a {c}."
    chunk: int = 512
    totals: dict = field(default_factory=lambda: {"images": 0, "columns": 0, "fallback_columns": 0,
                                                  "labelled": 0, "topk_hits": 0})

    def __post_init__(self) -> None:
        num_classes = self.initial.shape[1]
        check_k(self.k, num_classes)
        self.initial = self.initial.float()
        self._initial_unit = F.normalize(self.initial, dim=0)  # a class without sentences: cosine with its column
        self.vectors = F.normalize(self.vectors.float(), dim=-1) if len(self.vectors) else \
            torch.zeros(0, self.initial.shape[0])
        # CSR over the (c, d) sides, sorted by code c * C + d, for a vectorised lookup
        ordered = sorted(self.sides.items())
        self._codes = torch.tensor([c * num_classes + d for (c, d), _ in ordered], dtype=torch.long)
        lengths = torch.tensor([len(units) for _, units in ordered], dtype=torch.long)
        self._starts = torch.cumsum(lengths, 0) - lengths
        self._lengths = lengths
        self._units = torch.tensor([u for _, units in ordered for u in units], dtype=torch.long)
        slots = torch.arange(self.k)
        a, b = torch.meshgrid(slots, slots, indexing="ij")
        off_diagonal = a != b
        self._slot_a, self._slot_b = a[off_diagonal], b[off_diagonal]

    def reset(self) -> None:
        self.totals = {key: 0 for key in self.totals}

    @property
    def num_classes(self) -> int:
        return self.initial.shape[1]

    def logits(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C): 100 x the re-ranked score for each image's top-k classes; every other class keeps
        its initial logit minus OUTSIDE_TOP_K, so top-1 is FuDD's prediction and top-5 stays meaningful."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(features), self.chunk):
                v = F.normalize(features[start:start + self.chunk].float(), dim=-1)
                target = labels[start:start + self.chunk] if labels is not None else None
                out.append(self._batch(v, target))
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    def _batch(self, v: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        batch, k, num_classes = len(v), self.k, self.num_classes
        initial = v @ self.initial
        top = initial.topk(k, dim=1).indices                                   # (B, k)
        rows = (torch.arange(batch)[:, None] * k + self._slot_a[None, :]).reshape(-1)
        codes = (top[:, self._slot_a] * num_classes + top[:, self._slot_b]).reshape(-1)
        columns = torch.zeros(batch * k, v.shape[1])
        has_text = torch.zeros(batch * k, dtype=torch.bool)
        if len(self._codes):
            position = torch.searchsorted(self._codes, codes).clamp(max=len(self._codes) - 1)
            found = self._codes[position] == codes
        else:
            position, found = codes, torch.zeros(len(codes), dtype=torch.bool)
        entry_rows, units = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        if bool(found.any()):
            found_rows, position = rows[found], position[found]
            lengths = self._lengths[position]
            entry_rows = torch.repeat_interleave(found_rows, lengths)
            first = torch.repeat_interleave(self._starts[position], lengths)
            within = torch.arange(len(entry_rows)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            units = self._units[first + within]
        if self.template_units is not None:  # a pair without descriptions: the class's template instead
            missing_rows = rows[~found]
            missing_classes = top[:, self._slot_a].reshape(-1)[~found]
            entry_rows = torch.cat([entry_rows, missing_rows])
            units = torch.cat([units, self.template_units[missing_classes]])
            template_rows = torch.zeros(batch * k, dtype=torch.bool)
            template_rows[missing_rows] = True
            self.totals["fallback_columns"] += int(template_rows.sum())
        if len(entry_rows):
            # the union of a class's sentences over its pairs in S: each sentence counts once
            unique = torch.unique(entry_rows * len(self.vectors) + units)
            entry_rows, units = unique // len(self.vectors), unique % len(self.vectors)
            if len(unique):
                incidence = torch.sparse_coo_tensor(torch.stack([entry_rows, units]), torch.ones(len(unique)),
                                                    (batch * k, len(self.vectors)), is_coalesced=True,
                                                    check_invariants=False)
                columns = torch.sparse.mm(incidence, self.vectors)
                has_text[entry_rows] = True
        columns = F.normalize(columns, dim=-1).view(batch, k, -1)
        reranked = (columns * v[:, None, :]).sum(-1)                            # (B, k)
        initial_top = (v @ self._initial_unit).gather(1, top)
        has_text = has_text.view(batch, k)
        reranked = torch.where(has_text, reranked, initial_top)
        logits = 100 * initial - OUTSIDE_TOP_K
        logits.scatter_(1, top, 100 * reranked)
        self.totals["images"] += batch
        self.totals["columns"] += batch * k
        if self.template_units is None:
            self.totals["fallback_columns"] += int((~has_text).sum())
        if labels is not None:
            known = labels >= 0
            self.totals["labelled"] += int(known.sum())
            self.totals["topk_hits"] += int(((top == labels[:, None]).any(dim=1) & known).sum())
        return logits

    def report(self) -> dict:
        t = self.totals
        return {"k": self.k, "images": t["images"],
                "topk_recall": t["topk_hits"] / t["labelled"] if t["labelled"] else None,
                "fallback_columns": t["fallback_columns"],
                "fallback_fraction": t["fallback_columns"] / t["columns"] if t["columns"] else 0.0,
                "sides": len(self.sides), "unique_sentences": int(len(self.vectors))}

    @staticmethod
    def from_texts(initial: torch.Tensor, k: int, side_texts: dict[tuple[int, int], list[str]],
                   encode: Callable[[list[str]], torch.Tensor], *, templates: list[str] | None = None,
                   capitalize: bool = False) -> "FuddReranker":
        """Build from class c's sentences per partner d; `encode(texts) -> (n, D)` is called once.
        `templates` (one text per class) stand in for a pair without descriptions; `capitalize`
        embeds each text as `str.capitalize` gives it, after de-duplication, as FuDD does."""
        unit_index: dict[tuple[int, str], int] = {}
        sides: dict[tuple[int, int], list[int]] = {}
        for (c, d), texts in side_texts.items():
            if c == d:
                raise PromptgenError(f"a pair of class {c} with itself", "pairs join two different classes")
            units = []
            for text in texts:
                unit = unit_index.setdefault((c, text), len(unit_index))
                if unit not in units:
                    units.append(unit)
            if units:
                sides[(c, d)] = units
        template_units = None
        if templates is not None:
            template_units = torch.tensor([unit_index.setdefault((c, text), len(unit_index))
                                           for c, text in enumerate(templates)], dtype=torch.long)
        texts = [fudd_text(text, capitalize) for (_, text) in unit_index]
        vectors = encode(texts) if texts else torch.zeros(0, initial.shape[0])
        return FuddReranker(initial, k, sides, vectors, template_units)


def fudd_text(text: str, capitalize: bool = True) -> str:
    """The text FuDD embeds: `str.capitalize()` of it (first letter up, every other letter down,
    prompt_factory.py), or the text as it is with capitalize=False (our option)."""
    return text.capitalize() if capitalize else text


def fudd_template(class_name: str) -> str:
    """FuDD's default template for a class ("_" in names read as spaces)."""
    return FALLBACK_TEMPLATE.replace("{c}", wordify(class_name))


def _capitalize_option(ctx: BuildContext) -> bool:
    value = ctx.options.get("capitalize", True)
    if not isinstance(value, bool):
        raise PromptgenError(f"capitalize={value!r} is not true or false", "use capitalize=true (FuDD's) or false")
    return value


def _side_texts(ctx: BuildContext) -> dict[tuple[int, int], list[str]]:
    pair_sources = [s for s in ctx.sources if s.partners is not None]
    others = [s.name for s in ctx.sources if s.partners is None]
    if not pair_sources or others:
        raise PromptgenError("the fudd builders take differential sets (records with pairs); "
                             + (f"{', '.join(others)} has none" if others else "none is given"),
                             f"make one with `promptgen differentiate {ctx.classes.dataset} ...` or import FuDD's "
                             f"file with `promptgen import --format fudd`; mix sets with the pooled builder")
    side_texts: dict[tuple[int, int], list[str]] = {}
    for source in pair_sources:
        for c, (texts, partners) in enumerate(zip(source.texts, source.partners or [])):
            for text, partner in zip(texts, partners):
                if partner is not None and partner != c:
                    side_texts.setdefault((c, partner), []).append(text)
    return side_texts


@register_builder("fudd-static", needs_set=True, options=("capitalize",), covers_all=False,
                  summary="FuDD static: per class, the union of its differential sentences over all its pairs "
                          "('a photo of a {c}.' without any), de-duplicated, capitalised, mean, renormalised "
                          "(docs/methods.md, fudd-static)")
def _fudd_static(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    capitalize = _capitalize_option(ctx)
    per_class: list[list[str]] = [[] for _ in ctx.classes.names]
    for (c, _), texts in sorted(_side_texts(ctx).items()):
        per_class[c] += texts
    without = [c for c, texts in enumerate(per_class) if not texts]
    names = _fudd_names(ctx)
    for c in without:
        per_class[c] = [fudd_template(names[c])]
    texts = [[fudd_text(t, capitalize) for t in dict.fromkeys(texts)] for texts in per_class]
    vectors = ctx.encoder.encode_normalized([t for per in texts for t in per])
    columns = list(vectors.split([len(per) for per in texts]))
    return mean_head(columns, renormalise=True), {"capitalize": capitalize, "classes_with_the_template": len(without)}


def _fudd_names(ctx: BuildContext) -> list[str]:
    """The class names FuDD's templates say: its own class-name file's where the set recorded it
    (import --class-names), else ours."""
    for source in ctx.sources:
        if source.partners is not None and source.label_names is not None:
            return list(source.label_names)
    return list(ctx.classes.names)


def _initial_head(ctx: BuildContext, capitalize: bool) -> tuple[torch.Tensor, dict]:
    """FuDD's initial head: by default theirs, e("a photo of a {c}." capitalised) per class; or a
    template set by name, a head file, or (from Python) a tensor."""
    initial = ctx.options.get("initial", "authors")
    if hasattr(initial, "weights"):
        initial = initial.weights
    if isinstance(initial, torch.Tensor):
        weights, described = initial.float(), {"initial": "tensor"}
    elif str(initial).endswith(HEAD_SUFFIXES):
        weights = load_head(Path(initial), ctx.classes, ctx.encoder.clip.embed_dim).weights
        described = {"initial": str(initial)}
    elif initial == "authors":
        texts = [fudd_text(fudd_template(name), capitalize) for name in _fudd_names(ctx)]
        weights = ctx.encoder.encode_normalized(texts).T.contiguous().float()
        described = {"initial": "authors", "initial_example": texts[0]}
    else:
        source = source_from_templates(str(initial), ctx.classes)
        vectors = ctx.encoder.encode_normalized([t for texts in source.texts for t in texts])
        weights, described = mean_head(list(vectors.split(source.counts)), renormalise=True), {"initial": source.name}
    if weights.shape != (ctx.encoder.clip.embed_dim, len(ctx.classes)):
        raise PromptgenError(f"the initial head has shape {tuple(weights.shape)}, expected "
                             f"({ctx.encoder.clip.embed_dim}, {len(ctx.classes)})",
                             "use a head of the same CLIP model and class list")
    return weights, described


@register_builder("fudd", needs_set=True, options=("k", "initial", "capitalize"), covers_all=False, per_image=True,
                  summary="FuDD: per image, re-rank the initial head's top-k with each class's differential "
                          "sentences from its pairs inside the top-k ('a photo of a {c}.' for a pair without "
                          "any), de-duplicated, capitalised (docs/methods.md, fudd)")
def _fudd(ctx: BuildContext) -> tuple[torch.Tensor, dict, Any]:
    capitalize = _capitalize_option(ctx)
    side_texts = _side_texts(ctx)
    k = int(ctx.options.get("k", min(10, len(ctx.classes))))
    initial, described = _initial_head(ctx, capitalize)
    templates = [fudd_template(name) for name in _fudd_names(ctx)]
    reranker = FuddReranker.from_texts(initial, k, side_texts, ctx.encoder.encode_normalized, templates=templates,
                                       capitalize=capitalize)
    pairs = {tuple(sorted(side)) for side in side_texts}
    details = {"k": k, **described, "capitalize": capitalize, "pairs": len(pairs),
               "unique_sentences": int(len(reranker.vectors)),
               "failed_pairs": sum(int(s.meta.get("failed_pairs", 0)) for s in ctx.sources if s.partners is not None)}
    return initial, details, reranker
