"""Heads in other code: `promptgen.load_head(path)` and `promptgen.classify(features, head, k)`.

    import promptgen
    head = promptgen.load_head("dclip.safetensors")    # a Head: .weights (D, C), .class_names, .provenance
    top = promptgen.classify(image_features, head, k=5)
    top.names[0], top.scores[0]                        # the first image's 5 classes and their probabilities
    linear = head.as_linear()                          # torch.nn.Linear(D, C, bias=False): linear(v) = v @ W

The package's `__init__` imports this module on first use, so `import promptgen` stays free of torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from promptgen.clip.head_files import load_head as _load_head_file
from promptgen.clip.registry import Head
from promptgen.errors import PromptgenError

__all__ = ["load_head", "classify", "TopK", "LOGIT_SCALE"]

LOGIT_SCALE = 100.0   # CLIP's learned temperature, as every head in promptgen is evaluated (docs/methods.md)

@dataclass(frozen=True)
class TopK:
    """The k most probable classes of each image, best first. For (N, D) features: `names` is a
    list of N lists of k names, `scores` and `indices` are (N, k); for one (D,) vector: a list of
    k names and (k,) tensors. `scores` are softmax probabilities over all C classes (float32, on
    the features' device); `indices` are column numbers of the head."""

    names: list[str] | list[list[str]]
    scores: torch.Tensor
    indices: torch.Tensor


def load_head(path: str | os.PathLike[str]) -> Head:
    """A head file written by `promptgen head` (.pt, .safetensors, .npy), or any (D, C) tensor in
    one. Nothing is unpickled. A head without class names (another tool's tensor) has
    `class_names` None and a provenance that knows only its file."""
    return _load_head_file(Path(path))


def classify(image_features: torch.Tensor | np.ndarray, head: Head | torch.Tensor | str | os.PathLike[str],
             k: int = 5) -> TopK:
    """The top-k classes of image features under `head`, as promptgen evaluates them: softmax of
    100 * normalize(v) @ W. `image_features`: (N, D) or (D,), a torch tensor or a numpy array
    (normalised here). `head`: a Head, a (D, C) tensor (e.g. from `make_head`) or a head file's path.
    k above the class count gives every class. Classes of a head without names are "class 0",
    "class 1", ..."""
    loaded = head if isinstance(head, Head) else Head(head) if isinstance(head, torch.Tensor) else load_head(head)
    if loaded.scorer is not None:
        raise PromptgenError(f"the {loaded.name} head re-ranks each image; classify takes a (D, C) head",
                             "use head.logits(features), or the builder's -static variant")
    weights = loaded.weights
    if weights.dim() != 2:
        raise PromptgenError(f"the head is a {weights.dim()}-D tensor {tuple(weights.shape)}",
                             "a head is a (D, C) tensor: D = embedding size, one column per class")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PromptgenError(f"k={k!r}: the number of classes to return must be a positive integer", "e.g. k=5")
    features = torch.as_tensor(image_features)
    if features.dim() not in (1, 2):
        raise PromptgenError(f"image features of shape {tuple(features.shape)}: expected (N, D) or (D,)",
                             "give one feature vector per image, e.g. model.encode_image(images)")
    single = features.dim() == 1
    batch = features.reshape(1, -1) if single else features
    dim = weights.shape[0]
    if batch.shape[1] != dim:
        transposed = " (they look transposed: give (N, D))" if not single and batch.shape[0] == dim else ""
        raise PromptgenError(f"the image features have dimension {batch.shape[1]}, the head {dim}{transposed}",
                             "compute the features with the CLIP model the head was built with "
                             "(head.provenance['model']), or use a head built for your model")
    names = loaded.class_names or [f"class {c}" for c in range(weights.shape[1])]
    with torch.no_grad():
        vectors = F.normalize(batch.float(), dim=-1)
        probabilities = (LOGIT_SCALE * vectors @ weights.float().to(vectors.device)).softmax(dim=-1)
        scores, indices = probabilities.topk(min(k, weights.shape[1]), dim=-1)
    picked = [[names[c] for c in row] for row in indices.tolist()]
    if single:
        return TopK(picked[0], scores[0], indices[0])
    return TopK(picked, scores, indices)
