"""Head files: the (D, C) tensor CLIP_benchmark's `--load_clfs` reads, and our JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from promptgen.classes import ClassList
from promptgen.clip.registry import HEAD_FORMAT, Head
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text
from promptgen.store import describe_class_mismatch

__all__ = ["save_head", "load_head"]


def save_head(head: Head, path: Path) -> Path:
    """The (D, C) tensor as CLIP_benchmark's `--load_clfs` reads it (a plain `torch.save` of a
    tensor) and `<path stem>.json` beside it. Returns the sidecar's path."""
    if head.scorer is not None:
        raise PromptgenError(f"the {head.info.get('builder')} head re-ranks each image and has no single (D, C) "
                             "matrix to save", "evaluate it with `promptgen eval --build fudd:SET`, or save the "
                             "static variant (--builder fudd-static)")
    sidecar = path.with_suffix(".json")
    if path.suffix == ".json":
        raise PromptgenError(f"{path} would be overwritten by its own sidecar", "name the head FILE.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".npy":
        with open(temp, "wb") as handle:
            np.save(handle, head.weights.detach().cpu().numpy(), allow_pickle=False)
    else:
        torch.save(head.weights.detach().cpu().contiguous().clone(), temp)
    temp.replace(path)
    atomic_write_text(sidecar, json.dumps({**head.info, "file": path.name}, ensure_ascii=False, indent=1) + "\n")
    return sidecar


def load_head(path: Path, classes: ClassList | None = None, embed_dim: int | None = None) -> Head:
    """A head written by `save_head`, or any (D, C) tensor in a `.pt` or `.npy` file. With `classes`,
    a sidecar's class list must match (its mismatches are named); the shape must fit either way."""
    if not path.is_file():
        raise PromptgenError(f"head file {path} not found", "write one with `promptgen head`")
    try:
        if path.suffix == ".npy":
            weights = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PromptgenError(f"cannot read head {path}: {exc}".splitlines()[0],
                             "give a tensor saved with torch.save (.pt) or numpy (.npy)") from exc
    if isinstance(weights, dict) and "weights" in weights:
        weights = weights["weights"]
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        raise PromptgenError(f"{path} does not hold a 2-D tensor", "a head is a (D, C) tensor: D = embedding size")
    info: dict = {"name": path.stem, "file": str(path)}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        # only our own sidecars count: a foo.json beside foo.pt may be anything
        if isinstance(data, dict) and data.get("format") == HEAD_FORMAT and isinstance(data.get("classes"), dict):
            info = {**data, "name": path.stem, "file": str(path)}
    if classes is not None:
        names = info.get("classes", {}).get("names")
        if names is not None and info["classes"].get("hash") != classes.hash:
            raise PromptgenError(f"head {path.name} was built for another class list than {classes.dataset}'s: "
                                 + describe_class_mismatch(classes.names, names),
                                 f"build the head for {classes.dataset} with `promptgen head {classes.dataset} ...`")
        if weights.shape[1] != len(classes):
            hint = (" (it looks transposed: save W as (D, C))" if weights.shape[0] == len(classes) else "")
            raise PromptgenError(f"head {path.name} has {weights.shape[1]} columns for the {len(classes)} classes "
                                 f"of {classes.dataset}{hint}", "a head is a (D, C) tensor, one column per class")
    if embed_dim is not None and weights.shape[0] != embed_dim:
        raise PromptgenError(f"head {path.name} has dimension {weights.shape[0]}, the features {embed_dim}",
                             "use a head built with the same CLIP model as the features")
    return Head(weights.float().contiguous(), info)
