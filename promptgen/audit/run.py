"""`promptgen audit`: run every check on a dataset's prompt sets and collect one audit document.

The document (audit.json) holds every figure; report.html, report.md and the printed summary are
renderings of it, so they cannot disagree with it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

import promptgen.audit.checks as checks
import promptgen.audit.compare as compare
from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.clock import utc_now
from promptgen.store import SetRef, Store
from promptgen.version import __version__

__all__ = ["AuditOptions", "TextModel", "run_audit", "AUDIT_FORMAT", "default_refs", "load_results"]

AUDIT_FORMAT = "promptgen.audit/1"


@dataclass
class AuditOptions:
    min_texts: int = 3                # fewer texts than this flags a class
    near_duplicate_cosine: float = 0.95
    top: int = 50                     # rows per list in the reports (audit.json keeps every flag)
    baseline: str | None = None       # head the per-class deltas are taken against (default: the first)


def default_refs(store: Store, dataset: str) -> list[SetRef]:
    """Every set of the dataset, at its latest complete version."""
    refs = []
    for name in store.list_sets(dataset):
        if any(v.status == "complete" for v in store.list_versions(dataset, name)):
            refs.append(SetRef(dataset, name))
    if not refs:
        raise PromptgenError(f"{dataset} has no complete prompt set to audit",
                             f"make one with `promptgen describe {dataset}` or `promptgen import {dataset} FILE`")
    return refs


@dataclass
class TextModel:
    """What the checks need of a CLIP text tower: normalised embeddings (None skips the embedding
    checks), a token counter and the context length, and the model's description for the report."""

    encode: Callable[[Sequence[str]], torch.Tensor] | None
    count_tokens: Callable[[str], int]
    context_length: int
    description: dict | None = None


def run_audit(store: Store, classes: ClassList, refs: Sequence[SetRef] | None,
              text_model: TextModel | Callable[[], TextModel], *, evaluations: Sequence[tuple[str, dict]] = (),
              against: Sequence[SetRef] = (), options: AuditOptions = AuditOptions()) -> dict:
    """The audit document. `refs` None audits every set of the dataset, skipping (and listing) those
    that cannot be audited; named sets must all be auditable. `text_model` may be a function that
    loads one: it is called only once every input has been checked. `evaluations` are (file name,
    `promptgen eval -o` JSON) pairs."""
    skipped = []
    if refs is None:
        asets = []
        for ref in default_refs(store, classes.dataset):
            try:
                asets.append(checks.load_audit_set(store, ref, classes))
            except PromptgenError as exc:
                skipped.append({"ref": str(ref), "reason": exc.message})
        if not asets:
            raise PromptgenError(f"no set of {classes.dataset} can be audited: "
                                 + "; ".join(f"{s['ref']}: {s['reason']}" for s in skipped),
                                 f"make one with `promptgen describe {classes.dataset}`")
    else:
        asets = [checks.load_audit_set(store, ref, classes) for ref in refs]
    if options.baseline is not None and not evaluations:
        raise PromptgenError("--baseline names a head of --eval results, and no --eval was given",
                             "add --eval results.json (from `promptgen eval ... -o results.json`)")
    seen: set[str] = set()
    for aset in asets:
        if aset.ref in seen:
            raise PromptgenError(f"{aset.ref} is named twice", "name each set version once in --sets")
        seen.add(aset.ref)
    evaluation = [compare.evaluation_summary(data, classes, options.baseline, options.top, source=name)
                  for name, data in evaluations]
    merged_eval = _merge_evaluations(evaluation)
    olds = [checks.load_audit_set(store, ref, classes) for ref in against]
    partners = [_diff_partner(store, old, asets) for old in olds]
    if callable(text_model) and not isinstance(text_model, TextModel):
        text_model = text_model()
    encode, count_tokens, context_length, model = (text_model.encode, text_model.count_tokens,
                                                   text_model.context_length, text_model.description)

    sets = [_audit_set(aset, classes, encode, count_tokens, context_length, options) for aset in asets]
    diffs = [compare.version_diff(new, old, classes, options.top, merged_eval) for new, old in zip(partners, olds)]
    return {
        "format": AUDIT_FORMAT, "created": utc_now(), "promptgen_version": __version__,
        "dataset": classes.dataset,
        "classes": {"count": len(classes), "hash": classes.hash, "names": list(classes.names)},
        "model": model, "embedding_checks": encode is not None,
        "settings": {"min_texts": options.min_texts, "near_duplicate_cosine": options.near_duplicate_cosine,
                     "context_length": context_length, "top": options.top, "baseline": options.baseline},
        "sets": sets, "skipped_sets": skipped, "evaluation": evaluation, "diffs": diffs,
        "totals": _totals(sets),
    }


def _audit_set(aset: checks.AuditSet, classes: ClassList, encode: Callable | None, count_tokens: Callable,
               context_length: int, options: AuditOptions) -> dict:
    # a synonyms set always holds the official name: what matters is a class with no other name
    stats = checks.set_statistics(aset, classes, 1 if aset.is_synonyms else options.min_texts)
    collisions, name_only = checks.shared_texts(aset, classes)
    result = {"ref": aset.ref, "set": aset.info.set, "version": aset.info.version, "text_kind": aset.text_kind,
              "kind": "synonyms" if aset.is_synonyms else "differential" if aset.is_differential else "texts",
              "stats": stats, "template_coverage": checks.template_coverage(aset, classes),
              "collisions": collisions, "name_only": name_only, "differential": None, "synonyms": None}
    if aset.is_synonyms:
        # names are short, and a name another class also has is the collision list above
        result.update(over_length=[], leaks=[], leaked_names=[], embedding=None,
                      synonyms=checks.synonym_summary(aset, classes, options.top))
    else:
        result["over_length"] = checks.over_length(aset, count_tokens, context_length)
        result["leaks"] = checks.leaks(aset, classes)
        named = Counter((c["class_index"], c["class_name"]) for r in result["leaks"] for c in r["names"])
        result["leaked_names"] = [{"class_index": c, "class_name": n, "texts": k} for (c, n), k in named.most_common()]
        result["embedding"] = checks.embedding_checks(aset, classes, encode, threshold=options.near_duplicate_cosine,
                                                      top=options.top) if encode is not None else None
        if aset.is_differential:
            result["differential"] = checks.differential_summary(aset, classes, options.top)
    embedding = result["embedding"] or {}
    result["summary"] = {
        "records": stats["records"], "classes_with_texts": stats["classes_with_texts"],
        "dropped": stats["dropped_total"], "repeats": stats["repeated_texts"], "failures": stats["failures"],
        "too_few": len(stats["too_few"]),
        "over_length": len(result["over_length"]), "leaks": len(result["leaks"]),
        "shared_texts": sum(len(g["records"]) for g in collisions), "collision_groups": len(collisions),
        "name_only": len(name_only),
        "near_duplicates": embedding.get("near_duplicate_count") if embedding else None,
        "closer_to_other_name": len(embedding["closer_to_other_name"]) if embedding else None,
        "diversity_median": embedding["diversity"]["median"] if embedding else None,
        "cost_usd": stats["cost_usd"],
    }
    return result


def _totals(sets: list[dict]) -> dict:
    """Counts added over the sets; a figure no set has (embedding checks skipped) stays None."""
    totals = {}
    for key in ("records", "dropped", "repeats", "failures", "too_few", "over_length", "leaks", "shared_texts",
                "collision_groups", "name_only", "near_duplicates", "closer_to_other_name", "cost_usd"):
        values = [s["summary"][key] for s in sets if s["summary"][key] is not None]
        totals[key] = sum(values) if values else None
    return totals


def _diff_partner(store: Store, old: checks.AuditSet, asets: list[checks.AuditSet]) -> checks.AuditSet:
    """The audited version `--against SET@vM` is compared with: the other audited version of the
    same set, else the only audited set."""
    same = [a for a in asets if a.info.set == old.info.set and a.ref != old.ref]
    if len(same) == 1:
        return same[0]
    if len(same) > 1:
        raise PromptgenError(f"--against {old.ref}: several versions of {old.info.set} are audited "
                             f"({', '.join(a.ref for a in same)})", "audit one version of the set with --against")
    if any(a.ref == old.ref for a in asets):
        others = [f"v{v.version}" for v in store.list_versions(old.info.dataset, old.info.set)
                  if v.version != old.info.version]
        raise PromptgenError(f"--against {old.ref} is the version under audit",
                             f"audit another version of {old.info.set} against it (versions: {', '.join(others)})"
                             if others else f"{old.info.set} has no other version to compare with")
    if len(asets) == 1:
        return asets[0]
    raise PromptgenError(f"--against {old.ref}: no audited set is {old.info.set}, so it is unclear what to compare it with",
                         f"add {old.info.set} to --sets, or audit a single set")


def _merge_evaluations(evaluation: list[dict]) -> dict | None:
    if not evaluation:
        return None
    return {"heads": [head for e in evaluation for head in e["heads"]]}


def load_results(path: Path) -> tuple[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptgenError(f"no results file {path}", "write one with `promptgen eval DATASET ... -o FILE`") from None
    except ValueError as exc:
        raise PromptgenError(f"{path} is not JSON ({exc})", "give the file `promptgen eval ... -o FILE` wrote") from None
    if not isinstance(data, dict):
        raise PromptgenError(f"{path} is not a results file of `promptgen eval -o`",
                             "give the file `promptgen eval ... -o FILE` wrote")
    return path.name, data
