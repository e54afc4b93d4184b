"""The Python entry points: the same heads the CLI writes, as tensors for other classifiers.

    from promptgen.clip import make_head
    W = make_head("imagenet", "dclip", sets=["dclip-published"], clip_model="ViT-B-32", pretrained="openai")
    logits = 100 * F.normalize(image_features, dim=-1) @ W
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from promptgen.classes import ClassList
from promptgen.clip.embed import TextEncoder
from promptgen.clip.heads import Head, build_head
from promptgen.clip.models import ClipModel, load_clip
from promptgen.clip.sources import PromptSource, source_from_set, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.paths import cache_dir, resolve_root
from promptgen.store import SetRef, Store

__all__ = ["make_head", "build_named_head", "collect_sources"]


def collect_sources(store: Store, classes: ClassList, sets: Sequence[str] = (),
                    templates: Sequence[str] = ()) -> list[PromptSource]:
    """Sources in the order given: prompt-set references first, then CLIP template sets."""
    sources = [source_from_set(store, SetRef.parse(ref, None if "/" in ref else classes.dataset), classes)
               for ref in sets]
    sources += [source_from_templates(name, classes) for name in templates]
    return sources


def build_named_head(builder: str, *, store: Store, classes: ClassList, encoder: TextEncoder,
                     sets: Sequence[str] = (), templates: Sequence[str] = (), **options: Any) -> Head:
    return build_head(builder, encoder=encoder, classes=classes,
                      sources=collect_sources(store, classes, sets, templates), store=store, **options)


def make_head(dataset: str, builder: str = "template", *, sets: Sequence[str] = (), templates: Sequence[str] = (),
              clip_model: str | ClipModel = "ViT-B-32", pretrained: str | None = "openai", seed: int | None = None,
              root: str | Path | None = None, return_head: bool = False, **options: Any) -> torch.Tensor | Head:
    """The (D, C) head `promptgen head` would write, built with the embedding cache of `root`.
    Options are the builder's (allow_empty, image_features, pool_features, zpe_mode, zpe_tau,
    zpe_group, pool, source_weights, waffle_count)."""
    store = Store(resolve_root(root))
    classes = store.classes(dataset)
    clip = clip_model if isinstance(clip_model, ClipModel) else \
        load_clip(clip_model, pretrained, seed=seed or 0, cache=cache_dir(store.root))
    encoder = TextEncoder(clip, cache_dir(store.root))
    head = build_named_head(builder, store=store, classes=classes, encoder=encoder, sets=sets, templates=templates,
                            **({"seed": seed} if seed is not None else {}), **options)
    if head.scorer is not None and not return_head:
        raise PromptgenError(f"the {builder} head re-ranks each image; its weights alone are only the initial head",
                             f"pass return_head=True and call head.logits(image_features), or use {builder}-static")
    return head if return_head else head.weights
