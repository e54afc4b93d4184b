"""Where images come from: ImageFolder trees, CSV lists, Debian's Fashion-MNIST (each an `ImageSet`),
and feature files written by other tools. `clip/encode.py` turns an ImageSet into features."""

from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from promptgen.classes import ClassList
from promptgen.clip.image_set import ImageSet
from promptgen.clip.image_set import label_lookup as _label_lookup
from promptgen.clip.image_set import loose_name as _loose
from promptgen.clip.image_sources import OPENERS as IMAGE_SOURCES
from promptgen.errors import PromptgenError
from promptgen.messages import shorten

__all__ = ["ImageSet", "ImageFeatures", "image_set_from_folder", "image_set_from_csv", "fashion_mnist",
           "open_image_set", "load_feature_file", "save_feature_file", "FASHION_MNIST_DIR", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
FASHION_MNIST_DIR = Path(os.environ.get("PROMPTGEN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


@dataclass
class ImageFeatures:
    features: torch.Tensor               # (N, D) float32, as the image tower gives them
    labels: torch.Tensor                 # (N,) int64; -1 where unknown
    meta: dict = field(default_factory=dict)

    @property
    def normalized(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.features.float(), dim=-1)


def _file_fingerprint(paths: list[Path], labels: list[int], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path, label in zip(paths, labels):
        try:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
        except OSError:
            digest.update(f"{path}|missing|{label}\n".encode())
    return digest.hexdigest()[:24]


def _pil_loader(paths: list[Path]) -> Callable[[int], Any]:
    def load(index: int) -> Any:
        from PIL import Image  # heavy: only decoding images needs PIL, not features from a file

        with Image.open(paths[index]) as image:
            return image.convert("RGB")
    return load


def image_set_from_folder(folder: Path, classes: ClassList) -> ImageSet:
    """ImageFolder layout: one sub-folder per class, named by class name (exact or ignoring case,
    spaces, _ and -), WordNet id, or label index."""
    lookup = _label_lookup(classes)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subfolders:
        raise PromptgenError(f"{folder} has no class sub-folders",
                             "use the ImageFolder layout DIR/<class name>/<image>, or a CSV of path,label")
    paths, labels, unknown = [], [], []
    for sub in subfolders:
        label = lookup.get(sub.name, lookup.get(_loose(sub.name)))
        if label is None and sub.name.isdigit() and int(sub.name) < len(classes):
            label = int(sub.name)
        if label is None:
            unknown.append(sub.name)
            continue
        for path in sorted(sub.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                paths.append(path)
                labels.append(label)
    if unknown:
        raise PromptgenError(f"{len(unknown)} sub-folders of {folder} are not classes of {classes.dataset}: "
                             f"{', '.join(map(repr, unknown[:10]))}",
                             "name each sub-folder after its class (name, WordNet id or label index)")
    if not paths:
        raise PromptgenError(f"no images under {folder}", f"image files end in {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return ImageSet(str(folder), [str(p) for p in paths], labels, _pil_loader(paths),
                    _file_fingerprint(paths, labels, "folder"),
                    {"source": "folder", "path": str(folder), "url": os.path.abspath(folder)})


def image_set_from_csv(path: Path, classes: ClassList) -> ImageSet:
    """A CSV of `path,label` rows (a header row is allowed); relative paths are read from the CSV's
    folder; a label is a class index, name or WordNet id."""
    lookup = _label_lookup(classes)
    paths, labels, bad = [], [], []
    with open(path, newline="", encoding="utf-8-sig") as handle:  # Excel writes a byte-order mark
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                bad.append(f"line {line_number}: {','.join(row)!r} has no label")
                continue
            file, label_text = row[0].strip(), row[1].strip()
            if line_number == 1 and file.lower() in ("path", "file", "filename", "image"):
                continue
            label = int(label_text) if label_text.isdigit() and int(label_text) < len(classes) else \
                lookup.get(label_text, lookup.get(_loose(label_text)))
            if label is None:
                bad.append(f"line {line_number}: unknown label {label_text!r}")
                continue
            image_path = Path(file) if Path(file).is_absolute() else path.parent / file
            paths.append(image_path)
            labels.append(label)
    if bad:
        raise PromptgenError(f"{len(bad)} rows of {path} cannot be used: {'; '.join(bad[:5])}",
                             f"each row is path,label with a label from 0 to {len(classes) - 1} or a class name")
    if not paths:
        raise PromptgenError(f"{path} lists no images", "write one path,label row per image")
    return ImageSet(str(path), [str(p) for p in paths], labels, _pil_loader(paths),
                    _file_fingerprint(paths, labels, "csv"),
                    {"source": "csv", "path": str(path), "url": os.path.abspath(path)})


def _read_idx(path: Path) -> np.ndarray:
    """The IDX format of (Fashion-)MNIST: magic (0, 0, type 0x08, ndim), big-endian dims, bytes."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise PromptgenError(f"{path} is not an IDX file of unsigned bytes", "use the dataset's original files")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise PromptgenError(f"{path} is truncated: {array.size} bytes for shape {shape}", "reinstall the dataset")
    return array.reshape(shape)


def fashion_mnist(classes: ClassList, split: str = "test", folder: Path | None = None) -> ImageSet:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` (70,000 28x28 grey images, 10 classes)."""
    folder = folder or FASHION_MNIST_DIR
    prefix = {"test": "t10k", "train": "train"}.get(split)
    if prefix is None:
        raise PromptgenError(f"Fashion-MNIST has no split {split!r}", "use fashion-mnist:test or fashion-mnist:train")
    image_file, label_file = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not image_file.is_file() or not label_file.is_file():
        raise PromptgenError(f"Fashion-MNIST files not found in {folder}",
                             "install them with `apt-get install dataset-fashion-mnist`, or point "
                             "PROMPTGEN_FASHION_MNIST at a folder holding the original .gz files")
    if len(classes) != 10:
        raise PromptgenError(f"Fashion-MNIST has 10 classes, {classes.dataset} has {len(classes)}",
                             "evaluate it as dataset fashion-mnist")
    images, labels = _read_idx(image_file), _read_idx(label_file)
    if len(images) != len(labels):
        raise PromptgenError(f"{image_file.name} holds {len(images)} images for {len(labels)} labels",
                             "reinstall the dataset")

    def load(index: int) -> Any:
        from PIL import Image

        return Image.fromarray(images[index], mode="L").convert("RGB")

    digest = hashlib.sha256()
    for path in (image_file, label_file):
        stat = path.stat()
        digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return ImageSet(f"fashion-mnist:{split}", [f"{split}/{i}" for i in range(len(labels))],
                    [int(x) for x in labels], load, digest.hexdigest()[:24],
                    {"source": "fashion-mnist", "split": split, "path": str(folder), "url": f"fashion-mnist:{split}"})


def open_image_set(spec: str, classes: ClassList) -> ImageSet:
    """`--images`: a folder (ImageFolder), a .csv file, `fashion-mnist[:test|train]`, or one of
    image_sources.py's: `wds:SHARDS`, `hf:PATH[:SPLIT][?image=COL&label=COL]`, `clip_benchmark:NAME:ROOT[:SPLIT]`."""
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in IMAGE_SOURCES:
        return IMAGE_SOURCES[prefix](rest, classes)
    path = Path(spec).expanduser()
    if path.is_dir():
        return image_set_from_folder(path, classes)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise PromptgenError(f"{path} is neither a folder nor a .csv list",
                                 "give an ImageFolder directory or a CSV of path,label (or --features FILE)")
        return image_set_from_csv(path, classes)
    name, _, split = spec.partition(":")
    if name == "fashion-mnist":
        return fashion_mnist(classes, split or "test")
    raise PromptgenError(f"--images {spec}: no such folder or file",
                         "give an ImageFolder directory, a CSV of path,label, fashion-mnist[:test|train], "
                         "wds:DIR/{0..9}.tar, hf:PATH[:SPLIT] or clip_benchmark:NAME:ROOT[:SPLIT]")


def load_feature_file(path: Path, classes: ClassList | None = None, embed_dim: int | None = None) -> ImageFeatures:
    """Precomputed features from another tool: `.npz` or torch `.pt` holding `features` (N, D) and
    `labels` (N,) (labels may be absent for unlabeled pools). Checked against the class count and
    the model's dimension."""
    if not path.is_file():
        raise PromptgenError(f"feature file {path} not found", "write features with `promptgen features` or numpy")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                content = {k: torch.from_numpy(data[k].copy()) for k in data.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PromptgenError(f"cannot read features {path}: {shorten(str(exc).splitlines()[0], 200)}",
                             "save a dict with `features` (N, D) and `labels` (N,) via numpy.savez or torch.save") from exc
    if isinstance(content, torch.Tensor):
        content = {"features": content}
    if not isinstance(content, dict) or "features" not in content:
        raise PromptgenError(f"{path} has no `features` array", "save `features` (N, D) and `labels` (N,)")
    features = torch.as_tensor(content["features"]).float()
    if features.dim() != 2:
        raise PromptgenError(f"`features` in {path} has shape {tuple(features.shape)}, not (N, D)",
                             "store one row per image")
    labels = content.get("labels")
    labels = torch.full((len(features),), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels).long()
    if labels.shape != (len(features),):
        raise PromptgenError(f"{path}: {len(features)} feature rows but labels of shape {tuple(labels.shape)}",
                             "give one integer label per row")
    if embed_dim is not None and features.shape[1] != embed_dim:
        raise PromptgenError(f"features in {path} have dimension {features.shape[1]}, the CLIP model "
                             f"{embed_dim}", "compute the features with the same model as the heads "
                                             "(--clip-model/--pretrained), or pick that model")
    if classes is not None and len(labels) and int(labels.max()) >= len(classes):
        raise PromptgenError(f"{path} has label {int(labels.max())}, but {classes.dataset} has {len(classes)} classes",
                             "labels are class indices from 0 to C-1 in the dataset's order")
    if not torch.isfinite(features).all():
        raise PromptgenError(f"{path} holds NaN or infinite features", "recompute the features")
    meta = {"images": str(path), "source": {"source": "features", "path": str(path)}, "count": len(features),
            "encoded": len(features), "skipped": 0, "from_cache": True}
    return ImageFeatures(features, labels, meta)


def save_feature_file(features: ImageFeatures, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save({"features": features.features, "labels": features.labels}, path)
    else:
        np.savez(path, features=features.features.numpy(), labels=features.labels.numpy())
