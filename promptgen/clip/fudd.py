"""FuDD's per-image re-ranking (methods.md 5, step 4), with every sentence embedded once.

For an image v: S = its top-k classes under the initial head; for each class c in S, its
differential sentences from the pairs (c, d) with d in S, de-duplicated, embedded, averaged and
renormalised; the prediction is the argmax of v . column over S only. A class with no such
sentence (its pairs were never asked, or failed) keeps its initial-head column.

The per-image heads are never built one by one: the sentence embeddings are computed once, and
for a batch of images a sparse (images x k, unique sentences) incidence matrix, de-duplicated,
multiplies them, so the cost per image is a few sparse products rather than a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from promptgen.clip.pairs import check_k
from promptgen.errors import PromptgenError

__all__ = ["FuddReranker", "OUTSIDE_TOP_K"]

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
            rows, position = rows[found], position[found]
            lengths = self._lengths[position]
            entry_rows = torch.repeat_interleave(rows, lengths)
            first = torch.repeat_interleave(self._starts[position], lengths)
            within = torch.arange(len(entry_rows)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            units = self._units[first + within]
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
                   encode: Callable[[list[str]], torch.Tensor]) -> "FuddReranker":
        """Build from class c's sentences per partner d; `encode(texts) -> (n, D)` is called once."""
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
        texts = [text for (_, text) in unit_index]
        vectors = encode(texts) if texts else torch.zeros(0, initial.shape[0])
        return FuddReranker(initial, k, sides, vectors)
