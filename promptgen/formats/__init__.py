"""Import and export of prompt sets in the formats other tools use.

- cupl: `{"class name": ["sentence", ...]}` (CuPL; key order free)
- dclip: `{"class name": ["descriptor", ...]}` (DCLIP/WaffleCLIP; key order = label order)
- clip-benchmark: `{dataset_key: {"class name": ["full prompt", ...]}}` for
  `clip_benchmark eval --custom_template_file`, with a matching `--custom_classname_file`.
- fudd: `{"i_j": {"classes": [i, j], "prompt_pairs": [{"attr_type": ..., "prompt_pair": [a, b]}]}}`
  (FuDD's differential descriptions; class indices in the dataset's order).
- real-metrics (import only): REAL's `{"label": {"name": ..., "alternates": {name: count}}}`, a
  counts set (`real_metrics.py`).

Imports match keys to classes by exact name (or by position with match="order") and report
every key that did not fit; they never drop texts silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from promptgen.classes import ClassList, loose_name
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text, sha256_file
from promptgen.messages import shorten
from promptgen.parsing import (DROP_REASONS, PAIR_REJECT_REASONS, PairAttribute, clean_texts, name_pattern,
                               parse_pair_answer)
from promptgen.store import Store, VersionInfo, class_summary, make_record, offline_manifest
from promptgen.templates import indefinite_article

__all__ = ["IMPORT_FORMATS", "EXPORT_FORMATS", "ImportReport", "import_prompt_file", "import_fudd_file",
           "export_version", "dclip_sentence", "DCLIP_RULES", "wordify", "list_formats"]

IMPORT_FORMATS: dict[str, dict] = {}
EXPORT_FORMATS: dict[str, Callable] = {}


def register_import(name: str, text_kind: str, description: str, set_name: str | None = None) -> None:
    """`set_name`: the set an import writes when --set is not given (the format's name by default)."""
    IMPORT_FORMATS[name] = {"text_kind": text_kind, "description": description, "set": set_name or name}


def register_export(name: str) -> Callable[[Callable], Callable]:
    def decorate(function: Callable) -> Callable:
        EXPORT_FORMATS[name] = function
        return function
    return decorate


def list_formats() -> dict[str, list[str]]:
    return {"import": sorted(IMPORT_FORMATS), "export": sorted(EXPORT_FORMATS)}


register_import("cupl", "sentence", "CuPL JSON {class: [sentences]}")
register_import("dclip", "descriptor", "DCLIP/WaffleCLIP JSON {class: [descriptors]}, key order = label order")
register_import("fudd", "sentence", 'FuDD JSON {"i_j": {"classes": [i, j], "prompt_pairs": [...]}}, one entry per pair',
                set_name="differential")
register_import("real-metrics", "name-count", 'REAL\'s metrics JSON {"label": {"name": ..., "alternates": {name: count}}}: '
                "a counts set (formats/real_metrics.py)", set_name="counts")


@dataclass
class ImportReport:
    matched: int = 0
    unmatched_keys: list[str] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)
    empty_keys: list[str] = field(default_factory=list)
    duplicated_keys: list[str] = field(default_factory=list)
    renamed: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"matched_keys": self.matched, "unmatched_keys": self.unmatched_keys,
                "missing_classes": self.missing_classes, "empty_keys": self.empty_keys,
                "duplicated_keys": self.duplicated_keys, "matched_with_other_name": self.renamed}

    @property
    def problems(self) -> list[str]:
        lines = []
        for label, items in (("keys that name no class (skipped)", self.unmatched_keys),
                             ("classes with no key in the file", self.missing_classes),
                             ("keys with an empty list", self.empty_keys),
                             ("keys that appear more than once (first kept)", self.duplicated_keys)):
            if items:
                shown = ", ".join(map(repr, items[:10])) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
                lines.append(f"{len(items)} {label}: {shown}")
        return lines


def _read_pairs(path: Path) -> list[tuple[str, object]]:
    """Top-level (key, value) pairs in file order, duplicates included (json.load would hide them)."""
    if not path.is_file():
        raise PromptgenError(f"{path} does not exist", "check the file path")
    try:
        pairs = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=lambda items: items)
    except json.JSONDecodeError as exc:
        raise PromptgenError(f"{path} is not valid JSON ({exc})", "fix the file") from None
    if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
        raise PromptgenError(f"{path} is not a JSON object of class name -> list of texts",
                             'expected {"class name": ["text", ...], ...}')
    return pairs


MATCH_MODES = ("name", "loose", "order")


def import_prompt_file(store: Store, classes: ClassList, path: str | Path, fmt: str, set_name: str,
                       match: str = "name", strict: bool = False, notice: str | None = None, dedupe: bool = False
                       ) -> tuple[VersionInfo, ImportReport]:
    """Import a CuPL or DCLIP JSON file as a new version of `set_name`. Texts are kept as
    published, repeats and near-empty ones included, since the authors' heads count every one
    (docs/methods.md); `dedupe` keeps each text once per class.

    match: "name" (exact), "loose" (exact, else the one class equal up to case, spaces, '_' and
    '-'), or "order" (key i is class i, for files in label order)."""
    if fmt not in IMPORT_FORMATS:
        raise PromptgenError(f"unknown import format {fmt!r}", f"use one of: {', '.join(sorted(IMPORT_FORMATS))}")
    if IMPORT_FORMATS[fmt]["text_kind"] not in ("sentence", "descriptor"):  # its file is no {class: [texts]}
        raise PromptgenError(f"a {fmt} file is not a {{class: [texts]}} file", f"import it with `promptgen import "
                                                                               f"DATASET FILE --format {fmt}`")
    if match not in MATCH_MODES:
        raise PromptgenError(f"unknown match mode {match!r}", f"use --match {', '.join(MATCH_MODES)}")
    path = Path(path)
    pairs = _read_pairs(path)
    report = ImportReport()
    index = classes.index_of()
    loose_index: dict[str, list[int]] = {}
    for i, name in enumerate(classes.names):
        loose_index.setdefault(loose_name(name), []).append(i)
    seen: set[str] = set()
    assigned: dict[int, list] = {}
    for position, (key, texts) in enumerate(pairs):
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise PromptgenError(f"{path}: the value for {key!r} is not a list of strings",
                                 'each class maps to a list of texts: {"class": ["text", ...]}')
        if key in seen:
            report.duplicated_keys.append(key)
            continue
        seen.add(key)
        if match == "order":
            class_index = position if position < len(classes) else None
        else:
            class_index = index.get(key)
            if class_index is None and match == "loose":
                candidates = loose_index.get(loose_name(key), [])
                class_index = candidates[0] if len(candidates) == 1 else None
        if class_index is None:
            report.unmatched_keys.append(key)
            continue
        if classes.names[class_index] != key:
            report.renamed.append({"class_index": class_index, "key": key, "class_name": classes.names[class_index]})
        if not texts:
            report.empty_keys.append(key)
        assigned[class_index] = [key, texts]
        report.matched += 1
    report.missing_classes = [name for i, name in enumerate(classes.names) if i not in assigned]
    text_kind = IMPORT_FORMATS[fmt]["text_kind"]
    if not assigned:
        raise PromptgenError(f"{path}: no key matches a class of {classes.dataset}",
                             "check the dataset, or use --match order for a file in label order with other names")
    if strict and report.problems:
        raise PromptgenError(f"{path} does not fit {classes.dataset} exactly: " + "; ".join(report.problems),
                             "fix the file, or import without --strict to skip what does not fit")
    records = []
    for class_index in sorted(assigned):
        key, texts = assigned[class_index]
        if not texts and text_kind == "descriptor":  # DCLIP's loader reads an empty list as [""]
            texts = [""]
        parsed = clean_texts(texts, max_chars=10_000, dedupe=dedupe, keep_empty=text_kind == "descriptor")
        report.dropped.update(parsed.dropped)
        for position, text in enumerate(parsed.texts):
            records.append(make_record(class_index=class_index, class_name=classes.names[class_index], stage="import",
                                       kind=text_kind, text=text, template=None, sample_index=position,
                                       request_key=None, model=None,
                                       source_key=key if key != classes.names[class_index] else None))
    per_class = Counter(r["class_index"] for r in records)
    manifest = offline_manifest("import", "file", {
        "text_kind": text_kind,
        "classes": class_summary(classes),
        "import": {"format": fmt, "file": path.name, "sha256": sha256_file(path), "match": match, "dedupe": dedupe,
                   **report.to_json()},
        "counts": {"records": len(records), "classes": len(classes),
                   "classes_without_texts": len(classes) - len(per_class),
                   "texts_per_class_min": min((per_class[i] for i in range(len(classes))), default=0),
                   "texts_per_class_max": max(per_class.values(), default=0)},
        "dropped": {reason: report.dropped.get(reason, 0) for reason in DROP_REASONS},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": None,
        "classes_without_texts": [{"class_index": i, "class_name": n} for i, n in enumerate(classes.names)
                                  if per_class[i] == 0],
    })
    if notice:
        manifest["license"] = notice
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes), report


DCLIP_RULES = ("authors", "grammatical")


def wordify(name: str) -> str:
    """A class name as DCLIP, WaffleCLIP and FuDD put it in a text: "_" read as a space."""
    return name.replace("_", " ")
_GRAMMAR_IS = re.compile(r"^(a|an|used)(?=\s)", re.IGNORECASE)
_GRAMMAR_VERB = re.compile(r"^(has|often|typically|may|can)(?=\s)", re.IGNORECASE)


def dclip_sentence(class_name: str, descriptor: str, rule: str = "authors") -> str:
    """"{c}, which ... {d}": DCLIP's `make_descriptor_sentence` (docs/methods.md, dclip).

    authors (default): case-sensitive prefix tests, exactly as DCLIP's code: "which is" when the
    descriptor starts with the letter "a" (so "antlers" gives "which is antlers"), "which" for
    has/often/typically/may/can, "which is" for "used", else "which has".
    grammatical (our option): the same branches on the whole first word, any case: "a"/"an"/"used"
    take "which is", so "antlers" gives "which has antlers"."""
    if rule == "authors":
        if descriptor.startswith("a"):
            verb = "which is"
        elif descriptor.startswith(("has", "often", "typically", "may", "can")):
            verb = "which"
        elif descriptor.startswith("used"):
            verb = "which is"
        else:
            verb = "which has"
    elif rule == "grammatical":
        verb = "which is" if _GRAMMAR_IS.match(descriptor) else "which" if _GRAMMAR_VERB.match(descriptor) \
            else "which has"
    else:
        raise PromptgenError(f"unknown DCLIP sentence rule {rule!r}", f"use sentence_rule={' or '.join(DCLIP_RULES)}")
    return f"{class_name}, {verb} {descriptor}"


def _texts_by_class(classes: ClassList, records: list[dict]) -> list[list[str]]:
    by_class: list[list[str]] = [[] for _ in classes.names]
    for record in records:
        by_class[record["class_index"]].append(record["text"])
    return by_class


def _write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@register_export("cupl")
def export_cupl(classes: ClassList, records: list[dict], manifest: dict, out: Path, **_: object) -> list[Path]:
    _write_json(out, dict(zip(classes.names, _texts_by_class(classes, records))))
    return [out]


@register_export("dclip")
def export_dclip(classes: ClassList, records: list[dict], manifest: dict, out: Path, **_: object) -> list[Path]:
    # same shape as cupl; DCLIP readers rely on key order = label order, which dicts keep
    _write_json(out, dict(zip(classes.names, _texts_by_class(classes, records))))
    return [out]


@register_export("clip-benchmark")
def export_clip_benchmark(classes: ClassList, records: list[dict], manifest: dict, out: Path,
                          benchmark_key: str | None = None, fill_empty: bool = False, **_: object) -> list[Path]:
    """Full prompts per class (descriptors become DCLIP sentences) plus the class-name file, so
    CLIP_benchmark's keys are exactly our names."""
    key = benchmark_key or classes.clip_benchmark_key or classes.dataset
    prompts = {}
    empty = []
    for index, (name, texts) in enumerate(zip(classes.names, _texts_by_class(classes, records))):
        kinds = {r["kind"] for r in records if r["class_index"] == index}
        full = [dclip_sentence(name, t) for t in texts] if kinds == {"descriptor"} else texts
        if not full:
            empty.append(name)
            if fill_empty:
                full = [f"a photo of {indefinite_article(name)} {name}."]
        prompts[name] = full
    if empty and not fill_empty:
        raise PromptgenError(f"{len(empty)} classes have no prompts: {', '.join(map(repr, empty[:10]))}",
                             "CLIP_benchmark needs at least one prompt per class: add texts, or pass --fill-empty "
                             "to use 'a photo of a {c}.' for them")
    _write_json(out, {key: prompts})
    names_path = out.with_name(out.stem + ".classnames.json")
    _write_json(names_path, {key: list(classes.names)})
    return [out, names_path]


@register_export("fudd")
def export_fudd(classes: ClassList, records: list[dict], manifest: dict, out: Path, **_: object) -> list[Path]:
    """A differential set back to FuDD's file: per pair key "i_j" (i < j), its attributes in order,
    each with class i's sentence first."""
    pairs: dict[str, dict] = {}
    for record in records:
        if "pair" not in record:
            raise PromptgenError(f"record {record.get('id')} has no pair: only differential sets export as fudd",
                                 "export a set made by `promptgen differentiate` (or imported with --format fudd)")
        i, j = record["pair_classes"]
        entry = pairs.setdefault(record["pair"], {"classes": [i, j], "attributes": {}})
        side = entry["attributes"].setdefault(record["attribute_index"], [record["attribute"], None, None])
        side[1 if record["class_index"] == i else 2] = record["text"]
    data = {}
    for key in sorted(pairs, key=lambda k: tuple(int(x) for x in k.split("_"))):
        entry = pairs[key]
        data[key] = {"classes": entry["classes"],
                     "prompt_pairs": [{"attr_type": attribute, "prompt_pair": [first, second]}
                                      for _, (attribute, first, second) in sorted(entry["attributes"].items())
                                      if first is not None and second is not None]}
    _write_json(out, data)
    return [out]


def _words(name: str) -> frozenset[str]:
    """A name's words, any order and case ("2012 Acura RL Sedan" ~ "Acura RL Sedan 2012")."""
    return frozenset(loose_name(name).split())


def _fudd_class_names(path: Path, classes: ClassList) -> list[str]:
    """FuDD's own class-name file, checked against our list: the same count, and the same class at
    most positions (a few names may be spelled otherwise: ImageNet's "eft" for our "newt")."""
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptgenError(f"cannot read {path} as JSON ({exc})", "give FuDD's DATASET_class_names.json") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PromptgenError(f"{path} is not a JSON list of class names", "give FuDD's DATASET_class_names.json")
    names = [wordify(n) for n in names]  # as FuDD reads them (prompt_factory.py:34)
    differ = [i for i, (a, b) in enumerate(zip(names, classes.names)) if _words(a) != _words(b)]
    if len(names) != len(classes) or len(differ) * 2 > len(classes):
        shown = "; ".join(f"{i}: {names[i]!r} vs {classes.names[i]!r}" for i in differ[:3])
        raise PromptgenError(f"{path.name} lists {len(names)} classes and {classes.dataset} has {len(classes)}"
                             + (f"; {len(differ)} differ by position, e.g. {shown}" if differ else ""),
                             "import the file into the dataset it was made for (FuDD indexes classes by position)")
    return names


_PHOTO_OF = re.compile(r"^an? (?:photo|picture|image) of (?:an? |the )?([^,]+?),", re.IGNORECASE)


def _check_fudd_names(path: Path, classes: ClassList, names: list[str], sides: list[tuple[int, int, str]]) -> None:
    """FuDD's sentences name their class ("a photo of a pug, ..."). When most of them name something
    else, the file indexes another class list (FuDD's 100 aircraft variants onto the 70 families)
    and every pair would land on the wrong classes. A sentence names its class when the class's
    name (FuDD's, from `names`) is in it, or when its "a photo of a X," has the name's words in
    any order; a sentence naming its partner is the pair parser's "swapped" case."""
    patterns = [name_pattern(name) for name in names]
    words = [_words(name) for name in names]
    named = [(c, match.group(1) if (match := _PHOTO_OF.match(text)) else None, text) for c, _, text in sides]
    own = [patterns[c].search(text) is not None or (x is not None and _words(x) == words[c]) for c, x, text in named]
    if sum(own) * 2 >= len(sides):
        return
    foreign = [(c, x) for (c, x, _), mine in zip(named, own) if x is not None and not mine]
    if len(foreign) * 2 >= len(sides):  # they say whose photo they describe, and it is not ours
        c, x = foreign[0]
        raise PromptgenError(f"{path.name} does not fit {classes.dataset}: {len(sides) - sum(own)} of {len(sides)} "
                             f"sentences do not name their class, e.g. class {c} {names[c]!r} gets "
                             f"'a photo of a {x}, ...'", "import the file into the dataset it was made for; FuDD "
                             "files index classes by position in their own class list (check it with --class-names)")
    sample = sides[:: max(1, len(sides) // 2000)]
    elsewhere = [(c, text) for c, partner, text in sample if not patterns[c].search(text)
                 and any(p.search(text) for i, p in enumerate(patterns) if i not in (c, partner))]
    if elsewhere and len(elsewhere) * 2 >= len(sample):
        c, text = elsewhere[0]
        raise PromptgenError(f"{path.name} does not fit {classes.dataset}: {len(elsewhere)} of {len(sample)} sentences "
                             f"name another class than their index says, e.g. class {c} {names[c]!r} gets "
                             f"{shorten(text, 80)!r}",
                             "import the file into the dataset it was made for; FuDD files index classes by position "
                             "in their own class list (check it with --class-names FILE)")


def _published_attributes(items: list) -> list:
    """Every attribute of a FuDD entry as published (whitespace normalised), each with its two sentences."""
    kept = []
    for item in items:
        pair = item.get("prompt_pair") if isinstance(item, dict) else None
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair):
            kept.append(PairAttribute(str(item.get("attr_type") or ""), " ".join(pair[0].split()),
                                      " ".join(pair[1].split())))
    return kept


def import_fudd_file(store: Store, classes: ClassList, path: str | Path, set_name: str, strict: bool = False,
                     notice: str | None = None, class_names: str | Path | None = None,
                     filter_attributes: bool = False) -> tuple[VersionInfo, ImportReport]:
    """Import FuDD's differential descriptions as a differential set, every attribute as published
    (FuDD's heads use them all). Each pair is also checked as the differentiate stage checks answers
    (sentences naming the other class, swapped, identical or one-sided): the manifest counts what
    the checks flag, and `filter_attributes` drops it. Keys that do not fit the class list are
    reported. A file made for another class list is refused: an index beyond the list,
    `class_names` (FuDD's own class-name file) disagreeing with it, or sentences naming other
    classes than their index."""
    from promptgen.stages.differentiate import pair_records  # heavy: the stage brings the LLM client (asyncio, ssl)

    path = Path(path)
    fudd_names = _fudd_class_names(Path(class_names), classes) if class_names is not None else None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptgenError(f"cannot read {path} as JSON ({exc})", "give FuDD's JSON file") from None
    if not isinstance(data, dict):
        raise PromptgenError(f"{path} is not a JSON object of pairs", 'FuDD files look like {"0_1": {"classes": [0, 1], '
                                                                      '"prompt_pairs": [...]}}')
    indices = [int(part) for key in data for part in key.split("_") if part.isdigit()]
    if indices and max(indices) >= len(classes):
        raise PromptgenError(f"{path.name} indexes classes up to {max(indices)}, but {classes.dataset} has "
                             f"{len(classes)} classes: the file was made for another class list",
                             "import it into the dataset it was made for (FuDD's fgvc_aircraft file has the 100 "
                             "variants, not the 70 families)")
    sides = [(c, partner, sentence) for key, entry in data.items() if isinstance(entry, dict)
             and isinstance(entry.get("classes"), list) and len(entry["classes"]) == 2
             and isinstance(entry.get("prompt_pairs"), list)
             for item in entry["prompt_pairs"] if isinstance(item, dict) and isinstance(item.get("prompt_pair"), list)
             for c, partner, sentence in zip(entry["classes"], entry["classes"][::-1], item["prompt_pair"])
             if type(c) is int and 0 <= c < len(classes) and isinstance(sentence, str)]
    if sides:
        _check_fudd_names(path, classes, fudd_names or list(classes.names), sides)
    report, rejected, bad = ImportReport(), Counter(), []
    records, seen_pairs = [], set()
    for key, entry in data.items():
        parts = key.split("_")
        if len(parts) != 2 or not all(part.isdigit() for part in parts) or not isinstance(entry, dict):
            bad.append(f"{key!r}: not an 'i_j' key with an object value")
            continue
        first, second = int(parts[0]), int(parts[1])
        listed = entry.get("classes")
        if listed is not None:  # "classes" gives the order of each prompt_pair
            if not (isinstance(listed, list) and len(listed) == 2 and all(type(x) is int for x in listed)
                    and sorted(listed) == sorted((first, second))):
                bad.append(f"{key!r}: the key and its classes {listed!r} disagree")
                continue
            first, second = listed
        if first == second or not (0 <= first < len(classes) and 0 <= second < len(classes)):
            bad.append(f"{key!r}: class indices must be two different numbers below {len(classes)}")
            continue
        if not isinstance(entry.get("prompt_pairs"), list):
            bad.append(f"{key!r}: no prompt_pairs list")
            continue
        i, j = min(first, second), max(first, second)
        if (i, j) in seen_pairs:
            report.duplicated_keys.append(key)
            continue
        seen_pairs.add((i, j))
        parsed = parse_pair_answer(json.dumps(entry["prompt_pairs"]), classes.names[first], classes.names[second],
                                   max_chars=10_000)
        rejected.update(parsed.rejected)
        # FuDD's heads use every published attribute: the differentiate stage's checks only flag
        # them, unless `filter_attributes` (ours) drops what they reject
        attributes = parsed.attributes if filter_attributes else _published_attributes(entry["prompt_pairs"])
        if first > second:  # stored lower index first
            for attribute in attributes:
                attribute.first, attribute.second = attribute.second, attribute.first
        if not attributes:
            report.empty_keys.append(key)
            continue
        records += pair_records(classes, i, j, attributes, stage="import", template=None)
        report.matched += 1
    report.unmatched_keys = bad
    if not records:
        raise PromptgenError(f"{path}: no usable pair for {classes.dataset}" + (f" ({bad[0]})" if bad else ""),
                             "check the dataset: FuDD files index classes in the dataset's label order")
    if strict and (bad or report.empty_keys or report.duplicated_keys or sum(rejected.values())):
        # strict: everything fits and no attribute is flagged
        raise PromptgenError(f"{path} does not fit {classes.dataset} exactly: "
                             + "; ".join(bad[:5] + [f"{n} sentences rejected ({r})" for r, n in rejected.items()]),
                             "fix the file, or import without --strict to skip what does not fit")
    records.sort(key=lambda r: (tuple(r["pair_classes"]), r["attribute_index"], r["class_index"] != r["pair_classes"][0]))
    per_class = Counter(r["class_index"] for r in records)
    manifest = offline_manifest("import", "file", {
        "text_kind": "sentence",
        "classes": class_summary(classes),
        "import": {"format": "fudd", "file": path.name, "sha256": sha256_file(path), "pairs": report.matched,
                   # FuDD's own names (its templates say them), where the class-name file was given
                   **({"class_names": fudd_names, "class_names_differ": [
                       {"class_index": i, "fudd": a, "ours": b} for i, (a, b) in enumerate(zip(fudd_names, classes.names))
                       if _words(a) != _words(b)]} if fudd_names else {}),
                   "bad_keys": bad, "pairs_without_usable_attributes": report.empty_keys,
                   "duplicated_keys": report.duplicated_keys},
        "pairs": {"method": "file", "pairs": report.matched, "all_pairs": len(classes) * (len(classes) - 1) // 2},
        "counts": {"records": len(records), "classes": len(classes),
                   "classes_without_texts": len(classes) - len(per_class)},
        "filter_attributes": filter_attributes,
        # what the checks rejected (dropped with filter_attributes, else kept as published and only counted)
        "rejected": {reason: rejected.get(reason, 0) for reason in PAIR_REJECT_REASONS},
        "dropped": {reason: 0 for reason in DROP_REASONS},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": None, "failed_pairs": [],
    })
    if notice:
        manifest["license"] = notice
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes), report


def export_version(store: Store, info: VersionInfo, fmt: str, out: str | Path, **options: object) -> list[Path]:
    if fmt not in EXPORT_FORMATS:
        raise PromptgenError(f"unknown export format {fmt!r}", f"use one of: {', '.join(sorted(EXPORT_FORMATS))}")
    classes = store.classes(info.dataset)
    if info.manifest.get("classes", {}).get("hash") not in (None, classes.hash):
        raise PromptgenError(f"{info.ref} was made for another class list than {info.dataset}'s current one",
                             "export it with the class list it was made with")
    records = store.read_records(info)
    return EXPORT_FORMATS[fmt](classes, records, info.manifest, Path(out), **options)
