"""WaffleCLIP (Roth et al., ICCV 2023; docs/methods.md, waffle): random word and character
descriptors, the control every descriptor method must beat, and Waffle+GPT.

The generator is the authors' `waffle` / `waffle_and_gpt` mode draw for draw: numpy's legacy
RandomState seeded with `seed` (their `seed_everything(rep)`), the same calls in the same order
(descriptors for every class, then the class whose texts every class shares), so a seed gives
their texts exactly. Their published numbers are the mean over seeds 0-6 (`eval --build
waffle,reps=7`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import torch

from promptgen.clip.registry import BuildContext, mean_head, register_builder
from promptgen.clip.sources import TEMPLATE_DIR, PromptSource
from promptgen.errors import PromptgenError
from promptgen.formats import dclip_sentence, wordify
from promptgen.paths import BUILTIN_PROMPTS_DIR, shipped_versions

__all__ = ["WaffleSetup", "waffle_setup", "waffle_texts", "waffle_gpt_texts", "waffle_word_list"]

LABEL_BEFORE, LABEL_AFTER = "A photo of a ", "."  # WaffleCLIP's base_main.py defaults


@functools.cache
def waffle_word_list() -> tuple[str, ...]:
    """The authors' word list (word_list.pkl as text), its leading empty entry included."""
    return tuple((TEMPLATE_DIR / "waffle_words.txt").read_text(encoding="utf-8").splitlines())


def _label(descriptor: str, name: str) -> str:
    """"A photo of a {c}, which (is|has) {d}." with DCLIP's sentence rule (their structured builder)."""
    return dclip_sentence(LABEL_BEFORE + wordify(name), descriptor) + LABEL_AFTER


@dataclass
class WaffleSetup:
    """What the generator draws from, derived from the class names and the DCLIP descriptors."""

    words: np.ndarray           # the word list, each word cut to `word_length` characters
    characters: np.ndarray      # every character of the descriptors' words ("," and "." removed), sorted
    words_per_descriptor: int   # the rounded mean word count of the class names (at least 1)
    word_length: int            # the rounded mean word length of the class names
    character_pattern: str      # "aaa aaa": a group of characters per "a", ", " per space


def waffle_setup(names: list[str], descriptors: list[str]) -> WaffleSetup:
    """The authors' statistics (waffle_tools.py, mode waffle): word count and length from the
    class names, the character pool from every DCLIP descriptor (empty lists count as "")."""
    words_per = int(np.max([np.round(np.mean([len(wordify(x).split(" ")) for x in names])), 1]))
    word_length = int(np.round(np.mean([np.mean([len(y) for y in wordify(x).split(" ")]) for x in names])))
    unique_words = np.unique([word for descriptor in descriptors for word in descriptor.split(" ")])
    characters = np.unique(list("".join(w.replace(",", "").replace(".", "") for w in unique_words)))
    if len(characters) == 0:
        raise PromptgenError("the descriptor set holds no character to draw random descriptors from",
                             "give a descriptor set with text (e.g. --set dclip-published)")
    groups = int(np.round(np.mean([np.sum(np.array(list(x)) == " ") for x in names]))) + 1
    length = int(np.ceil(np.mean([np.max([len(y) for y in x.split(" ")]) for x in names])))
    length += groups - length % groups
    pattern = " ".join(["a" * (length // groups)] * groups)
    # an array once, not a list numpy converts at every draw (the draws are the same)
    words = np.array([w[:word_length] for w in waffle_word_list()])
    return WaffleSetup(words, characters, words_per, word_length, pattern)


def _draw_pair(rng: np.random.RandomState, setup: WaffleSetup) -> tuple[str, str]:
    """One random word descriptor and one random character descriptor, drawn as the authors do
    (one `choice(..., 1, replace=False)` per word and per character)."""
    word = " ".join(rng.choice(setup.words, 1, replace=False)[0] for _ in range(setup.words_per_descriptor))
    noise = "".join(", " if c == " " else rng.choice(setup.characters, 1, replace=False)[0]
                    for c in setup.character_pattern)
    return word, noise


def _shared_random(rng: np.random.RandomState, setup: WaffleSetup, names: list[str], pairs: int) -> list[list[str]]:
    """Random texts for every class, then one class's texts given to all, its name replaced."""
    drawn = []
    for name in names:
        texts = []
        for _ in range(pairs):
            word, noise = _draw_pair(rng, setup)
            texts += [_label(word, name), _label(noise, name)]
        drawn.append(texts)
    match = names.index(str(rng.choice(names)))
    return [[text.replace(wordify(names[match]), wordify(name)) for text in drawn[match]] for name in names]


def waffle_texts(names: list[str], setup: WaffleSetup, count: int, seed: int) -> list[list[str]]:
    """Mode `waffle`: `count` word/character pairs shared by every class."""
    return _shared_random(np.random.RandomState(seed), setup, names, count)


def waffle_gpt_texts(names: list[str], setup: WaffleSetup, gpt: list[list[str]], count: int,
                     seed: int) -> list[list[str]]:
    """Mode `waffle_and_gpt`: int(2/3 count) shared random pairs, two GPT descriptors of the class
    per pair (drawn with replacement), then int(2/3 count) * 3 texts per class without replacement."""
    empty = [name for name, own in zip(names, gpt) if not own]
    if empty:
        raise PromptgenError(f"{len(empty)} classes have no DCLIP descriptor to draw: {', '.join(map(repr, empty[:8]))}",
                             "give a descriptor set with every class (an empty list in the file is the descriptor '')")
    rng = np.random.RandomState(seed)
    pairs = int(2 / 3 * count)
    texts = _shared_random(rng, setup, names, pairs)
    for name, own, class_texts in zip(names, gpt, texts):
        for _ in range(2 * pairs):
            class_texts.append(_label(rng.choice(own, 1)[0], name))
    return [[str(t) for t in rng.choice(class_texts, pairs * 3, replace=False)] for class_texts in texts]


def _descriptors(ctx: BuildContext, required: bool) -> tuple[list[list[str]], str, list[str]]:
    """The DCLIP descriptors per class and the class names as the descriptor file keys them
    (WaffleCLIP's key_list): from a descriptor set among the sources, else (for the character
    pool only) the dataset's shipped `dclip-published` set, else ImageNet's."""
    given = [s for s in ctx.sources if s.descriptors is not None]
    other = [s.name for s in ctx.sources if s.descriptors is None]
    if other:
        raise PromptgenError(f"the waffle builders read only a DCLIP descriptor set; {', '.join(other)} is not one",
                             "give --set DATASET/dclip-published (or a set made with --style dclip); to add other "
                             "texts to a Waffle head, pool them with the pooled builder")
    if len(given) > 1:
        raise PromptgenError(f"{len(given)} descriptor sets given: {', '.join(s.name for s in given)}",
                             "give one descriptor set (its descriptors and characters are drawn from)")
    if given:
        return [list(d) for d in given[0].descriptors], given[0].name, list(given[0].label_names or ctx.classes.names)
    if required:
        raise PromptgenError("waffle+gpt needs a DCLIP descriptor set",
                             f"give --set {ctx.classes.dataset}/dclip-published (or a set made with --style dclip)")
    shipped = shipped_versions()
    for dataset in (ctx.classes.dataset, "imagenet"):
        version = max(shipped.get((dataset, "dclip-published"), [0]))
        path = BUILTIN_PROMPTS_DIR / dataset / "dclip-published" / f"v{version}.jsonl"
        if version and path.is_file():
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            names = list(ctx.classes.names)
            if dataset == ctx.classes.dataset:  # the file's keys, as the authors' key_list
                for record in records:
                    names[record["class_index"]] = record.get("source_key") or names[record["class_index"]]
            return [[r["text"] for r in records]], f"{dataset}/dclip-published@v{version} (shipped)", names
    raise PromptgenError("no DCLIP descriptors to draw random characters from", "give --set with a descriptor set")


@dataclass
class _Job:
    count: int
    seed: int
    names: list[str]
    descriptors: list[list[str]]
    origin: str
    setup: WaffleSetup


def _job(ctx: BuildContext, gpt: bool) -> _Job:
    """The options, the descriptor set and the generator's statistics of one Waffle build."""
    count = int(ctx.options.get("waffle_count", 15))
    if count < 1 or (gpt and int(2 / 3 * count) < 1):
        raise PromptgenError(f"waffle_count={count} leaves no random pair",
                             "use --waffle-count 2 or more (WaffleCLIP uses 15)")
    descriptors, origin, names = _descriptors(ctx, required=gpt)
    setup = waffle_setup(names, [d for per_class in descriptors for d in per_class])
    return _Job(count, int(ctx.options.get("seed", 0)), names, descriptors, origin, setup)


def _use(ctx: BuildContext, name: str, texts: list[list[str]], meta: dict) -> torch.Tensor:
    """The generated texts become the head's only source: mean of e(t), not renormalised."""
    ctx.sources = [PromptSource(name, "random", texts, [["waffle"] * len(t) for t in texts], meta)]
    ctx._embedded = None
    return mean_head(ctx.per_class(), renormalise=False)


@register_builder("waffle", options=("waffle_count",), covers_all=False,
                  summary="WaffleCLIP: 'A photo of a {c}, which (is|has) {random}.' over the authors' seeded random "
                          "word/character pairs, mean NOT renormalised; a descriptor set gives the characters "
                          "(docs/methods.md, waffle)")
def _waffle(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    job = _job(ctx, gpt=False)
    texts = waffle_texts(job.names, job.setup, job.count, job.seed)
    head = _use(ctx, f"waffle:seed={job.seed}", texts, {"count": job.count, "seed": job.seed,
                                                        "characters_from": job.origin})
    return head, {"waffle_count": job.count, "seed": job.seed, "characters_from": job.origin,
                  "words_per_descriptor": job.setup.words_per_descriptor, "word_length": job.setup.word_length,
                  "example": texts[0][:2]}


@register_builder("waffle+gpt", needs_set=True, options=("waffle_count",), covers_all=False,
                  summary="Waffle+GPT: 2/3 of the random pairs plus the class's DCLIP descriptors sampled with "
                          "replacement, subsampled to 2 x waffle_count texts, mean NOT renormalised "
                          "(docs/methods.md, waffle+gpt)")
def _waffle_gpt(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    job = _job(ctx, gpt=True)
    texts = waffle_gpt_texts(job.names, job.setup, job.descriptors, job.count, job.seed)
    head = _use(ctx, f"waffle+gpt:seed={job.seed}", texts, {"count": job.count, "seed": job.seed,
                                                            "descriptors": job.origin})
    return head, {"waffle_count": job.count, "seed": job.seed, "descriptors": job.origin,
                  "texts_per_class": len(texts[0])}
