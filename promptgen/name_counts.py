"""Counts sets: how many captions mention each name of each class (REAL, docs/methods.md, real).

A counts set is a prompt set whose manifest says `text_kind: name-count`; one record per (class,
name), its `text` the name, its `source` where the name came from (official, wordnet, llm, real),
`count` the captions that mention it, and, after the LLM's relevance check, `judged`, `relevant`,
`relevance` = relevant / judged and `scaled_count` = count x relevance. `count-names` writes them
(counting/), and so does `import --format real-metrics`; `rename --scorer counts` and the `real`
head read them.
"""

from __future__ import annotations

from typing import Any

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.store import SetRef, Store, VersionInfo, describe_class_mismatch, make_record

__all__ = ["COUNTS_TEXT_KIND", "count_record", "counts_from_records", "load_counts_set"]

COUNTS_TEXT_KIND = "name-count"


def count_record(*, class_index: int, class_name: str, name: str, source: str, count: int, stage: str,
                 judged: int | None = None, relevant: int | None = None) -> dict:
    """One name's record; with `judged` (the LLM checked that many sampled captions, `relevant` were
    about the class) it also holds the relevance ratio and the scaled count."""
    extra: dict[str, Any] = {"source": source, "count": int(count)}
    if judged is not None:
        relevance = (relevant or 0) / judged if judged else None
        extra.update(judged=judged, relevant=relevant or 0, relevance=None if relevance is None else round(relevance, 6),
                     scaled_count=None if relevance is None else round(count * relevance, 6))
    return make_record(class_index=class_index, class_name=class_name, stage=stage, kind=COUNTS_TEXT_KIND,
                       text=name, template=None, sample_index=None, request_key=None, model=None, **extra)


def counts_from_records(records: list[dict], n_classes: int) -> list[list[tuple[str, float]]]:
    """Each class's (name, count) in record order; the scaled count where the LLM checked the name."""
    per_class: list[list[tuple[str, float]]] = [[] for _ in range(n_classes)]
    for record in records:
        scaled = record.get("scaled_count")
        per_class[record["class_index"]].append((record["text"], float(record["count"] if scaled is None else scaled)))
    return per_class


def load_counts_set(store: Store, ref: str, classes: ClassList) -> tuple[list[list[tuple[str, float]]], VersionInfo]:
    """The counts of a counts set made for `classes` (same class list, or refused)."""
    info = store.resolve(SetRef.parse(ref, None if "/" in ref else classes.dataset))
    if info.manifest.get("text_kind") != COUNTS_TEXT_KIND:
        raise PromptgenError(f"{info.ref} is not a counts set (its texts are {info.manifest.get('text_kind')}s)",
                             f"make one with `promptgen count-names {classes.dataset} --captions FILES` or "
                             f"`promptgen import {classes.dataset} --format real-metrics FILE`")
    records = store.read_records(info)
    recorded = (info.manifest.get("classes") or {}).get("hash")
    if info.dataset != classes.dataset or (recorded and recorded != classes.hash):
        names = sorted({r["class_name"] for r in records})
        raise PromptgenError(f"{info.ref} was counted for another class list than {classes.dataset}'s: "
                             + describe_class_mismatch(classes.names, names),
                             f"count the names of {classes.dataset}'s classes")
    return counts_from_records(records, len(classes)), info
