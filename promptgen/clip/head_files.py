"""Head files: the (D, C) tensor as `.pt` (what CLIP_benchmark's `--load_clfs` reads), `.npy` or
`.safetensors`, and our JSON sidecar `FILE.json` beside it.

A `.safetensors` head holds one tensor named "weights" and string metadata that describes it on
its own (format, class names and hash, dataset, builder, options, sources with their versions and
records hashes, model, and the sha256 of the sidecar written with it), so it stays usable when
its sidecar is lost, and a reader can tell whether a sidecar beside it is the one it came with.
Reading never unpickles: `.pt` through `torch.load(weights_only=True)`, `.npy` without pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptgen.classes import ClassList
from promptgen.clip.registry import HEAD_FORMAT, Head
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text
from promptgen.store import describe_class_mismatch

__all__ = ["save_head", "load_head", "HEAD_SUFFIXES", "SAFETENSORS_TENSOR", "safetensors_metadata"]

log = logging.getLogger(__name__)

HEAD_SUFFIXES = (".pt", ".npy", ".safetensors")
SAFETENSORS_TENSOR = "weights"   # the one tensor of a .safetensors head
# metadata values that are JSON (safetensors metadata is str -> str)
_JSON_METADATA = ("classes", "sources", "model", "options")


def save_head(head: Head, path: Path) -> Path:
    """The (D, C) tensor at `path` and `<path stem>.json` beside it; returns the sidecar's path.
    `.npy` is numpy's format, `.safetensors` safetensors' (tensor "weights" and our metadata),
    anything else (`.pt`) a plain `torch.save` of the tensor, as CLIP_benchmark's `--load_clfs`
    reads it."""
    if head.scorer is not None:
        raise PromptgenError(f"the {head.info.get('builder')} head re-ranks each image and has no single (D, C) "
                             "matrix to save", "evaluate it with `promptgen eval --build fudd:SET`, or save the "
                             "static variant (--builder fudd-static)")
    sidecar = path.with_suffix(".json")
    if path.suffix == ".json":
        raise PromptgenError(f"{path} would be overwritten by its own sidecar", "name the head FILE.pt")
    sidecar_text = json.dumps({**head.info, "file": path.name}, ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    weights = head.weights.detach().cpu()
    if path.suffix == ".npy":
        with open(temp, "wb") as handle:
            np.save(handle, weights.numpy(), allow_pickle=False)
    elif path.suffix == ".safetensors":
        from safetensors.torch import save

        # bytes written here rather than by save_file, which makes the file 0600 where .pt honours the umask
        data = save({SAFETENSORS_TENSOR: weights.float().contiguous()},
                    metadata=safetensors_metadata(head.info, sidecar_text))
        with open(temp, "wb") as handle:
            handle.write(data)
    else:
        torch.save(weights.contiguous().clone(), temp)
    temp.replace(path)
    atomic_write_text(sidecar, sidecar_text)
    return sidecar


def _sha256_text(text: str | bytes) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def safetensors_metadata(info: dict, sidecar_text: str) -> dict[str, str]:
    """What a .safetensors head says about itself; {} for a head that has no class list (then it
    is a bare tensor, as other tools write them)."""
    classes = info.get("classes") or {}
    if info.get("format") != HEAD_FORMAT or not isinstance(classes.get("names"), list):
        return {}
    values: dict[str, Any] = {
        "format": HEAD_FORMAT, "name": info.get("name"), "builder": info.get("builder"),
        "dataset": classes.get("dataset"), "classes": list(classes["names"]), "classes_hash": classes.get("hash"),
        "sources": info.get("sources"), "model": info.get("model"), "options": info.get("options"),
        "created": info.get("created"), "promptgen_version": info.get("promptgen_version"),
        "sidecar_sha256": _sha256_text(sidecar_text)}
    return {key: json.dumps(value, ensure_ascii=False) if key in _JSON_METADATA else str(value)
            for key, value in values.items() if value is not None}


def load_head(path: Path, classes: ClassList | None = None, embed_dim: int | None = None) -> Head:
    """A head written by `save_head`, or any (D, C) tensor in a `.pt`, `.npy` or `.safetensors`
    file. With `classes`, the class list the file or its sidecar records must match (mismatches
    are named); the shape must fit either way."""
    if not path.is_file():
        raise PromptgenError(f"head file {path} not found", "write one with `promptgen head`")
    if path.suffix == ".safetensors":
        weights, info = _read_safetensors(path)
    else:
        weights, info = _read_tensor(path), _sidecar_info(path)
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


def _read_tensor(path: Path) -> torch.Tensor:
    """A .npy or torch file's (D, C) tensor (a dict's "weights" entry counts)."""
    try:
        if path.suffix == ".npy":
            weights = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        import pickle

        # torch's own message for both invites weights_only=False, which would run the file's code
        if isinstance(exc, pickle.UnpicklingError) and "global" in str(exc).lower():
            raise PromptgenError(f"{path} holds pickled Python objects, not only tensors; promptgen does not load "
                                 "them, because unpickling can run any code the file carries",
                                 "save the head as a plain tensor (torch.save(W, FILE.pt)) or as "
                                 "FILE.safetensors") from None
        if isinstance(exc, pickle.UnpicklingError):
            raise PromptgenError(f"cannot read head {path}: torch's safe loader refuses it (a damaged file, or not "
                                 "one torch.save wrote)", "give a tensor saved with torch.save (.pt), numpy (.npy) "
                                 "or safetensors") from None
        raise PromptgenError(f"cannot read head {path}: {exc}".splitlines()[0],
                             "give a tensor saved with torch.save (.pt), numpy (.npy) or safetensors") from exc
    if isinstance(weights, dict) and "weights" in weights:
        weights = weights["weights"]
    _check_2d(path, weights)
    return weights


def _check_2d(path: Path, weights: Any) -> None:
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        held = f"a {weights.dim()}-D tensor {tuple(weights.shape)}" if isinstance(weights, torch.Tensor) else \
            f"a {type(weights).__name__}"
        raise PromptgenError(f"{path} holds {held}, not a 2-D tensor",
                             "a head is a (D, C) tensor: D = embedding size, one column per class")


def _sidecar_info(path: Path) -> dict:
    """Our sidecar's info with this file's name and path, or only those."""
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
    return info


def _read_safetensors(path: Path) -> tuple[torch.Tensor, dict]:
    """The head tensor of a .safetensors file and its info: from the sidecar when it is the one
    the file was written with, else from the file's own metadata, else (another tool's file)
    only the name, with a warning."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = sorted(handle.keys())
            metadata = dict(handle.metadata() or {})
            if SAFETENSORS_TENSOR in names:
                name = SAFETENSORS_TENSOR
            elif len(names) == 1:
                name = names[0]
            elif not names:
                raise PromptgenError(f"{path} holds no tensor", "a head is one (D, C) tensor named \"weights\"")
            else:
                shown = ", ".join(map(repr, names[:12])) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
                raise PromptgenError(f"{path} holds {len(names)} tensors ({shown}) and none is named "
                                     f"{SAFETENSORS_TENSOR!r}: which one is the head?",
                                     f"save the head alone, or name its tensor {SAFETENSORS_TENSOR!r}")
            weights = handle.get_tensor(name)
    except PromptgenError:
        raise
    except Exception as exc:  # safetensors' own errors: truncated, not safetensors at all, bad header
        raise PromptgenError(f"cannot read head {path} as safetensors: {exc}".splitlines()[0],
                             "give a file written by `promptgen head -o FILE.safetensors` or by "
                             "safetensors.torch.save_file (one (D, C) tensor)") from None
    _check_2d(path, weights)
    base = {"name": path.stem, "file": str(path)}
    if metadata.get("format") != HEAD_FORMAT:
        info = _sidecar_info(path)
        if "classes" not in info:
            log.warning("%s carries no promptgen metadata and has no sidecar: no class names or provenance; it "
                        "loads as a bare (D, C) head", path)
        return weights, info
    described = _metadata_info(path, metadata, tuple(weights.shape))
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        data = sidecar.read_bytes()
        if _sha256_text(data) == metadata.get("sidecar_sha256"):
            try:
                return weights, {**json.loads(data), **base, "sidecar_sha256": metadata["sidecar_sha256"]}
            except ValueError:
                pass  # the hash matched bytes that are not JSON: the metadata is all there is
        log.warning("%s is not the sidecar %s was written with (its sha256 differs from the one the file records); "
                    "using the file's own metadata", sidecar, path.name)
    return weights, described


def _metadata_info(path: Path, metadata: dict[str, str], shape: tuple[int, ...]) -> dict:
    """Head info from our safetensors metadata, in the sidecar's layout."""
    parsed: dict[str, Any] = {}
    for key in _JSON_METADATA:
        if key in metadata:
            try:
                parsed[key] = json.loads(metadata[key])
            except ValueError:
                raise PromptgenError(f"{path}: its metadata {key!r} is not JSON", "write the head again with "
                                     "`promptgen head -o FILE.safetensors`") from None
    names = parsed.get("classes")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PromptgenError(f"{path}: its metadata says {HEAD_FORMAT} but holds no list of class names",
                             "write the head again with `promptgen head -o FILE.safetensors`")
    if len(names) != shape[1]:
        raise PromptgenError(f"{path}: its metadata names {len(names)} classes, its tensor has {shape[1]} columns",
                             "write the head again with `promptgen head -o FILE.safetensors`")
    info: dict[str, Any] = {"format": HEAD_FORMAT, "name": path.stem, "builder": metadata.get("builder"),
                            "created": metadata.get("created"), "promptgen_version": metadata.get("promptgen_version"),
                            "shape": list(shape),
                            "classes": {"dataset": metadata.get("dataset"), "count": len(names),
                                        "hash": metadata.get("classes_hash"), "names": names}}
    info.update({key: parsed[key] for key in ("model", "sources", "options") if key in parsed})
    return {**info, "file": str(path), "sidecar_sha256": metadata.get("sidecar_sha256")}
