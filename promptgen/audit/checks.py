"""The checks of `promptgen audit`, each a function from records (and embeddings) to plain data.

Every flagged text carries a `RecordRef`-shaped dict (set@version, record id, class, template,
text) so the report can send the reader to `promptgen show ... --id ID`. Nothing here renders.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from promptgen.classes import ClassList, class_name_matcher, loose_name
from promptgen.clip.sources import FALLBACK_TEMPLATE
from promptgen.errors import PromptgenError
from promptgen.formats import dclip_sentence
from promptgen.llm.pricing import Cost
from promptgen.parsing import name_pattern
from promptgen.store import SetRef, Store, VersionInfo, describe_class_mismatch

__all__ = ["AuditSet", "load_audit_set", "record_ref", "set_statistics", "template_coverage", "over_length",
           "leaks", "shared_texts", "embedding_checks", "differential_summary", "synonym_summary", "token_counter"]

MASK = "{c}"


@dataclass
class AuditSet:
    """One prompt-set version under audit: its records and the text CLIP sees for each."""

    info: VersionInfo
    records: list[dict]
    clip_texts: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return str(self.info.ref)

    @property
    def text_kind(self) -> str:
        kind = self.info.manifest.get("text_kind")
        if kind:
            return kind
        kinds = {r.get("kind") for r in self.records}
        return kinds.pop() if len(kinds) == 1 else "sentence"

    @property
    def is_synonyms(self) -> bool:
        return self.text_kind == "synonym"

    @property
    def is_differential(self) -> bool:
        return bool(self.records) and all("pair" in r for r in self.records)


def load_audit_set(store: Store, ref: SetRef, classes: ClassList) -> AuditSet:
    """A version of one of `classes.dataset`'s sets, refused when it was written for another class
    list or holds no records."""
    if ref.dataset != classes.dataset:
        raise PromptgenError(f"{ref} is a set of {ref.dataset}, not of {classes.dataset}",
                             f"audit one dataset at a time: `promptgen audit {ref.dataset} --sets {ref.set}`")
    info = store.resolve(ref)
    manifest_classes = info.manifest.get("classes") or {}
    records = store.read_records(info)
    if manifest_classes.get("hash") and manifest_classes["hash"] != classes.hash:
        names = {r["class_index"]: r["class_name"] for r in records}
        given = [names.get(i, f"<class {i}>") for i in range(manifest_classes.get("count", len(names)))]
        raise PromptgenError(f"{info.ref} was written for another class list than {classes.dataset}'s: "
                             + describe_class_mismatch(classes.names, given),
                             "audit it with the class list it was made for, or rebuild it for this one")
    if not records:
        raise PromptgenError(f"{info.ref} is empty: it holds no texts",
                             f"audit another version (`promptgen versions {classes.dataset}`), or rerun the stage "
                             f"that made it")
    bad = [r for r in records if not 0 <= r.get("class_index", -1) < len(classes)
           or r.get("class_name") != classes.names[r["class_index"]]]
    if bad:
        r = bad[0]
        raise PromptgenError(f"{info.ref}: record {r.get('id')} names class {r.get('class_index')} "
                             f"{r.get('class_name')!r}, which is not in {classes.dataset}'s class list "
                             f"({len(bad)} such records)", "audit the set against the dataset it was made for")
    clip_texts = [dclip_sentence(r["class_name"], r["text"]) if r.get("kind") == "descriptor" else r["text"]
                  for r in records]
    return AuditSet(info, records, clip_texts)


def record_ref(aset: AuditSet, index: int) -> dict:
    """What a reader needs to find a text again: `promptgen show {set} --id {id}`."""
    record = aset.records[index]
    return {"set": aset.ref, "id": record["id"], "class_index": record["class_index"],
            "class_name": record["class_name"], "template": record.get("template") or record.get("stage"),
            "text": record["text"]}


# -- 1. per set and per class ------------------------------------------------------------------

def set_statistics(aset: AuditSet, classes: ClassList, min_texts: int) -> dict:
    """Counts kept and dropped (by reason), failures, tokens and cost, texts per class, and the
    classes with fewer than `min_texts` texts."""
    manifest = aset.info.manifest
    if aset.is_synonyms:  # names besides the official one, each spelling once
        other = {(r["class_index"], loose_name(r["text"])) for r in aset.records
                 if loose_name(r["text"]) != loose_name(classes.names[r["class_index"]])}
        per_class = Counter(c for c, _ in other)
    else:
        per_class = Counter(r["class_index"] for r in aset.records)
    counts = [per_class.get(c, 0) for c in range(len(classes))]
    dropped = {k: int(v) for k, v in (manifest.get("dropped") or {}).items()}
    dropped_per_class = manifest.get("dropped_per_class")
    rejected = {k: int(v) for k, v in (manifest.get("rejected") or {}).items()}
    tokens = manifest.get("tokens") or {}
    failures = list(manifest.get("failures") or []) + [{"reason": "pair failed"} for _ in manifest.get("failed_pairs") or []]
    too_few = [{"class_index": c, "class_name": classes.names[c], "texts": n}
               for c, n in enumerate(counts) if n < min_texts]
    # repeats are kept (every one counts in CuPL's and DCLIP's heads); the audit says how many
    occurrences = Counter((r["class_index"], r["text"]) for r in aset.records)
    repeats_per_class = Counter()
    for (c, _), n in occurrences.items():
        if n > 1 and not aset.is_synonyms:
            repeats_per_class[c] += n - 1
    template = manifest.get("template") or {}
    return {
        "records": len(aset.records),
        "classes": len(classes),
        "classes_with_texts": sum(1 for n in counts if n),
        "texts_per_class": {"min": min(counts), "median": statistics.median(counts),
                            "mean": round(sum(counts) / len(counts), 3), "max": max(counts)},
        "per_class_counts": counts,
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "dropped_per_class": dropped_per_class,
        "repeated_texts": sum(repeats_per_class.values()),
        "repeats_per_class": {str(c): n for c, n in sorted(repeats_per_class.items())},
        "rejected": rejected,
        "failures": len(failures),
        "failure_reasons": dict(Counter(f.get("reason", "?") for f in failures)),
        "tokens": {"prompt": int(tokens.get("prompt") or 0), "completion": int(tokens.get("completion") or 0)},
        "cost_usd": manifest.get("cost_usd"),
        "model": _model_name(manifest.get("model")),
        "template": template.get("ref") or template.get("name") if isinstance(template, dict) else template,
        "status": aset.info.status,
        "stage": manifest.get("stage"),
        "created": manifest.get("created"),
        "min_texts": min_texts,
        "too_few": too_few,
        "per_class_usage": per_class_usage(aset, len(classes)),
    }


def per_class_usage(aset: AuditSet, num_classes: int) -> dict | None:
    """Tokens and cost per class from the version's request journal (every answer, re-asks
    included, as the manifest counts them); None for versions without one (imports, offline sources)."""
    path = aset.info.journal_path
    if not path.exists():
        return None
    prompt, completion = [0] * num_classes, [0] * num_classes
    cost = [Cost() for _ in range(num_classes)]
    answered = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line from an interrupted run
            response, c = entry.get("response"), entry.get("class_index")
            if not isinstance(response, dict) or not isinstance(c, int) or not 0 <= c < num_classes:
                continue
            answered += 1
            usage = response.get("usage") or {}
            prompt[c] += int(usage.get("prompt_tokens") or 0)
            completion[c] += int(usage.get("completion_tokens") or 0)
            cost[c].add(response.get("cost_usd"))
    if not answered:
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": [None if v.usd is None else round(v.usd, 8) for v in cost]}


def _model_name(model: object) -> str | None:
    if isinstance(model, dict):
        return model.get("model") or model.get("name")
    return model if isinstance(model, str) else None


def template_coverage(aset: AuditSet, classes: ClassList) -> list[dict]:
    """Per template (LLM question or import origin): its texts and the share of classes it reached.
    A question no class got an answer to shows as 0 when the manifest lists it."""
    by_template: dict[str, set[int]] = defaultdict(set)
    texts: Counter = Counter()
    for record in aset.records:
        if record.get("source") == "official":
            continue
        name = record.get("template") or record.get("stage") or "-"
        by_template[name].add(record["class_index"])
        texts[name] += 1
    template = aset.info.manifest.get("template") or {}
    for question in (template.get("questions") or []) if isinstance(template, dict) else []:
        qid = question.get("id") if isinstance(question, dict) else question
        if qid and qid not in by_template:
            by_template[qid] = set()
    return [{"template": name, "texts": texts[name], "classes": len(reached),
             "coverage": round(len(reached) / len(classes), 6),
             "missing": [classes.names[c] for c in range(len(classes)) if c not in reached][:20],
             "missing_count": len(classes) - len(reached)}
            for name, reached in sorted(by_template.items())]


def token_counter(tokenizer: object) -> Callable[[str], int]:
    """Tokens a text takes in the CLIP context, start and end tokens included."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode) and hasattr(tokenizer, "sot_token_id"):
        return lambda text: len(encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and callable(inner):  # open_clip's HFTokenizer wraps a transformers tokenizer
        return lambda text: len(inner(text)["input_ids"])
    raise PromptgenError(f"cannot count tokens with {type(tokenizer).__name__}",
                         "audit with an open_clip model whose tokenizer is CLIP's BPE or a Hugging Face tokenizer")


def over_length(aset: AuditSet, count_tokens: Callable[[str], int], context_length: int) -> list[dict]:
    """Texts longer than the CLIP context: the model sees only their first tokens."""
    flagged = []
    for index, text in enumerate(aset.clip_texts):
        if text.isascii() and len(text) + 2 <= context_length:  # an ASCII token covers at least one character
            continue
        tokens = count_tokens(text)
        if tokens > context_length:
            flagged.append({**record_ref(aset, index), "clip_text": text, "tokens": tokens})
    return sorted(flagged, key=lambda f: -f["tokens"])


# -- 2. leakage and collisions ---------------------------------------------------------------------

def leaks(aset: AuditSet, classes: ClassList) -> list[dict]:
    """Texts that name another class of the dataset (a class sharing the text's own class name is
    not "another")."""
    named = class_name_matcher(classes, plurals=True)
    same_name: dict[str, set[int]] = defaultdict(set)
    for index, name in enumerate(classes.names):
        same_name[loose_name(name)].add(index)
    flagged = []
    for index, record in enumerate(aset.records):
        if record.get("source") == "official":
            continue
        own = same_name[loose_name(record["class_name"])]
        others = sorted(named(record["text"]) - own)
        if others:
            flagged.append({**record_ref(aset, index),
                            "names": [{"class_index": o, "class_name": classes.names[o]} for o in others]})
    return flagged


def masked_text(record: dict, patterns: dict[int, re.Pattern]) -> str:
    """The text with its own class name replaced by {c}: texts that differ only in the name are one text."""
    return patterns[record["class_index"]].sub(MASK, record["text"])


def _collision_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w{}']+", " ", text.casefold()).split())


def shared_texts(aset: AuditSet, classes: ClassList) -> tuple[list[dict], list[dict]]:
    """Texts given to several classes (the same words once each class's own name is masked), and
    texts that say nothing but the class name. Neither can tell a class from the others.
    Returns (collision groups, name-only texts)."""
    patterns = {c: name_pattern(name) for c, name in enumerate(classes.names)}
    groups: dict[str, list[int]] = defaultdict(list)
    name_only = []
    for index, record in enumerate(aset.records):
        if aset.is_synonyms:
            key = loose_name(record["text"])
        else:
            key = _collision_key(masked_text(record, patterns))
            if re.sub(r"\b(a|an|the|photo|of|image|picture)\b", " ", key).split() == [MASK]:
                name_only.append({**record_ref(aset, index), "masked": masked_text(record, patterns)})
        groups[key].append(index)
    collisions = []
    for key, members in groups.items():
        class_set = sorted({aset.records[i]["class_index"] for i in members})
        if len(class_set) < 2:
            continue
        collisions.append({"text": key, "classes": [{"class_index": c, "class_name": classes.names[c]}
                                                    for c in class_set],
                           "records": [record_ref(aset, i) for i in members]})
    collisions.sort(key=lambda g: (-len(g["classes"]), g["text"]))
    return collisions, name_only


def embedding_checks(aset: AuditSet, classes: ClassList, encode: Callable[[Sequence[str]], torch.Tensor], *,
                     threshold: float, top: int) -> dict:
    """The checks that need the text tower:
    - near-duplicates: texts of different classes whose masked embeddings have cosine >= threshold;
    - classes whose mean description embedding is closer to another class's name ("a photo of a {c}.")
      than to their own;
    - diversity: per class, the mean pairwise cosine of its texts (1 = all say the same);
    - the most similar class pairs under the mean-of-texts head."""
    patterns = {c: name_pattern(name) for c, name in enumerate(classes.names)}
    num_classes = len(classes)
    head_vectors = encode(aset.clip_texts)
    labels = torch.tensor([r["class_index"] for r in aset.records])
    sums = torch.zeros(num_classes, head_vectors.shape[1], dtype=torch.float64).index_add_(
        0, labels, head_vectors.double())
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts > 0
    centroids = torch.nn.functional.normalize(sums, dim=-1).float()

    # diversity: for unit vectors, mean pairwise cosine = (|sum|^2 - n) / (n (n - 1))
    diversity: list[float | None] = []
    for c in range(num_classes):
        n = int(counts[c])
        diversity.append(round(float((sums[c].dot(sums[c]) - n) / (n * (n - 1))), 6) if n >= 2 else None)
    values = [d for d in diversity if d is not None]
    least_diverse = sorted(((d, c) for c, d in enumerate(diversity) if d is not None), reverse=True)[:top]

    names = encode([FALLBACK_TEMPLATE.replace("{c}", c) for c in classes.names])
    similarity = centroids @ names.T
    name_ids: dict[str, int] = {}
    ids = torch.tensor([name_ids.setdefault(loose_name(n), len(name_ids)) for n in classes.names])
    same_name = ids[:, None] == ids[None, :]  # ImageNet has two "crane"s: neither is "another" name
    own = similarity.diagonal().clone()
    others = similarity.masked_fill(same_name, float("-inf"))
    best_other, best_index = others.max(dim=1)
    closer = []
    for c in range(num_classes):
        if present[c] and best_other[c] > own[c]:
            rank = int((similarity[c] > own[c]).sum()) + 1
            closer.append({"class_index": c, "class_name": classes.names[c], "own_cosine": round(float(own[c]), 6),
                           "nearest_class_index": int(best_index[c]),
                           "nearest_class_name": classes.names[int(best_index[c])],
                           "nearest_cosine": round(float(best_other[c]), 6),
                           "margin": round(float(own[c] - best_other[c]), 6), "own_name_rank": rank})
    closer.sort(key=lambda f: f["margin"])

    pair_similarity = (centroids @ centroids.T).masked_fill(
        ~(present[:, None] & present[None, :]) | torch.ones(num_classes, num_classes, dtype=torch.bool).tril(), -2.0)
    flat = pair_similarity.flatten()
    k = min(top, int((flat > -2.0).sum()))
    best = flat.topk(k) if k else None
    similar_pairs = [] if best is None else [
        {"a": {"class_index": int(i) // num_classes, "class_name": classes.names[int(i) // num_classes]},
         "b": {"class_index": int(i) % num_classes, "class_name": classes.names[int(i) % num_classes]},
         "cosine": round(float(v), 6)} for v, i in zip(best.values, best.indices)]

    near = _near_duplicates(aset, patterns, encode, threshold, top)
    return {"near_duplicates": near["pairs"], "near_duplicate_count": near["count"],
            "closer_to_other_name": closer,
            "diversity": {"per_class": diversity, "median": statistics.median(values) if values else None,
                          "mean": round(sum(values) / len(values), 6) if values else None,
                          "least_diverse": [{"class_index": c, "class_name": classes.names[c], "mean_cosine": d,
                                             "texts": int(counts[c])} for d, c in least_diverse]},
            "similar_pairs": similar_pairs}


def _near_duplicates(aset: AuditSet, patterns: dict[int, re.Pattern], encode: Callable, threshold: float,
                     top: int, chunk: int | None = None) -> dict:
    """Pairs of texts of different classes whose masked texts embed within `threshold` cosine.
    Texts that are the same once masked are the exact collisions, reported there, not here."""
    masked = [masked_text(r, patterns).replace(MASK, "object") for r in aset.records]
    unique: dict[str, list[int]] = defaultdict(list)
    for index, text in enumerate(masked):
        unique[_collision_key(text)].append(index)
    keys = list(unique)
    if len(keys) < 2:
        return {"pairs": [], "count": 0}
    vectors = encode([masked[unique[k][0]] for k in keys])
    # a text owned by one class carries that class; a text several classes share is its own owner
    owner = torch.tensor([next(iter(o)) if len(o) == 1 else -1 - i
                          for i, o in enumerate(frozenset(aset.records[m]["class_index"] for m in unique[k])
                                                for k in keys)])
    best_values, best_pairs, count = torch.empty(0), torch.empty(0, 2, dtype=torch.long), 0
    chunk = chunk or max(16, (1 << 23) // len(keys))  # a block of at most ~8M cosines
    for start in range(0, len(keys), chunk):
        block = vectors[start:start + chunk] @ vectors[start:].T  # the upper triangle and its diagonal block
        rows = torch.arange(start, start + block.shape[0])
        columns = torch.arange(start, len(keys))
        keep = (block >= threshold) & (columns[None, :] > rows[:, None]) & (owner[rows][:, None] != owner[columns][None, :])
        hits = keep.nonzero()
        count += len(hits)
        values = block[keep]
        best_values = torch.cat([best_values, values])
        best_pairs = torch.cat([best_pairs, torch.stack([hits[:, 0] + start, hits[:, 1] + start], dim=1)])
        if len(best_values) > top:
            order = best_values.topk(top).indices
            best_values, best_pairs = best_values[order], best_pairs[order]
    order = best_values.argsort(descending=True)[:top]
    found = [(float(best_values[o]), int(best_pairs[o, 0]), int(best_pairs[o, 1])) for o in order]
    def cross_class(i: int, j: int) -> tuple[int, int]:
        """A record of each text, of two different classes (a shared text has several to choose from)."""
        for a in unique[keys[i]]:
            for b in unique[keys[j]]:
                if aset.records[a]["class_index"] != aset.records[b]["class_index"]:
                    return a, b
        raise AssertionError("a near-duplicate pair within one class")

    pairs = []
    for value, i, j in found:
        a, b = cross_class(i, j)
        pairs.append({"cosine": round(value, 6), "a": record_ref(aset, a), "b": record_ref(aset, b)})
    return {"count": count, "pairs": pairs}


# -- sections for the other stages ---------------------------------------------------------------

def differential_summary(aset: AuditSet, classes: ClassList, top: int) -> dict:
    """A differential set as pairs: how many were answered, salvaged and failed, and which classes
    appear in the most pairs."""
    manifest = aset.info.manifest
    pairs: dict[str, set[str]] = defaultdict(set)
    per_class: Counter = Counter()
    salvaged = set()
    for record in aset.records:
        pairs[record["pair"]].add(record.get("attribute") or "")
        if record.get("salvaged"):
            salvaged.add(record["pair"])
    for key in pairs:
        for c in key.split("_"):
            per_class[int(c)] += 1
    pair_stats = manifest.get("pairs") or {}
    failed = manifest.get("failed_pairs") or []
    return {"pairs_answered": len(pairs), "pairs_salvaged": len(salvaged), "pairs_failed": len(failed),
            "failed_pairs": [{"pair": f.get("pair"), "reason": f.get("reason") or f.get("error"),
                              "classes": [{"class_index": c, "class_name": classes.names[c]}
                                          for c in _pair_classes(f) if 0 <= c < len(classes)]} for f in failed],
            "attributes_per_pair": {"min": min(len(a) for a in pairs.values()),
                                    "max": max(len(a) for a in pairs.values())} if pairs else None,
            "classes_in_pairs": len(per_class), "classes_without_pairs": len(classes) - len(per_class),
            "most_paired": [{"class_index": c, "class_name": classes.names[c], "pairs": n}
                            for c, n in per_class.most_common(top)],
            "method": pair_stats.get("method"), "topk_recall": pair_stats.get("topk_recall"),
            "rejected": manifest.get("rejected") or {}}


def _pair_classes(failed: dict) -> list[int]:
    classes = failed.get("classes")
    if isinstance(classes, list) and all(isinstance(c, int) for c in classes):
        return classes
    pair = str(failed.get("pair") or "")
    return [int(c) for c in pair.split("_") if c.isdigit()]


def synonym_summary(aset: AuditSet, classes: ClassList, top: int) -> dict:
    """A synonyms set: names per class by source and the classes with no name but the official one."""
    names: dict[int, set[str]] = defaultdict(set)
    sources: Counter = Counter()
    for record in aset.records:
        sources[record.get("source") or "?"] += 1
        if loose_name(record["text"]) != loose_name(record["class_name"]):
            names[record["class_index"]].add(loose_name(record["text"]))
    without = [c for c in range(len(classes)) if not names.get(c)]
    return {"records_by_source": dict(sources), "classes_with_other_names": len(classes) - len(without),
            "classes_without_other_names": [{"class_index": c, "class_name": classes.names[c]} for c in without],
            "classes_without_other_names_count": len(without)}


# -- 4. evaluation ---------------------------------------------------------------------------------
