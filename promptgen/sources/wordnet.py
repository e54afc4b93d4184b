"""The offline knowledge source `wordnet`: glosses and lemmas of the ImageNet-21k synsets.

timm (installed with open_clip) ships the tables in `timm/data/_info/`: 21,844 WordNet noun
synsets with their lemmas and definitions. No key, no network. A class is matched to a synset
by its WordNet id when the dataset has ids (ImageNet), else by an exact lemma, then by a
lemma that differs only in case, spaces, hyphens or underscores, then by a singular form.
A class with no match is reported and gets no text: nothing is invented. A name with several
senses ("rose": a colour, a shrub) takes the best-ranked one and is reported as ambiguous with
its alternatives; a class file line `n12620196<TAB>rose` pins the sense.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from promptgen.classes import ClassList, loose_name as _norm
from promptgen.errors import PromptgenError

__all__ = ["Synset", "Match", "WordNet", "load_wordnet", "gloss_sentence"]

_ID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Synset:
    wnid: str
    lemmas: tuple[str, ...]
    gloss: str


@dataclass
class Match:
    class_index: int
    class_name: str
    synset: Synset | None
    method: str  # "wnid", "lemma", "normalised-lemma", "singular", or "unmatched"
    alternatives: list[Synset] = field(default_factory=list)

    def to_json(self) -> dict:
        data = {"class_index": self.class_index, "class_name": self.class_name, "method": self.method}
        if self.synset:
            data.update(wnid=self.synset.wnid, lemmas=list(self.synset.lemmas), gloss=self.synset.gloss)
        if self.alternatives:
            data["alternatives"] = [{"wnid": s.wnid, "lemmas": list(s.lemmas), "gloss": s.gloss}
                                    for s in self.alternatives]
        return data


def _singular(text: str) -> list[str]:
    forms = []
    if text.endswith("ies") and len(text) > 4:
        forms.append(text[:-3] + "y")
    if text.endswith("es") and len(text) > 3:
        forms.append(text[:-2])
    if text.endswith("s") and not text.endswith("ss") and len(text) > 2:
        forms.append(text[:-1])
    return forms


class WordNet:
    def __init__(self, synsets: dict[str, Synset], imagenet_1k: set[str], source: str) -> None:
        self.synsets = synsets
        self.imagenet_1k = imagenet_1k
        self.source = source
        self._exact: dict[str, list[str]] = {}
        self._normalised: dict[str, list[str]] = {}
        for wnid, synset in synsets.items():
            for lemma in synset.lemmas:
                self._exact.setdefault(lemma, []).append(wnid)
                self._normalised.setdefault(_norm(lemma), []).append(wnid)

    def __len__(self) -> int:
        return len(self.synsets)

    def _rank(self, wnids: list[str], name: str) -> list[Synset]:
        """Best first: an ImageNet-1k synset, then one whose first lemma is the name, then WordNet id order."""
        def score(wnid: str) -> tuple:
            synset = self.synsets[wnid]
            return (wnid not in self.imagenet_1k, _norm(synset.lemmas[0]) != _norm(name), wnid)
        return [self.synsets[w] for w in sorted(dict.fromkeys(wnids), key=score)]

    def match(self, classes: ClassList) -> list[Match]:
        matches = []
        for index, name in enumerate(classes.names):
            class_id = classes.ids[index] if classes.ids else None
            if class_id and _ID.match(class_id):
                synset = self.synsets.get(class_id)
                matches.append(Match(index, name, synset, "wnid" if synset else "unmatched"))
                continue
            for method, candidates in (("lemma", self._exact.get(name)),
                                       ("normalised-lemma", self._normalised.get(_norm(name))),
                                       ("singular", [w for form in _singular(_norm(name))
                                                     for w in self._normalised.get(form, [])])):
                if candidates:
                    ranked = self._rank(candidates, name)
                    matches.append(Match(index, name, ranked[0], method, ranked[1:]))
                    break
            else:
                matches.append(Match(index, name, None, "unmatched"))
        return matches


def gloss_sentence(class_name: str, gloss: str) -> str:
    """"tench: freshwater dace-like game fish of Europe ...": dictionary style, which stays grammatical
    whatever shape the gloss has (many are not noun phrases)."""
    return f"{class_name}: {gloss.strip().rstrip('.;')}."


def _timm_info_dir() -> Path:
    # find_spec does not import timm (which would import torch, seconds of start-up)
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise PromptgenError("the wordnet source needs timm's synset tables, and timm is not installed",
                             "pip install timm (open_clip_torch brings it)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


@functools.lru_cache(maxsize=1)
def load_wordnet() -> WordNet:
    info = _timm_info_dir()
    try:
        lemma_text = (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8")
        gloss_text = (info / "imagenet_synset_to_definition.txt").read_text(encoding="utf-8")
        onek = set((info / "imagenet_synsets.txt").read_text(encoding="utf-8").split())
    except FileNotFoundError as exc:
        raise PromptgenError(f"timm's synset tables are missing ({exc.filename})",
                             "reinstall timm: pip install --force-reinstall timm") from None
    glosses = dict(line.split("\t", 1) for line in gloss_text.splitlines() if "\t" in line)
    synsets = {}
    for line in lemma_text.splitlines():
        if "\t" not in line:
            continue
        wnid, lemmas = line.split("\t", 1)
        synsets[wnid] = Synset(wnid, tuple(lemma.strip() for lemma in lemmas.split(",") if lemma.strip()),
                               glosses.get(wnid, "").strip())
    return WordNet(synsets, onek, f"timm {metadata.version('timm')} data/_info (ImageNet-21k WordNet synsets)")
