"""Synonyms stage: the names each class goes by (REAL, docs/methods.md, real).

Two sources write the same kind of set, `prompts/<dataset>/synonyms/vN.jsonl`, one record per
(class, name, source): `llm` asks a list question (template `synonyms`, parsed by the `list`
parser): describe's questions and parsing on the stage runner, with names kept once per class;
`wordnet` takes the lemmas of the class's WordNet synset, offline. The official name is always a
record of its class (source `official`); names are stored as written and compared ignoring case.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.names import Candidate, add_name
from promptgen.parsing import DROP_REASONS
from promptgen.sources.wordnet import load_wordnet
from promptgen.stages.describe import DescribeJob
from promptgen.store import (SetRef, Store, VersionInfo, class_summary, dedupe_records, describe_class_mismatch,
                             make_record, offline_manifest, record_id)
from promptgen.templates import QueryTemplate

__all__ = ["STAGE", "SynonymsJob", "synonyms_job", "synonyms_wordnet", "load_candidates", "merge_candidates"]

STAGE = "synonyms"


@dataclass
class SynonymsJob(DescribeJob):
    """The LLM route: describe's questions with a list template, whose records are names. A set of
    names always holds each official name (source `official`) and each name once per class and
    source, compared ignoring case."""

    stage: str = STAGE

    def record_fields(self) -> dict:
        return {"source": "llm"}

    def final_records(self, records: list[dict]) -> tuple[list[dict], int]:
        kept, duplicates = dedupe_records(official_name_records(self.classes, self.stage) + records, ignore_case=True)
        return with_source_ids(kept), duplicates

    def counted(self, record: dict) -> bool:
        return record.get("source") != "official"

    def extra_sections(self, records: list[dict]) -> dict:
        """Classes whose answers named nothing but the class itself keep only their official name."""
        other: dict[int, set[str]] = {i: set() for i in range(len(self.classes))}
        for record in records:
            if record["text"].casefold() != self.classes.names[record["class_index"]].casefold():
                other[record["class_index"]].add(record["text"].casefold())
        without = [i for i in range(len(self.classes)) if not other[i]]
        return {"classes_with_other_names": len(self.classes) - len(without),
                "classes_without_synonyms": [{"class_index": i, "class_name": self.classes.names[i]} for i in without]}


def synonyms_job(classes: ClassList, template: QueryTemplate, set_name: str = "synonyms", *, draw: int = 0,
                 answer_retries: int = 2) -> SynonymsJob:
    return SynonymsJob(classes, template, set_name, draw=draw, answer_retries=answer_retries)


def with_source_ids(records: list[dict]) -> list[dict]:
    """Names get one record per source: their ids include the source, so they stay unique."""
    for record in records:
        record["id"] = record_id(record["class_index"], record["class_name"], record["stage"],
                                 f"{record.get('source')}\x00{record['text']}")
    return records


def official_name_records(classes: ClassList, stage: str) -> list[dict]:
    return [make_record(class_index=i, class_name=name, stage=stage, kind="synonym", text=name, template="official",
                        sample_index=None, request_key=None, model=None, source="official")
            for i, name in enumerate(classes.names)]


def synonyms_wordnet(classes: ClassList, store: Store, set_name: str = "synonyms") -> tuple[VersionInfo, list]:
    """The lemmas of each class's WordNet synset. Returns the version and the unmatched classes."""
    wordnet = load_wordnet()
    matches = wordnet.match(classes)
    records = official_name_records(classes, STAGE)
    for m in matches:
        if m.synset is None:
            continue
        for position, lemma in enumerate(m.synset.lemmas):
            records.append(make_record(class_index=m.class_index, class_name=m.class_name, stage=STAGE,
                                       kind="synonym", text=lemma, template="wordnet/lemmas", sample_index=None,
                                       request_key=None, model=None, source="wordnet", wnid=m.synset.wnid,
                                       position=position))
    records.sort(key=lambda r: (r["class_index"], r["source"] != "official"))
    kept, duplicates = dedupe_records(records, ignore_case=True)
    kept = with_source_ids(kept)
    unmatched = [m for m in matches if m.synset is None]
    names_per_class = Counter()
    for c, name in {(r["class_index"], r["text"].casefold()) for r in kept}:
        names_per_class[c] += 1
    manifest = offline_manifest(STAGE, "wordnet", {
        "knowledge_source": wordnet.source, "text_kind": "synonym", "classes": class_summary(classes),
        "template": {"name": "wordnet", "ref": "wordnet/lemmas", "description": "the lemmas of the class's synset"},
        "counts": {"records": len(kept), "classes": len(classes),
                   "classes_with_other_names": sum(1 for c in range(len(classes)) if names_per_class[c] > 1),
                   "classes_without_texts": 0, "unmatched": len(unmatched)},
        "dropped": {reason: (duplicates if reason == "duplicate" else 0) for reason in DROP_REASONS},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": 0.0,
        "classes_without_synonyms": [{"class_index": m.class_index, "class_name": m.class_name, "reason": "no synset"}
                                     for m in unmatched],
        "matching": [m.to_json() for m in matches],
    })
    return store.write_version(classes.dataset, set_name, kept, manifest, classes=classes), unmatched


def load_candidates(store: Store, ref: str, classes: ClassList) -> tuple[list[list[Candidate]], VersionInfo]:
    """Each class's names from a synonyms set (official name first), merged across sources."""
    info = store.resolve(SetRef.parse(ref, None if "/" in ref else classes.dataset))
    if info.manifest.get("text_kind") != "synonym":
        raise PromptgenError(f"{info.ref} is not a synonyms set (its texts are {info.manifest.get('text_kind')}s)",
                             f"make one with `promptgen synonyms {classes.dataset} --source wordnet|llm`")
    recorded = info.manifest.get("classes", {}).get("hash")
    if info.dataset != classes.dataset or (recorded and recorded != classes.hash):
        names = sorted({r["class_name"] for r in store.read_records(info)})
        raise PromptgenError(f"{info.ref} was made for another class list than {classes.dataset}'s: "
                             + describe_class_mismatch(classes.names, names),
                             f"make a synonyms set for {classes.dataset}")
    candidates: list[list[Candidate]] = [[Candidate(name, ["official"])] for name in classes.names]
    for record in store.read_records(info):
        add_name(candidates[record["class_index"]], record["text"], [record.get("source") or "llm"])
    return candidates, info


def merge_candidates(loaded: list[tuple[list[list[Candidate]], VersionInfo]]) -> tuple[list[list[Candidate]], list[str]]:
    """Several synonyms sets of one class list as one: each class's names in order of first
    appearance, with every source that gave them."""
    merged = [list(per_class) for per_class in loaded[0][0]]
    for candidates, _ in loaded[1:]:
        for c, per_class in enumerate(candidates):
            for cand in per_class:
                add_name(merged[c], cand.name, cand.sources)
    return merged, [str(info.ref) for _, info in loaded]
