"""Zero-shot evaluation of heads on image features: logits = 100 * v @ W (docs/methods.md, notation)."""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from promptgen.clip.heads import Head
from promptgen.errors import PromptgenError

__all__ = ["evaluate_heads", "format_table", "seed_summary"]


def evaluate_heads(features: torch.Tensor, labels: torch.Tensor, heads: list[Head], num_classes: int,
                   *, chunk: int = 4096) -> list[dict]:
    """Top-1, top-5, mean per-class recall, per-class accuracy and the confused class pairs of each head. All heads run in one
    matrix product per chunk of images, so the features are read once whatever the head count."""
    if not heads:
        raise PromptgenError("no head to evaluate", "give --head FILE or --build BUILDER[:SOURCE]")
    labelled = labels >= 0
    if not bool(labelled.any()):
        raise PromptgenError("the features carry no labels", "evaluation needs labels; give labelled features")
    features, labels = F.normalize(features[labelled].float(), dim=-1), labels[labelled]
    if int(labels.max()) >= num_classes:
        raise PromptgenError(f"label {int(labels.max())} is out of range for {num_classes} classes",
                             "labels are class indices from 0 to C-1 in the dataset's order")
    dim = features.shape[1]
    for head in heads:
        if head.weights.shape != (dim, num_classes):
            raise PromptgenError(f"head {head.name} has shape {tuple(head.weights.shape)}, expected ({dim}, "
                                 f"{num_classes}) for these features and classes",
                                 "build the head with the same CLIP model and class list as the features")
    for head in heads:
        if head.scorer is not None:
            head.scorer.reset()
    plain = [h for h, head in enumerate(heads) if head.scorer is None]
    stacked = torch.cat([heads[h].weights.float() for h in plain], dim=1) if plain else None
    k = min(5, num_classes)
    top1 = torch.zeros(len(heads), dtype=torch.long)
    top5 = torch.zeros(len(heads), dtype=torch.long)
    correct_per_class = torch.zeros(len(heads), num_classes, dtype=torch.long)
    confusions: list[Counter] = [Counter() for _ in heads]
    with torch.inference_mode():
        for start in range(0, len(features), chunk):
            batch = features[start:start + chunk]
            target = labels[start:start + chunk]
            per_head = {}
            if stacked is not None:
                logits = 100 * batch @ stacked
                per_head = {h: logits[:, p * num_classes:(p + 1) * num_classes] for p, h in enumerate(plain)}
            for h, head in enumerate(heads):
                head_logits = per_head[h] if h in per_head else head.logits(batch, target)
                best = head_logits.topk(k, dim=1).indices
                hit1 = best[:, 0] == target
                top1[h] += int(hit1.sum())
                top5[h] += int((best == target[:, None]).any(dim=1).sum())
                correct_per_class[h] += torch.bincount(target[hit1], minlength=num_classes)
                missed = target[~hit1] * num_classes + best[~hit1, 0]
                cells, cell_counts = missed.unique(return_counts=True)
                confusions[h].update(dict(zip(cells.tolist(), cell_counts.tolist())))
    support = torch.bincount(labels, minlength=num_classes)
    present = support > 0
    results = []
    for h, head in enumerate(heads):
        per_class = torch.where(present, correct_per_class[h].double() / support.clamp(min=1).double(),
                                torch.full((num_classes,), float("nan"), dtype=torch.float64))
        results.append({"head": head.name, "images": int(len(labels)), "top1": float(top1[h]) / len(labels),
                        "top5": float(top5[h]) / len(labels), "k_top5": k,
                        "mean_per_class_recall": float(per_class[present].mean()),
                        "per_class_accuracy": [None if torch.isnan(a) else round(float(a), 6) for a in per_class],
                        "support": support.tolist(),
                        # off-diagonal confusion matrix cells [true, predicted, images], most images first
                        "confusions": [[cell // num_classes, cell % num_classes, n]
                                       for cell, n in sorted(confusions[h].items(), key=lambda x: (-x[1], x[0]))],
                        **({"rerank": head.scorer.report()} if head.scorer is not None else {})})
    return results


def format_table(results: list[dict], heads: list[Head]) -> str:
    rows = [("head", "builder", "prompts", "top-1", "top-5", "mean/class")]
    for result, head in zip(results, heads):
        rows.append((result["head"], str(head.info.get("builder", "file")), str(head.info.get("prompts_total", "-")),
                     f"{100 * result['top1']:.2f}", f"{100 * result['top5']:.2f}",
                     f"{100 * result['mean_per_class_recall']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def seed_summary(name: str, results: list[dict]) -> dict:
    """Mean and standard deviation over the runs of one build with several seeds, as WaffleCLIP
    reports its numbers (np.mean, np.std over seeds 0..reps-1, base_main.py)."""
    summary: dict = {"head": name, "seeds": [r["head"] for r in results], "runs": len(results)}
    for key in ("top1", "top5", "mean_per_class_recall"):
        values = torch.tensor([r[key] for r in results], dtype=torch.float64)
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(unbiased=False)) if len(values) > 1 else 0.0
    return summary
