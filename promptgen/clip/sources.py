"""What a head is built from: per-class texts from prompt-set versions or CLIP template sets.

Record kinds decide the text a CLIP model sees: a `descriptor` (DCLIP/WaffleCLIP phrase) becomes
"{c}, which (is|has) {d}" as DCLIP's loader builds it (docs/methods.md, dclip), a `sentence` (CuPL,
WordNet gloss) is used verbatim (docs/methods.md, cupl). Every record counts, repeats included.
Builders differ only in how they aggregate these texts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.formats import dclip_sentence, wordify
from promptgen.paths import BUILTIN_PROMPTS_DIR
from promptgen.store import SetRef, Store, describe_class_mismatch

__all__ = ["PromptSource", "source_from_set", "source_from_templates", "list_template_sets", "load_template_set",
           "TEMPLATE_DIR", "FALLBACK_TEMPLATE"]

TEMPLATE_DIR = BUILTIN_PROMPTS_DIR / "clip"
FALLBACK_TEMPLATE = "a photo of a {c}."


@dataclass
class PromptSource:
    """Texts per class (index = label) from one input, with the family of each text: the template
    (or LLM question) it came from, which ZPE weights as a unit."""

    name: str
    kind: str                                   # "set" or "templates"
    texts: list[list[str]]
    families: list[list[str]]
    meta: dict = field(default_factory=dict)
    partners: list[list[int | None]] | None = None  # differential sets: the other class of each text's pair
    descriptors: list[list[str]] | None = None      # descriptor sets: the phrase behind each text
    label_names: list[str] | None = None            # descriptor sets: the name DCLIP's labels use (the file's key)

    @property
    def counts(self) -> list[int]:
        return [len(t) for t in self.texts]

    def with_sentence_rule(self, rule: str, classes: ClassList) -> "PromptSource":
        """A descriptor set's texts rebuilt with another DCLIP sentence rule (sources of other
        kinds are returned as they are)."""
        if self.descriptors is None or rule == self.meta.get("sentence_rule"):
            return self
        suffix = self.meta.get("sentence_suffix", "")
        texts = [[dclip_label(name, d, rule) + suffix for d in per_class]
                 for name, per_class in zip(self.label_names or classes.names, self.descriptors)]
        return PromptSource(self.name, self.kind, texts, self.families, {**self.meta, "sentence_rule": rule},
                            self.partners, self.descriptors, self.label_names)

    def deduplicated(self) -> "PromptSource":
        """Each text once per class, first occurrence kept (the `dedupe` head option)."""
        keep = [_first_occurrences(texts) for texts in self.texts]
        pick = (lambda rows: [[row[t] for t in kept] for row, kept in zip(rows, keep)])
        return PromptSource(self.name, self.kind, pick(self.texts), pick(self.families),
                            {**self.meta, "deduplicated": sum(map(len, self.texts)) - sum(map(len, keep))},
                            pick(self.partners) if self.partners is not None else None,
                            pick(self.descriptors) if self.descriptors is not None else None, self.label_names)


def _first_occurrences(texts: list[str]) -> list[int]:
    """The position of each distinct text's first occurrence, in order (one pass, not one scan per text)."""
    first: dict[str, int] = {}
    for position, text in enumerate(texts):
        first.setdefault(text, position)
    return sorted(first.values())


def dclip_label(class_name: str, descriptor: str, rule: str = "authors") -> str:
    """DCLIP's label for a descriptor: the class name with "_" as spaces (their `wordify`), ", ",
    and the descriptor's sentence."""
    return dclip_sentence(wordify(class_name), descriptor, rule)


def list_template_sets() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))


def load_template_set(name_or_file: str) -> tuple[str, list[str], str]:
    """A CLIP template set by name (`promptgen templates --clip`) or from a JSON file: a list of
    templates, or {"templates": [...]}; `{c}` (CLIP_benchmark) or `{}` (open_clip) marks the name.
    Returns (name, templates, sha256)."""
    path = Path(name_or_file).expanduser()
    if not path.is_file():
        path = TEMPLATE_DIR / f"{name_or_file}.json"
    if not path.is_file():
        raise PromptgenError(f"no CLIP template set {name_or_file!r}",
                             f"built-in sets: {', '.join(list_template_sets())}; or give a JSON file with a list "
                             f"of templates such as \"a photo of a {{c}}.\"")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PromptgenError(f"{path} is not valid JSON: {exc}", "write a JSON list of templates") from exc
    templates = data.get("templates") if isinstance(data, dict) else data
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise PromptgenError(f"{path} holds no list of template strings",
                             "write [\"a photo of a {c}.\", ...] or {\"templates\": [...]}")
    normalised = []
    for template in templates:
        template = template.replace("{}", "{c}")
        if template.count("{c}") != 1:
            raise PromptgenError(f"template {template!r} in {path} must contain the class placeholder once",
                                 "mark the class name with {c} (or {})")
        normalised.append(template)
    name = data.get("name", path.stem) if isinstance(data, dict) else path.stem
    return name, normalised, "sha256:" + hashlib.sha256(raw).hexdigest()


def source_from_templates(name_or_file: str, classes: ClassList) -> PromptSource:
    name, templates, digest = load_template_set(name_or_file)
    texts = [[t.replace("{c}", c) for t in templates] for c in classes.names]
    families = [[f"t{i}" for i in range(len(templates))] for _ in classes.names]
    return PromptSource(f"templates:{name}", "templates", texts, families,
                        {"templates": name, "count": len(templates), "sha256": digest})


def source_from_set(store: Store, ref: SetRef | str, classes: ClassList) -> PromptSource:
    """Texts per class of a prompt-set version. A set of the same dataset must have been written
    for this class list; a set of another dataset is matched by class name (every class of
    `classes` that the set lacks is named in the error)."""
    if isinstance(ref, str):
        ref = SetRef.parse(ref, None if "/" in ref else classes.dataset)
    info = store.resolve(ref)
    records = store.read_records(info)
    set_names: dict[int, str] = {}
    for record in records:
        set_names.setdefault(record["class_index"], record["class_name"])
    manifest_classes = info.manifest.get("classes", {})
    texts: list[list[str]] = [[] for _ in classes.names]
    families: list[list[str]] = [[] for _ in classes.names]
    partners: list[list[int | None]] = [[] for _ in classes.names]
    if info.dataset == classes.dataset:
        if manifest_classes.get("hash") and manifest_classes["hash"] != classes.hash:
            given = [set_names.get(i, f"<class {i}>") for i in range(manifest_classes.get("count", len(set_names)))]
            raise PromptgenError(f"{info.ref} was written for another class list than {classes.dataset}'s: "
                                 + describe_class_mismatch(classes.names, given),
                                 "rebuild the set for this class list, or import it again with --match")
        mapping = {i: i for i in range(len(classes))}
    else:
        by_name = {name: index for index, name in set_names.items()}
        missing = [c for c in classes.names if c not in by_name]
        if len(missing) == len(classes):
            raise PromptgenError(f"{info.ref} shares no class name with {classes.dataset}",
                                 f"use a set of {classes.dataset}: {', '.join(store.list_sets(classes.dataset)) or '(none)'}")
        # classes the set lacks stay empty: the head's coverage check names them
        mapping = {by_name[c]: i for i, c in enumerate(classes.names) if c in by_name}
    descriptors: list[list[str]] = [[] for _ in classes.names]
    label_names = list(classes.names)  # DCLIP's labels name the class by the file's key
    for record in records:
        target = mapping.get(record["class_index"])
        if target is None:
            continue
        texts[target].append(record["text"])
        descriptors[target].append(record["text"] if record.get("kind") == "descriptor" else "")
        if record.get("source_key"):
            label_names[target] = record["source_key"]
        families[target].append(record.get("template") or "")
        other = record.get("other_class_index")
        partners[target].append(mapping.get(other) if other is not None else None)
    has_pairs = any(p is not None for per_class in partners for p in per_class)
    meta = {"set": str(info.ref), "version": info.version, "records_sha256": info.manifest.get("records_sha256"),
            "text_kind": info.manifest.get("text_kind"), "status": info.status,
            "matched_by": "index" if info.dataset == classes.dataset else "name",
            **({"failed_pairs": len(info.manifest.get("failed_pairs") or [])} if has_pairs else {})}
    source = PromptSource(str(info.ref), "set", texts, families, meta, partners if has_pairs else None)
    fudd_names = (info.manifest.get("import") or {}).get("class_names")  # FuDD's own, from --class-names
    if has_pairs and info.dataset == classes.dataset and isinstance(fudd_names, list) and len(fudd_names) == len(classes):
        source.label_names = [str(name) for name in fudd_names]
    if info.manifest.get("text_kind") == "descriptor" or any(r.get("kind") == "descriptor" for r in records[:1]):
        source = _descriptor_source(source, descriptors, label_names, classes)
    return source


def _descriptor_source(source: PromptSource, descriptors: list[list[str]], label_names: list[str],
                       classes: ClassList) -> PromptSource:
    """DCLIP's loader (docs/methods.md, dclip): the label names the class as the file's key does
    (ImageNet's "eft" and "maillot", where our list says "newt" and "tights"), and on ImageNet
    every sentence ends with ".". (An empty descriptor list is the descriptor "", which the import
    writes as a record: "{c}, which has ". A class without records stays without texts.)"""
    empty = [c for c in range(len(classes)) if descriptors[c] and not any(descriptors[c])]
    suffix = "." if classes.dataset == "imagenet" else ""
    texts = [[dclip_label(name, d) + suffix for d in per_class] for name, per_class in zip(label_names, descriptors)]
    meta = {**source.meta, "sentence_rule": "authors", "sentence_suffix": suffix,
            "empty_descriptor_lists": [classes.names[c] for c in empty],
            "labels_with_the_file_key": {classes.names[c]: key for c, key in enumerate(label_names)
                                         if key != classes.names[c]}}
    return PromptSource(source.name, source.kind, texts, source.families, meta, source.partners, descriptors,
                        label_names)
