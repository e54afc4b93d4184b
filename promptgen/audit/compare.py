"""The comparisons of `promptgen audit`: evaluation results per class against a baseline head,
and one version of a set against another. Plain data in, plain data out; nothing here renders."""

from __future__ import annotations

from collections import Counter, defaultdict

from promptgen.audit.checks import AuditSet
from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.store import describe_class_mismatch

__all__ = ["evaluation_summary", "version_diff"]


def evaluation_summary(results: dict, classes: ClassList, baseline: str | None, top: int,
                       source: str = "results") -> dict:
    """Per-class accuracy of each head in an `eval -o` file, the per-class delta against a baseline
    head, and the most confused class pairs."""
    if results.get("format") != "promptgen.eval/1" or not isinstance(results.get("heads"), list):
        raise PromptgenError(f"{source} is not a results file of `promptgen eval -o`",
                             f"write one with `promptgen eval {classes.dataset} ... -o results.json`")
    recorded = results.get("classes") or {}
    if recorded.get("hash") != classes.hash:
        names = recorded.get("names") or []
        raise PromptgenError(f"{source} was evaluated on another class list than {classes.dataset}'s: "
                             + (describe_class_mismatch(classes.names, names) if names else "no class list recorded"),
                             f"audit it with its own dataset ({results.get('dataset')!r}), or evaluate again "
                             f"with `promptgen eval {classes.dataset} ... -o FILE`")
    heads = results["heads"]
    if not heads:
        raise PromptgenError(f"{source} holds no head", "evaluate at least one head")
    for head in heads:
        problem = _head_problem(head, len(classes))
        if problem:
            raise PromptgenError(f"{source}: head {head.get('head', '?')!r} {problem}",
                                 f"give the file `promptgen eval {classes.dataset} ... -o FILE` wrote, unedited")
    names = [h["head"] for h in heads]
    if baseline is None:
        base = heads[0]
    else:
        matches = [h for h in heads if h["head"] == baseline]
        if not matches:
            raise PromptgenError(f"no head {baseline!r} in {source}", f"heads there: {', '.join(names)}")
        base = matches[0]
    support = heads[0].get("support") or []
    summaries = []
    for head in heads:
        accuracy = head.get("per_class_accuracy") or []
        confusions = head.get("confusions")
        confused = None
        if confusions is not None:
            pair_counts: Counter = Counter()
            for true, predicted, count in confusions:
                pair_counts[(min(true, predicted), max(true, predicted))] += count
            confused = [{"a": {"class_index": a, "class_name": classes.names[a]},
                         "b": {"class_index": b, "class_name": classes.names[b]}, "images": n,
                         "share": round(n / max(1, support[a] + support[b]), 6) if support else None}
                        for (a, b), n in pair_counts.most_common(top)]
        summaries.append({
            "head": head["head"], "builder": (head.get("info") or {}).get("builder"),
            "sets": [s.get("set") for s in (head.get("info") or {}).get("sources", []) if s.get("set")],
            "top1": head.get("top1"), "top5": head.get("top5"),
            "mean_per_class_recall": head.get("mean_per_class_recall"),
            "delta_top1": None if head.get("top1") is None else round(head["top1"] - base["top1"], 6),
            "per_class_accuracy": accuracy,
            **class_deltas(accuracy, base.get("per_class_accuracy") or [], classes, top),
            "most_confused": confused})
    return {"source": source, "images": heads[0].get("images"), "baseline": base["head"], "support": support,
            "baseline_accuracy": base.get("per_class_accuracy") or [],
            "model": results.get("model"), "heads": summaries}


def class_deltas(accuracy: list, baseline: list, classes: ClassList, top: int) -> dict:
    """Per-class accuracy change against a baseline (None where either is missing), the number of
    classes better and worse, and the `top` classes that lost and gained most."""
    deltas = [None if a is None or b is None else round(a - b, 6) for a, b in zip(accuracy, baseline)]
    ranked = sorted((d, c) for c, d in enumerate(deltas) if d is not None)
    return {"per_class_delta": deltas,
            "improved": sum(1 for d, _ in ranked if d > 0), "worsened": sum(1 for d, _ in ranked if d < 0),
            "most_worsened": [{"class_index": c, "class_name": classes.names[c], "delta": d}
                              for d, c in ranked[:top] if d < 0],
            "most_improved": [{"class_index": c, "class_name": classes.names[c], "delta": d}
                              for d, c in reversed(ranked[-top:]) if d > 0]}


def _head_problem(head: object, num_classes: int) -> str | None:
    if not isinstance(head, dict) or not isinstance(head.get("head"), str):
        return "has no name"
    for key in ("top1", "top5", "mean_per_class_recall", "images"):
        if not isinstance(head.get(key), (int, float)):
            return f"has no number {key!r}"
    accuracy = head.get("per_class_accuracy")
    if not isinstance(accuracy, list) or len(accuracy) != num_classes or \
            not all(a is None or isinstance(a, (int, float)) for a in accuracy):
        return f"has no per_class_accuracy for the {num_classes} classes"
    support = head.get("support")
    if support is not None and (not isinstance(support, list) or len(support) != num_classes):
        return f"has no support count for each of the {num_classes} classes"
    confusions = head.get("confusions")
    if confusions is not None and not all(isinstance(c, list) and len(c) == 3 and all(isinstance(x, int) for x in c)
                                          and 0 <= c[0] < num_classes and 0 <= c[1] < num_classes for c in confusions):
        return "has malformed confusions (want [true, predicted, images] with class indices)"
    return None


# -- 5. version diff ------------------------------------------------------------------------------

def version_diff(new: AuditSet, old: AuditSet, classes: ClassList, top: int,
                 evaluation: dict | None = None) -> dict:
    """What changed from `old` to `new`: classes gained or lost, texts added and removed per class,
    manifest settings that differ, and accuracy deltas where the results cover both versions."""
    def texts_by_class(aset: AuditSet) -> dict[int, set[str]]:
        grouped: dict[int, set[str]] = defaultdict(set)
        for record in aset.records:
            grouped[record["class_index"]].add(record["text"])
        return grouped

    before, after = texts_by_class(old), texts_by_class(new)
    per_class = []
    for c in range(len(classes)):
        added, removed = after.get(c, set()) - before.get(c, set()), before.get(c, set()) - after.get(c, set())
        if added or removed:
            per_class.append({"class_index": c, "class_name": classes.names[c], "added": len(added),
                              "removed": len(removed), "kept": len(after.get(c, set()) & before.get(c, set())),
                              "examples_added": sorted(added)[:3], "examples_removed": sorted(removed)[:3]})
    per_class.sort(key=lambda d: -(d["added"] + d["removed"]))
    manifest_changes = []
    for key in ("stage", "source", "model", "template", "sampling", "job", "text_kind", "answer_retries", "import",
                "pairs", "classes"):
        a, b = old.info.manifest.get(key), new.info.manifest.get(key)
        if key == "classes":
            a, b = (a or {}).get("hash"), (b or {}).get("hash")
        for path, x, y in _differences(key, a, b):
            manifest_changes.append({"field": path, "old": x, "new": y})
    accuracy = []
    if evaluation:
        by_set: dict[str, list[dict]] = defaultdict(list)
        for head in evaluation["heads"]:
            for ref in head["sets"]:
                by_set[ref].append(head)
        for head_new in by_set.get(new.ref, []):
            for head_old in by_set.get(old.ref, []):
                if head_new["builder"] != head_old["builder"]:
                    continue
                deltas = class_deltas(head_new["per_class_accuracy"], head_old["per_class_accuracy"], classes, top)
                accuracy.append({"builder": head_new["builder"], "new_head": head_new["head"],
                                 "old_head": head_old["head"], "top1_new": head_new["top1"],
                                 "top1_old": head_old["top1"], "delta_top1": round(head_new["top1"] - head_old["top1"], 6),
                                 **{k: deltas[k] for k in ("per_class_delta", "most_worsened", "most_improved")}})
    return {"new": new.ref, "old": old.ref,
            "classes_added": [{"class_index": c, "class_name": classes.names[c]} for c in sorted(set(after) - set(before))],
            "classes_removed": [{"class_index": c, "class_name": classes.names[c]}
                                for c in sorted(set(before) - set(after))],
            "texts_added": sum(d["added"] for d in per_class), "texts_removed": sum(d["removed"] for d in per_class),
            "classes_changed": len(per_class), "per_class": per_class, "per_class_count": len(per_class),
            "records_old": len(old.records), "records_new": len(new.records),
            "manifest_changes": manifest_changes, "accuracy": accuracy,
            "accuracy_note": None if accuracy or not evaluation else
            f"no head in the results was built from both {old.ref} and {new.ref} with the same builder"}


def _differences(path: str, a: object, b: object) -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _differences(f"{path}.{key}", a.get(key), b.get(key))
        return found
    return [] if a == b else [(path, a, b)]
