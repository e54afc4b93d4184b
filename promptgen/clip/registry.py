"""The head-builder registry: what a builder declares, what it gets (BuildContext) and what a
head is (Head). Builders live in heads.py (template, cupl, dclip, pooled) and in the modules of
their method (zpe, waffle, fudd, real); `heads.build_head` is the one factory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from promptgen.classes import ClassList
from promptgen.clip.embed import TextEncoder
from promptgen.clip.sources import PromptSource
from promptgen.errors import PromptgenError

__all__ = ["HeadBuilder", "BUILDERS", "register_builder", "list_builders", "Head", "BuildContext", "stack_columns",
           "mean_head", "HEAD_FORMAT", "GENERIC_OPTIONS"]

HEAD_FORMAT = "promptgen.head/1"
# options every builder takes: the seed, and how set texts are read (docs/methods.md)
GENERIC_OPTIONS = ("seed", "dedupe", "sentence_rule")


@dataclass
class HeadBuilder:
    name: str
    build: Callable[["BuildContext"], tuple[torch.Tensor, dict]]
    summary: str
    default_templates: str | None = None   # used when no source is given
    needs_set: bool = False
    needs_images: bool = False
    options: tuple[str, ...] = ()           # the builder's own options (seed is always accepted)
    covers_all: bool = True                 # every class needs a text (else --allow-empty)
    per_image: bool = False                 # re-ranks each image: no single (D, C) head to save


BUILDERS: dict[str, HeadBuilder] = {}


def register_builder(name: str, *, summary: str, default_templates: str | None = None, needs_set: bool = False,
                     needs_images: bool = False, options: tuple[str, ...] = (), covers_all: bool = True,
                     per_image: bool = False) -> Callable:
    def decorator(function: Callable) -> Callable:
        BUILDERS[name] = HeadBuilder(name, function, summary, default_templates, needs_set, needs_images, options,
                                     covers_all, per_image)
        return function
    return decorator


def list_builders() -> list[str]:
    return sorted(BUILDERS)


@dataclass
class Head:
    """W (D, C), float32, and everything needed to reproduce it."""

    weights: torch.Tensor
    info: dict = field(default_factory=dict)
    scorer: Any = None      # a per-image re-ranker (fudd); then `weights` is its initial head

    def logits(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) logits for normalised image features: 100 * v @ W, or the re-ranker's."""
        if self.scorer is not None:
            return self.scorer.logits(features, labels)
        return 100 * features @ self.weights

    @property
    def class_names(self) -> list[str] | None:
        """The class of each column, in order; None for a bare tensor that names none."""
        names = (self.info.get("classes") or {}).get("names")
        return list(names) if names is not None else None

    @property
    def provenance(self) -> dict[str, Any]:
        """What made the head, as far as its build, file or sidecar says: format, builder, dataset,
        classes_hash, sets (each set's ref, version and records_sha256), sources (every source,
        template sets included), options, model (the CLIP model's identity), created,
        promptgen_version, file, and sidecar_sha256 (the sidecar's hash a .safetensors file records;
        None for .pt and .npy). Unknown values are None: a bare tensor knows only its file."""
        classes = self.info.get("classes") or {}
        sources = self.info.get("sources")
        sets = None if sources is None else [{key: source.get(key) for key in ("set", "version", "records_sha256")}
                                             for source in sources if source.get("kind") == "set"]
        return {"format": self.info.get("format"), "builder": self.info.get("builder"),
                "dataset": classes.get("dataset"), "classes_hash": classes.get("hash"), "sets": sets,
                "sources": sources, "options": self.info.get("options"), "model": self.info.get("model"),
                "created": self.info.get("created"), "promptgen_version": self.info.get("promptgen_version"),
                "file": self.info.get("file"), "sidecar_sha256": self.info.get("sidecar_sha256")}

    def as_linear(self) -> torch.nn.Linear:
        """W as a `torch.nn.Linear(D, C, bias=False)` holding a copy of W.T, so that `linear(v)` is
        `v @ W` for normalised image features v. Without the logit scale: promptgen's logits
        (`logits`, evaluation, `promptgen.classify`) are `100 * linear(v)`."""
        if self.scorer is not None:
            raise PromptgenError(f"the {self.name} head re-ranks each image: no single linear layer does that",
                                 "use head.logits(features), or the builder's -static variant")
        dim, count = self.weights.shape
        linear = torch.nn.Linear(dim, count, bias=False, device=self.weights.device, dtype=self.weights.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weights.T)
        return linear

    @property
    def name(self) -> str:
        return self.info.get("name") or self.info.get("builder", "head")


@dataclass
class BuildContext:
    encoder: TextEncoder
    classes: ClassList
    sources: list[PromptSource]
    options: dict
    image_features: torch.Tensor | None = None    # normalised (N, D), unlabeled test images (ZPE)
    pool_features: torch.Tensor | None = None     # normalised (M, D), a generic image pool (ZPE mu_pre)
    _embedded: list[list[torch.Tensor]] | None = None
    allow_empty: bool = False
    store: Any = None   # the prompt store (store.Store), for options that name a set: real's counts=SET

    def embedded(self) -> list[list[torch.Tensor]]:
        """e(t) for every text, per source and class: one encoder call for all sources."""
        if self._embedded is None:
            flat = [t for source in self.sources for texts in source.texts for t in texts]
            vectors = self.encoder.encode_normalized(flat)
            out, position = [], 0
            for source in self.sources:
                per_class = []
                for texts in source.texts:
                    per_class.append(vectors[position:position + len(texts)])
                    position += len(texts)
                out.append(per_class)
            self._embedded = out
        return self._embedded

    def per_class(self) -> list[torch.Tensor]:
        """All of a class's e(t), sources concatenated."""
        embedded = self.embedded()
        dim = self.encoder.clip.embed_dim
        return [torch.cat([source[c] for source in embedded]) if embedded else torch.empty(0, dim)
                for c in range(len(self.classes))]


def stack_columns(columns: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(columns, dim=1).contiguous().float()


def mean_head(per_class: list[torch.Tensor], renormalise: bool) -> torch.Tensor:
    columns = [vectors.mean(dim=0) for vectors in per_class]
    head = stack_columns(columns)
    return F.normalize(head, dim=0) if renormalise else head


