"""WaffleCLIP (Roth et al., ICCV 2023; methods.md 4): random word and character descriptors, the
control every descriptor method must beat."""

from __future__ import annotations

import random
import string

import torch

from promptgen.clip.registry import BuildContext, mean_head, register_builder
from promptgen.clip.sources import TEMPLATE_DIR, PromptSource
from promptgen.errors import PromptgenError
from promptgen.formats import dclip_sentence

__all__: list[str] = []


def _waffle_descriptors(count: int, seed: int) -> list[str]:
    """WaffleCLIP's random descriptors (methods.md 4): `count` pairs of a random word from the
    authors' word list and a random character string of the same length; the same for all classes."""
    words = [w for w in (TEMPLATE_DIR / "waffle_words.txt").read_text(encoding="utf-8").splitlines() if w.strip()]
    rng = random.Random(seed)
    descriptors = []
    for _ in range(count):
        word = rng.choice(words)
        descriptors.append(word)
        descriptors.append("".join(rng.choice(string.ascii_lowercase) for _ in range(len(word))))
    return descriptors


@register_builder("waffle", options=("waffle_count",),
                  summary="WaffleCLIP control: 'A photo of a {c}, which (is|has) {random}' over seeded random "
                          "word/character pairs, mean NOT renormalised; with --set adds its texts (Waffle+GPT) "
                          "(methods.md 4)")
def _waffle(ctx: BuildContext) -> tuple[torch.Tensor, dict]:
    count = int(ctx.options.get("waffle_count", 15))
    seed = int(ctx.options.get("seed", 0))
    if count < 1:
        raise PromptgenError("--waffle-count must be at least 1", "WaffleCLIP uses 15 pairs")
    descriptors = _waffle_descriptors(count, seed)
    texts = [[dclip_sentence(f"A photo of a {c}", d) + "." for d in descriptors] for c in ctx.classes.names]
    ctx.sources.append(PromptSource(f"waffle:seed={seed}", "random", texts, [["waffle"] * len(t) for t in texts],
                                    {"count": count, "seed": seed}))
    ctx._embedded = None
    return mean_head(ctx.per_class(), renormalise=False), {"waffle_count": count, "seed": seed,
                                                            "descriptors": descriptors}
