"""Confusable class pairs: which pairs of classes the differentiate stage asks an LLM about.

From images (docs/methods.md, fudd, steps 2-3): the top-k classes of every image under an initial head;
each unordered pair inside a top-k counts once for that image. From text: the M most similar
partners of every class by the cosine of their head columns. Either way the result is a
`PairPlan`: the chosen pairs (i < j), how they were chosen and what the choice costs, against
all C(C-1)/2 pairs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from promptgen.errors import PromptgenError
from promptgen.pairs import PairPlan, load_pair_plan, pair_key, save_pair_plan  # re-exported: the plan's own module

__all__ = ["PairPlan", "pairs_from_images", "pairs_from_text", "all_pairs", "check_k", "pair_key",
           "load_pair_plan", "save_pair_plan"]

def check_k(k: int, num_classes: int, what: str = "k") -> int:
    if k < 2:
        raise PromptgenError(f"{what}={k} is too small: a pair needs two classes in the top-k", f"use {what} of 2 or more")
    if k > num_classes:
        raise PromptgenError(f"{what}={k} is larger than the {num_classes} classes",
                             f"use {what} of at most {num_classes}")
    return k


def _select(codes: np.ndarray, scores: np.ndarray, num_classes: int, min_count: float | None,
            max_pairs: int | None) -> tuple[list[tuple[int, int]], list[float], dict]:
    candidates = len(codes)
    keep = np.ones(len(codes), dtype=bool) if min_count is None else scores >= min_count
    codes, scores = codes[keep], scores[keep]
    order = np.lexsort((codes, -scores))  # highest score first; ties by pair, so the choice is reproducible
    dropped_max = 0
    if max_pairs is not None and len(order) > max_pairs:
        dropped_max = len(order) - max_pairs
        order = order[:max_pairs]
    pairs = [(int(c // num_classes), int(c % num_classes)) for c in codes[order]]
    stats = {"candidates": candidates, "dropped_below_min_count": int((~keep).sum()),
             "dropped_over_max_pairs": dropped_max}
    return pairs, [float(s) for s in scores[order]], stats


def _check_limits(max_pairs: int | None, min_count: float | None) -> None:
    if max_pairs is not None and max_pairs < 1:
        raise PromptgenError(f"--max-pairs {max_pairs} leaves nothing to ask", "use 1 or more, or leave it out")
    if min_count is not None and min_count < 0:
        raise PromptgenError(f"--min-count {min_count} is negative", "use 0 or more")


def pairs_from_images(features: torch.Tensor, head: torch.Tensor, k: int, *, labels: torch.Tensor | None = None,
                      min_count: int = 1, max_pairs: int | None = None, chunk: int = 8192,
                      head_info: dict | None = None) -> PairPlan:
    """Pairs inside each image's top-k classes under `head` (D, C), counted over the images.
    Labels are optional; where present, the top-k recall (the ceiling of any re-ranking) is reported."""
    num_classes = head.shape[1]
    check_k(k, num_classes)
    _check_limits(max_pairs, min_count)
    if features.dim() != 2 or features.shape[1] != head.shape[0]:
        raise PromptgenError(f"image features of shape {tuple(features.shape)} do not fit a head of dimension "
                             f"{head.shape[0]}", "use features and a head from the same CLIP model")
    if len(features) == 0:
        raise PromptgenError("no image features to find confusable pairs in", "give a non-empty image set")
    first, second = torch.triu_indices(k, k, offset=1)
    chunk_codes, hits, labelled = [], 0, 0
    weights = head.float()
    with torch.inference_mode():
        for start in range(0, len(features), chunk):
            v = F.normalize(features[start:start + chunk].float(), dim=-1)
            top = (v @ weights).topk(k, dim=1).indices
            if labels is not None:
                target = labels[start:start + chunk]
                known = target >= 0
                labelled += int(known.sum())
                hits += int(((top == target[:, None]).any(dim=1) & known).sum())
            ordered = top.sort(dim=1).values
            codes = (ordered[:, first] * num_classes + ordered[:, second]).reshape(-1).numpy()
            unique, counts = np.unique(codes, return_counts=True)
            chunk_codes.append((unique, counts))
    all_codes = np.concatenate([c for c, _ in chunk_codes])
    all_counts = np.concatenate([n for _, n in chunk_codes])
    codes, inverse = np.unique(all_codes, return_inverse=True)
    counts = np.bincount(inverse, weights=all_counts).astype(np.int64)
    pairs, scores, stats = _select(codes, counts.astype(np.float64), num_classes, min_count, max_pairs)
    stats.update({"images": int(len(features)), "pair_instances": int(len(features) * len(first)),
                  "labelled_images": labelled, "topk_recall": (hits / labelled) if labelled else None,
                  "head": head_info or {}})
    return PairPlan("images", num_classes, pairs, scores, {"k": k, "min_count": min_count, "max_pairs": max_pairs},
                    stats)


def pairs_from_text(head: torch.Tensor, partners: int, *, max_pairs: int | None = None, chunk: int = 2048,
                    head_info: dict | None = None) -> PairPlan:
    """Every class with its `partners` most similar classes (cosine of head columns); a pair chosen
    from both sides counts once, scored by its cosine."""
    num_classes = head.shape[1]
    if partners < 1 or partners > num_classes - 1:
        raise PromptgenError(f"--partners {partners} does not fit {num_classes} classes",
                             f"use 1 to {num_classes - 1} partners per class")
    _check_limits(max_pairs, None)
    columns = F.normalize(head.float(), dim=0)
    codes, scores = [], []
    with torch.inference_mode():
        for start in range(0, num_classes, chunk):
            similarity = columns[:, start:start + chunk].T @ columns
            rows = torch.arange(start, min(start + chunk, num_classes))
            similarity[torch.arange(len(rows)), rows] = -float("inf")
            best = similarity.topk(partners, dim=1)
            i = rows[:, None].expand_as(best.indices)
            low, high = torch.minimum(i, best.indices), torch.maximum(i, best.indices)
            codes.append((low * num_classes + high).reshape(-1).numpy())
            scores.append(best.values.reshape(-1).double().numpy())
    all_codes, all_scores = np.concatenate(codes), np.concatenate(scores)
    unique, first_seen = np.unique(all_codes, return_index=True)
    pairs, kept_scores, stats = _select(unique, all_scores[first_seen], num_classes, None, max_pairs)
    stats.update({"head": head_info or {}})
    return PairPlan("text", num_classes, pairs, kept_scores, {"partners": partners, "max_pairs": max_pairs}, stats)


def all_pairs(num_classes: int, *, max_pairs: int | None = None) -> PairPlan:
    """Every unordered pair, in index order (the worst case of FuDD's cost)."""
    _check_limits(max_pairs, None)
    first, second = np.triu_indices(num_classes, k=1)
    codes = (first * num_classes + second).astype(np.int64)
    pairs, scores, stats = _select(codes, np.zeros(len(codes)), num_classes, None, max_pairs)
    return PairPlan("all", num_classes, pairs, scores, {"max_pairs": max_pairs}, stats)
