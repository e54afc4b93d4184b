"""ZPE, zero-shot prompt ensembling (Allingham et al., ICML 2023; docs/methods.md, zpe): prompts
weighted by their zero-shot quality on unlabeled images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from promptgen.clip.registry import BuildContext, mean_head, register_builder, stack_columns
from promptgen.errors import PromptgenError

__all__: list[str] = []


def _zpe_scores_correction(scores: torch.Tensor, pool_scores: torch.Tensor | None) -> torch.Tensor:
    """(mu_pre + mu_test) / 2 per column, or mu_test alone without a generic pool (docs/methods.md, zpe)."""
    mu_test = scores.mean(dim=0)
    return mu_test if pool_scores is None else (pool_scores.mean(dim=0) + mu_test) / 2


ZPE_MODES = ("softmax", "mad", "mad-equal")


def _zpe_select(quality: torch.Tensor, mode: str, tau: float) -> tuple[torch.Tensor, dict]:
    """The factor of each prompt's e(prompt_p(c)) in the head, from the prompts' quality q, as the
    authors' notebook aggregates (the mean over prompts of the weighted logits):
    softmax: w_p / P with w = softmax(q) (ZPE step 4-5);
    mad: w_p / |S| for the prompts S with (q - median) / MAD > tau, w the softmax over all
    prompts, 0 for the others (step 6; the kept prompts keep their softmax weights);
    mad-equal: 1 / |S| over S (equal weights, the notebook's separate variant).
    The scale is the notebook's too: logits (and probabilities) match theirs, not only the argmax."""
    softmax = torch.softmax(quality.double(), dim=0)
    if mode == "softmax":
        return (softmax / len(quality)).to(quality.dtype), {}
    q = quality.double().numpy()
    median = float(np.median(q))
    mad = float(np.median(np.abs(q - median)))
    keep = np.ones_like(q, dtype=bool) if mad == 0 else (q - median) / mad > tau
    note = {"mad_is_zero_all_kept": True} if mad == 0 else {}
    if not keep.any():  # the notebook has no fallback: keep the best prompt
        keep[int(np.argmax(q))] = True
        note = {"no_prompt_above_tau": True}
    kept = torch.from_numpy(keep)
    weights = (kept.double() if mode == "mad-equal" else softmax * kept) / int(keep.sum())
    return weights.to(quality.dtype), {"median": median, "mad": mad, "kept": int(keep.sum()), **note}


@register_builder("zpe", needs_images=True, options=("zpe_mode", "zpe_tau", "zpe_group"),
                  summary="ZPE: prompt templates weighted by their zero-shot quality on unlabeled images, softmax or "
                          "MAD selection, no renormalisation (docs/methods.md, zpe); zpe_group=class, weighting each "
                          "class's own descriptions, is promptgen's extension, not the paper's")
def _zpe(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    images = ctx.image_features
    if images is None or len(images) == 0:
        raise PromptgenError("the zpe builder needs unlabeled image features",
                             "give --zpe-features FILE (or build it inside `promptgen eval`, which uses the "
                             "evaluation images without their labels)")
    mode = ctx.options.get("zpe_mode", "softmax")
    if mode not in ZPE_MODES:
        raise PromptgenError(f"unknown ZPE mode {mode!r}", "use --zpe-mode softmax, mad or mad-equal")
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
    if mode != "softmax":
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
    assigned = (images @ mean_head(per_class, renormalise=True)).argmax(dim=1)
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
            weights = weights / weights.sum()  # columns of classes with more or fewer texts stay comparable
            kept.append(int((weights > 0).sum()))
        columns.append(weights.float() @ vectors)
    info.update({"extension": "zpe_group=class weights each class's own descriptions: promptgen's extension of "
                              "ZPE, which weights templates shared by all classes",
                 "classes_with_uniform_weights": uniform, "kept_per_class": kept})
    return stack_columns(columns), info
