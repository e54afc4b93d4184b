"""Image features from an ImageSet: decoding and preprocessing in DataLoader workers, the image tower in
the main process, and the features cached part by part under `cache/features/<model key>/<run key>/`.

A part is a fixed range of PART_IMAGES images. Each finished part is written to the cache at once, so an
interrupted run resumes from the parts already there, a `--limit` run reuses the full run's parts, and a
features file of a million images is written part by part without holding them all. Every forward pass
has exactly `batch_size` rows (a short batch is padded): an image's features then do not depend on which
images share its batch, so every source, worker count and part layout gives the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from promptgen.clip.images import ImageFeatures, ImageSet
from promptgen.clip.models import ClipModel, check_device
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text, canonical_json, sha256_file
from promptgen.messages import shorten

__all__ = ["encode_images", "write_features", "PRECISIONS", "PART_IMAGES"]

log = logging.getLogger(__name__)

PART_IMAGES = 4096
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
SKIPPED_LISTED = 1000  # the skipped images named in results; all of them are counted


@dataclass
class _Part:
    index: int
    start: int
    stop: int
    array_path: Path
    meta_path: Path


class _Decoded(torch.utils.data.Dataset):
    """One image per index: its preprocessed tensor, or the error that kept it out."""

    def __init__(self, image_set: ImageSet, preprocess: Any) -> None:
        self.image_set, self.preprocess = image_set, preprocess

    def __len__(self) -> int:
        return len(self.image_set)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.preprocess(self.image_set.load(index)), None
        except Exception as exc:  # a broken file must not stop the run: it is counted and listed
            return index, None, shorten(f"{type(exc).__name__}: {exc}", 200)


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> dict:
    kept = [(row, tensor) for row, tensor, _ in items if tensor is not None]
    return {"rows": torch.tensor([row for row, _ in kept], dtype=torch.long),
            "images": torch.stack([tensor for _, tensor in kept]) if kept else None,
            "skipped": [(row, error) for row, tensor, error in items if tensor is None],
            "count": len(items)}


def _one_thread_per_worker(_: int) -> None:
    # the main process runs the model on every core; decoding workers must not each claim them all too
    torch.set_num_threads(1)


def _run_key(clip: ClipModel, image_set: ImageSet, precision: str) -> str:
    return hashlib.sha256(canonical_json({"set": image_set.fingerprint, "preprocess": repr(clip.preprocess),
                                          "precision": precision, "part_images": PART_IMAGES}).encode()).hexdigest()[:24]


def _plan(folder: Path, count: int) -> list[_Part]:
    parts = []
    for index, start in enumerate(range(0, count, PART_IMAGES)):
        stop = min(start + PART_IMAGES, count)
        stem = f"part-{start:09d}-{stop:09d}"
        parts.append(_Part(index, start, stop, folder / f"{stem}.npz", folder / f"{stem}.json"))
    return parts


def _read_part(part: _Part) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """A cached part (features, rows, meta), or None when it is absent or damaged (then it is removed)."""
    if not (part.array_path.is_file() and part.meta_path.is_file()):
        return None
    try:
        meta = json.loads(part.meta_path.read_text(encoding="utf-8"))
        if sha256_file(part.array_path) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        with np.load(part.array_path, allow_pickle=False) as data:
            return data["features"], data["rows"], meta
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cached image features %s are damaged (%s): encoding those images again", part.array_path, exc)
        part.array_path.unlink(missing_ok=True)
        part.meta_path.unlink(missing_ok=True)
        return None


def _write_part(part: _Part, features: np.ndarray, rows: np.ndarray, skipped: list[dict]) -> None:
    part.array_path.parent.mkdir(parents=True, exist_ok=True)
    temp = part.array_path.with_name(f".{part.array_path.stem}.{os.getpid()}.npz")
    np.savez(temp, features=features, rows=rows)
    os.replace(temp, part.array_path)
    atomic_write_text(part.meta_path, json.dumps({"start": part.start, "stop": part.stop, "encoded": int(len(rows)),
                                                  "skipped": skipped, "sha256": sha256_file(part.array_path)},
                                                 ensure_ascii=False) + "\n")


def _autocast(clip: ClipModel, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(clip.device).type, dtype=dtype)


def _encode_missing(clip: ClipModel, image_set: ImageSet, parts: list[_Part], *, batch_size: int, workers: int,
                    precision: str, progress: tqdm | None) -> None:
    """Decode the parts' images in `workers` processes and run the tower here, one part file at a time."""
    batches = [list(range(start, min(start + batch_size, part.stop)))
               for part in parts for start in range(part.start, part.stop, batch_size)]
    cuda = torch.device(clip.device).type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Decoded(image_set, clip.preprocess), batch_sampler=batches, num_workers=workers, collate_fn=_collate,
        pin_memory=cuda, worker_init_fn=_one_thread_per_worker if workers else None,
        prefetch_factor=4 if workers else None)
    part_iter = iter(parts)
    part = next(part_iter)
    features: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    skipped: list[dict] = []
    done = part.start
    with torch.inference_mode(), _autocast(clip, precision):
        for batch in loader:
            if batch["images"] is not None:
                images = batch["images"].to(clip.device, non_blocking=cuda)
                real = len(images)
                if real < batch_size:  # same shape for every pass: see the module docstring
                    images = torch.cat([images, images.new_zeros((batch_size - real, *images.shape[1:]))])
                out = clip.model.encode_image(images)[:real]
                features.append(out.float().cpu().numpy())
                rows.append(batch["rows"].numpy())
            skipped += [{"image": image_set.keys[row], "row": row, "error": error} for row, error in batch["skipped"]]
            done += batch["count"]
            if progress is not None:
                progress.update(batch["count"])
            if done == part.stop:
                _write_part(part, np.concatenate(features) if features else np.empty((0, clip.embed_dim), np.float32),
                            np.concatenate(rows) if rows else np.empty(0, np.int64), skipped)
                features, rows, skipped = [], [], []
                part = next(part_iter, None)
                done = part.start if part else done


@dataclass
class _Encoded:
    parts: list[_Part]
    metas: list[dict]
    meta: dict


def _encode_parts(clip: ClipModel, image_set: ImageSet, cache_dir: Path, *, batch_size: int, limit: int | None,
                  workers: int, precision: str, show_progress: bool) -> _Encoded:
    if precision not in PRECISIONS:
        raise PromptgenError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if workers < 0:
        raise PromptgenError(f"--workers {workers}", "give 0 (decode in this process) or more worker processes")
    check_device(str(clip.device))
    count = min(len(image_set), limit) if limit else len(image_set)
    folder = cache_dir / "features" / clip.key / _run_key(clip, image_set, precision)
    parts = _plan(folder, count)
    missing = [part for part in parts if _read_part(part) is None]
    cached_images = count - sum(part.stop - part.start for part in missing)
    progress = None
    if show_progress and missing and count > batch_size:
        progress = tqdm(total=count, initial=cached_images, desc="encoding images", unit="img", unit_scale=True,
                        leave=False, dynamic_ncols=True)
    try:
        if missing:
            _encode_missing(clip, image_set, missing, batch_size=batch_size, workers=workers, precision=precision,
                            progress=progress)
    finally:
        if progress is not None:
            progress.close()
    metas = []
    for part in parts:
        meta_data = json.loads(part.meta_path.read_text(encoding="utf-8"))
        metas.append(meta_data)
    encoded = sum(m["encoded"] for m in metas)
    skipped = [s for m in metas for s in m["skipped"]]
    if count and not encoded:
        raise PromptgenError(f"none of the {count} images of {image_set.name} could be decoded",
                             f"first error: {skipped[0]['error']} ({skipped[0]['image']})")
    if skipped:
        log.warning("%d of %d images could not be decoded and were skipped (first: %s)", len(skipped), count,
                    skipped[0]["image"])
    meta = {"images": image_set.name, "source": image_set.meta, "count": count, "encoded": encoded,
            "skipped": len(skipped), "skipped_images": skipped[:SKIPPED_LISTED], "model": clip.describe(),
            "precision": precision, "from_cache": not missing,
            "parts": {"total": len(parts), "cached": len(parts) - len(missing), "encoded": len(missing)}}
    return _Encoded(parts, metas, meta)


def _part_arrays(encoded: _Encoded, image_set: ImageSet) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) of each part in order, one part in memory at a time."""
    for part in encoded.parts:
        with np.load(part.array_path, allow_pickle=False) as data:
            features, rows = data["features"], data["rows"]
        yield features, np.asarray([image_set.labels[int(row)] for row in rows], dtype=np.int64)


def encode_images(clip: ClipModel, image_set: ImageSet, cache_dir: Path | None = None, *, batch_size: int = 64,
                  limit: int | None = None, show_progress: bool = True, workers: int = 0,
                  precision: str = "fp32") -> ImageFeatures:
    """Image features (float32) of every image that decodes; the others are skipped, counted and listed.
    Cached part by part, keyed by the model, the image listing (sizes, times, labels), the preprocessing
    and the precision; without `cache_dir` the parts live in a temporary folder."""
    with _cache_or_temp(cache_dir) as folder:
        encoded = _encode_parts(clip, image_set, folder, batch_size=batch_size, limit=limit, workers=workers,
                                precision=precision, show_progress=show_progress)
        features = np.empty((encoded.meta["encoded"], clip.embed_dim), dtype=np.float32)
        labels = np.empty(encoded.meta["encoded"], dtype=np.int64)
        filled = 0
        for part_features, part_labels in _part_arrays(encoded, image_set):
            features[filled:filled + len(part_features)] = part_features
            labels[filled:filled + len(part_labels)] = part_labels
            filled += len(part_features)
    return ImageFeatures(torch.from_numpy(features), torch.from_numpy(labels), encoded.meta)


def write_features(clip: ClipModel, image_set: ImageSet, output: Path, cache_dir: Path | None = None, *,
                   batch_size: int = 64, limit: int | None = None, show_progress: bool = True, workers: int = 0,
                   precision: str = "fp32") -> dict:
    """Encode (through the part cache) and write `output` (.npz or .pt: `features` (N, D) float32 and
    `labels` (N,)), copying one part at a time so a large set never needs all its features in memory.
    Returns the run's meta."""
    if output.suffix not in (".npz", ".pt"):
        raise PromptgenError(f"{output}: features are written as .npz or .pt", "name the output FILE.npz or FILE.pt")
    with _cache_or_temp(cache_dir) as folder:
        encoded = _encode_parts(clip, image_set, folder, batch_size=batch_size, limit=limit, workers=workers,
                                precision=precision, show_progress=show_progress)
        output.parent.mkdir(parents=True, exist_ok=True)
        temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            shape = (encoded.meta["encoded"], clip.embed_dim)
            if output.suffix == ".npz":
                _stream_npz(temp, shape, _part_arrays(encoded, image_set))
            else:
                _stream_pt(temp, shape, _part_arrays(encoded, image_set))
            os.replace(temp, output)
        finally:
            temp.unlink(missing_ok=True)
    return encoded.meta


def _stream_npz(path: Path, shape: tuple[int, int], parts: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
    """What np.savez writes (`features.npy`, `labels.npy` in a stored zip), with the features copied in
    part by part; the labels (8 bytes an image) are gathered meanwhile and written after."""
    labels = np.empty(shape[0], dtype=np.int64)
    filled = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array_header_2_0(entry, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                         "fortran_order": False, "shape": shape})
            for features, part_labels in parts:
                entry.write(np.ascontiguousarray(features, dtype="<f4").tobytes())
                labels[filled:filled + len(part_labels)] = part_labels
                filled += len(part_labels)
        with archive.open("labels.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, labels, allow_pickle=False)


def _stream_pt(path: Path, shape: tuple[int, int], parts: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
    """torch.save of a tensor backed by a memory-mapped scratch file, filled part by part: the pages are
    the file's, so the process never holds the whole array in its own memory."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".features-") as scratch:
        features = np.lib.format.open_memmap(Path(scratch) / "features.npy", mode="w+", dtype=np.float32,
                                             shape=shape)
        labels = np.empty(shape[0], dtype=np.int64)
        filled = 0
        for part_features, part_labels in parts:
            features[filled:filled + len(part_features)] = part_features
            labels[filled:filled + len(part_labels)] = part_labels
            filled += len(part_features)
        features.flush()
        torch.save({"features": torch.from_numpy(features), "labels": torch.from_numpy(labels)}, path)
        del features


@contextlib.contextmanager
def _cache_or_temp(cache_dir: Path | None) -> Iterator[Path]:
    if cache_dir is not None:
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="promptgen-features-") as folder:
        yield Path(folder)
