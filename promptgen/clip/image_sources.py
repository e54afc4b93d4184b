"""`--images` sources beyond folders and CSV lists:

- `wds:SHARDS`: webdataset shards in CLIP_benchmark's layout (`ROOT/test/{0..9}.tar`, `ROOT/classnames.txt`);
- `clip_benchmark:NAME:ROOT[:SPLIT]`: a CLIP_benchmark dataset whose files are already in ROOT;
- `hf:PATH[:SPLIT][?image=COL&label=COL]`: a Hugging Face dataset (`save_to_disk` folder) or parquet files.

Every `load(i)` may run in forked DataLoader workers: a file or dataset is opened on first use in each
process, never used through the parent's handle. Only per-image keys, labels and offsets are held; images
are read one at a time (from a tar offset, a memory-mapped Arrow table, or the dataset's own files).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
import threading
from array import array
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode

from promptgen.classes import ClassList
from promptgen.clip.image_set import ImageSet, check_class_names, label_lookup, loose_name, stat_digest
from promptgen.errors import PromptgenError

__all__ = ["OPENERS", "webdataset_shards", "clip_benchmark_dataset", "hf_dataset", "source_paths"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'promptgen[images]'"
WDS_IMAGE_SUFFIXES = ("webp", "png", "jpg", "jpeg")   # CLIP_benchmark's order when a sample has several


def _require(module: str, source: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PromptgenError(f"--images {source}: reading it needs the `{module.split('.')[0]}` package, which "
                             f"is not installed ({exc})", INSTALL) from exc


def _decode(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _natural(path: str) -> list:
    # CLIP_benchmark names shards 0.tar ... 10.tar: 10 comes after 9, not after 1
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _check_label(label: int, classes: ClassList, where: str) -> int:
    if not 0 <= label < len(classes):
        raise PromptgenError(f"{where}: label {label} is outside 0..{len(classes) - 1} ({classes.dataset} has "
                             f"{len(classes)} classes)",
                             "these images belong to another class list: evaluate them under that dataset, or "
                             "give their class list with --classes FILE")
    return label


# ------------------------------------------------------------------------------------------- wds:

def _expand_shards(pattern: str) -> tuple[list[str], str]:
    """Shard paths of `pattern` (braces, a glob, a single .tar or a folder of .tar files) and the
    pattern made absolute."""
    braceexpand = _require("braceexpand", f"wds:{pattern}").braceexpand
    absolute = os.path.abspath(os.path.expanduser(pattern))
    if os.path.isdir(absolute):
        shards = sorted(glob.glob(os.path.join(glob.escape(absolute), "*.tar")), key=_natural)
        return shards, os.path.join(absolute, "*.tar")
    shards, missing = [], []
    for item in braceexpand(absolute):
        if glob.has_magic(item):
            matches = sorted(glob.glob(item), key=_natural)
            if matches:
                shards.extend(matches)
            else:
                missing.append(item)
        elif os.path.isfile(item):
            shards.append(item)
        else:
            missing.append(item)
    if missing and shards:
        raise PromptgenError(f"wds:{pattern}: {len(missing)} shards not found, e.g. {missing[0]}",
                             "fix the pattern's range, or copy the missing shards")
    return list(dict.fromkeys(shards)), absolute


def _classnames_file(shards: list[str]) -> Path | None:
    # CLIP_benchmark keeps classnames.txt in the dataset folder, the parent of the split's folder of
    # shards (webdataset_builder.py: OUTPUT/classnames.txt, OUTPUT/SPLIT/N.tar); shards kept directly
    # in the dataset folder have it beside them
    folder = Path(shards[0]).parent
    for candidate in (folder / "classnames.txt", folder.parent / "classnames.txt"):
        if candidate.is_file():
            return candidate
    return None


class _ShardReader:
    """`load(i)`: the image bytes of sample i read at their offset in its shard, one descriptor per
    shard and process (pread keeps no file position; a forked worker opens its own)."""

    MAX_OPEN = 16

    def __init__(self, shards: list[str], shard_of: array, offsets: array, sizes: array) -> None:
        self.shards, self.shard_of, self.offsets, self.sizes = shards, shard_of, offsets, sizes
        self._start()

    def _start(self) -> None:
        self._pid, self._fds, self._lock = os.getpid(), {}, threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_pid", "_fds", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start()

    def _fd(self, shard: int) -> int:
        if shard not in self._fds:
            if len(self._fds) >= self.MAX_OPEN:  # samples come in index order: the oldest shard is done
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        return self._fds[shard]

    def __call__(self, index: int) -> Any:
        if self._pid != os.getpid():
            for fd in self._fds.values():  # the parent's, inherited through fork: this process's copies
                os.close(fd)
            self._start()              # and a fresh lock: the parent's may have been held at the fork
        shard, size = self.shard_of[index], self.sizes[index]
        # under the lock: another thread must not close (and the OS reuse) the descriptor mid-read
        with self._lock:
            data = os.pread(self._fd(shard), size, self.offsets[index])
        if len(data) != size:
            raise OSError(f"{self.shards[shard]} ends before sample {index}'s image: the shard changed after "
                          "it was indexed")
        return _decode(data)

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def _scan_shard(path: str, base_plus_ext: Callable) -> tuple[list[tuple[str, int, int, str | None]], list[str]]:
    """(key, image offset, image size, cls text or None) per sample with an image, and the keys of
    samples without one, from the tar headers: an uncompressed tar is read by seeking from header to
    header, and only the small cls members are read."""
    samples, without_image = [], []
    current: str | None = None
    members: dict[str, tarfile.TarInfo] = {}

    def close_sample() -> None:
        image = next((members[s] for s in WDS_IMAGE_SUFFIXES if s in members), None)
        if image is None:
            without_image.append(current)
            return
        label = None
        if "cls" in members:
            label = tar.extractfile(members["cls"]).read().decode("utf-8", "replace").strip()
        samples.append((current, image.offset_data, image.size, label))

    with open(path, "rb") as handle:
        try:
            tar = tarfile.open(fileobj=handle, mode="r:")
        except tarfile.ReadError as exc:
            raise PromptgenError(f"shard {path} is not an uncompressed tar file ({exc})",
                                 "images are read at their offsets in the shard: decompress .tar.gz shards "
                                 "(gunzip) or rewrite them with webdataset's TarWriter") from exc
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as exc:
                raise PromptgenError(f"shard {path} is damaged after {len(samples)} samples ({exc})",
                                     "rewrite or re-download the shard") from exc
            tar.members = []  # TarFile keeps every header it read: a 1M-member shard must not
            if member is None:
                break
            name = member.name
            if not member.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__")):
                continue  # webdataset's rule: only files, and no __meta__ members
            key, suffix = base_plus_ext(name)
            if key is None:
                continue
            if key != current:
                if current is not None:
                    close_sample()
                current, members = key, {}
            suffix = suffix.lower()
            if suffix in members:
                raise PromptgenError(f"shard {path}: sample {key} has two {suffix} members",
                                     "a webdataset sample holds each suffix once; rewrite the shard")
            members[suffix] = member
        if current is not None:
            close_sample()
    return samples, without_image


def webdataset_shards(pattern: str, classes: ClassList) -> ImageSet:
    """`wds:SHARDS`: samples are tar members sharing a key (webdataset's rule: the member path up to the
    first dot of its file name); the image is the webp, png, jpg or jpeg member, the label the cls member
    (an integer). A sample with no image is skipped and counted; one with an image but no cls is kept
    unlabelled (-1). classnames.txt (beside the shards or in their parent) must list the classes."""
    shards, absolute = _expand_shards(pattern)
    base_plus_ext = _require("webdataset.tariterators", f"wds:{pattern}").base_plus_ext
    if not shards:
        raise PromptgenError(f"wds:{pattern} matches no shard",
                             "give the shards as DIR/{0..9}.tar, a glob DIR/*.tar, one .tar file, or their folder")
    names_file = _classnames_file(shards)
    if names_file is not None:
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        check_class_names(names, classes, str(names_file))
    common = os.path.commonpath([os.path.dirname(s) for s in shards])
    keys: list[str] = []
    labels: list[int] = []
    shard_of, offsets, sizes = array("l"), array("q"), array("q")
    without_image: list[str] = []
    for number, shard in enumerate(shards):
        name = os.path.relpath(shard, common)
        found, skipped = _scan_shard(shard, base_plus_ext)
        without_image.extend(f"{name}:{key}" for key in skipped)
        for key, offset, size, label_text in found:
            where = f"shard {shard}, sample {key}"
            if label_text is None:
                label = -1
            else:
                try:
                    label = int(label_text)
                except ValueError:
                    raise PromptgenError(f"{where}: cls {label_text[:40]!r} is not an integer",
                                         "a cls member holds the class index as text, e.g. 3") from None
                _check_label(label, classes, where)
            keys.append(f"{name}:{key}")
            labels.append(label)
            shard_of.append(number)
            offsets.append(offset)
            sizes.append(size)
    if not keys:
        raise PromptgenError(f"the {len(shards)} shards of wds:{pattern} hold no image",
                             f"a sample's image is a member KEY.{{{','.join(WDS_IMAGE_SUFFIXES)}}}")
    unlabelled = labels.count(-1)
    if without_image or unlabelled:
        log.warning("wds:%s: %d samples without an image skipped, %d images without a cls label kept unlabelled",
                    pattern, len(without_image), unlabelled)
    extra = [f"{names_file}|{names_file.read_text(encoding='utf-8')}"] if names_file else []
    url = f"wds:{absolute}"
    return ImageSet(url, keys, labels, _ShardReader(shards, shard_of, offsets, sizes),
                    stat_digest("wds", shards, *extra),
                    {"source": "wds", "url": url, "path": absolute, "shards": len(shards),
                     "classnames": str(names_file) if names_file else None, "unlabelled": unlabelled,
                     "without_image": len(without_image), "without_image_samples": without_image[:20]})


# ------------------------------------------------------------------------------------------- clip_benchmark:

def _split_suffix(text: str) -> tuple[str, str | None]:
    """`PATH:SPLIT` -> (PATH, SPLIT) when the last part names no folder or file; else (text, None)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and tail and "/" not in tail and not os.path.exists(os.path.expanduser(text)):
        return head, tail
    return text, None


def _cb_not_found(name: str, root: str, split: str, reason: str) -> PromptgenError:
    return PromptgenError(
        f"clip_benchmark:{name}: the dataset's files were not found in {root} ({reason})",
        f"promptgen never downloads: fetch them once where there is network with python -c \"from "
        f"clip_benchmark.datasets.builder import build_dataset; build_dataset('{name}', root='{root}', "
        f"split='{split}', download=True)\" and copy {root} here")


def _cb_labels(dataset: Any) -> list[int]:
    """Labels without decoding an image where the dataset keeps them (torchvision: targets, samples,
    _labels, labels), unless a target_transform changes them; else from each item."""
    count = len(dataset)
    if getattr(dataset, "target_transform", None) is None:
        for attribute in ("targets", "_labels", "labels"):
            values = getattr(dataset, attribute, None)
            values = values.tolist() if hasattr(values, "tolist") else values   # tensors, arrays
            if values is not None and not isinstance(values, (str, dict)) and len(values) == count:
                return [int(v) for v in values]
        samples = getattr(dataset, "samples", None)   # ImageFolder: (path, class index)
        if isinstance(samples, list) and len(samples) == count and all(len(s) == 2 for s in samples[:1]):
            return [int(s[1]) for s in samples]
    return [int(dataset[i][1]) for i in range(count)]


def _walk_files(root: str) -> Iterator[str]:
    """Every file under root in a fixed order, one directory at a time (ROOT may hold an ImageNet)."""
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            yield os.path.join(folder, name)


def clip_benchmark_dataset(text: str, classes: ClassList) -> ImageSet:
    """`clip_benchmark:NAME:ROOT[:SPLIT]` (split test by default) through CLIP_benchmark's own
    build_dataset, always with download=False: only files already in ROOT are read."""
    name, _, rest = text.partition(":")
    root_text, split = _split_suffix(rest)
    split = split or "test"
    if not name or not root_text:
        raise PromptgenError(f"--images clip_benchmark:{text}: name the dataset and its folder",
                             "write clip_benchmark:NAME:ROOT[:SPLIT], e.g. clip_benchmark:cifar10:/data/cifar")
    root = os.path.abspath(os.path.expanduser(root_text))
    builder = _require("clip_benchmark.datasets.builder", f"clip_benchmark:{text}")
    if name.split("/")[0] in ("wds", "tfds", "vtab"):
        raise PromptgenError(f"clip_benchmark:{name} is read as a stream, without random access",
                             "give webdataset shards as --images wds:ROOT/test/{0..N}.tar instead" if
                             name.startswith("wds/") else "convert it to webdataset shards "
                             "(clip_benchmark_export_wds) and give --images wds:...")
    if builder.get_dataset_default_task(name) != "zeroshot_classification":
        raise PromptgenError(f"clip_benchmark:{name} is a retrieval or caption dataset, not a classification one",
                             "give a classification dataset such as cifar10, imagenet1k or mnist")
    # CLIP_benchmark fetches some datasets whatever download says (wget, gdown, kaggle) when ROOT, or
    # ImageNetV2's folder, is missing: those cases are refused here before its code runs
    v2 = Path(root) / "ImageNetV2-matched-frequency"
    if not os.path.isdir(root) or (name == "imagenetv2" and not (v2.is_dir() or v2.with_suffix(".tar.gz").is_file())):
        raise _cb_not_found(name, root, split, "no such folder" if not os.path.isdir(root) else f"no {v2.name}")
    try:
        dataset = builder.build_dataset(name, root=root, transform=None, split=split, download=False)
    except AssertionError as exc:       # their check of the split
        raise PromptgenError(f"clip_benchmark:{name}: {exc}", f"write clip_benchmark:{name}:ROOT:SPLIT") from exc
    except ValueError as exc:
        if "Unsupported dataset" in str(exc):
            raise PromptgenError(f"CLIP_benchmark has no dataset {name!r}",
                                 "use one of the names of `clip_benchmark eval --dataset`") from exc
        raise PromptgenError(f"clip_benchmark:{name}:{root}:{split}: {exc}",
                             "check the split's name and the files in ROOT") from exc
    except ImportError as exc:
        raise PromptgenError(f"clip_benchmark:{name} needs a package that is not installed: {exc}",
                             f"install {getattr(exc, 'name', None) or 'it'}") from exc
    except (RuntimeError, OSError) as exc:   # torchvision: "Dataset not found or corrupted"
        raise _cb_not_found(name, root, split, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise PromptgenError(f"clip_benchmark:{name} has no random access", "convert it to webdataset shards")
    check_class_names(list(dataset.classes), classes, f"clip_benchmark:{name}")
    labels = _cb_labels(dataset)
    for index, label in enumerate(labels):
        if label != -1:
            _check_label(label, classes, f"clip_benchmark:{name}:{split} item {index}")

    # torchvision's datasets hold no open file between items (each __getitem__ opens its own, or reads
    # arrays loaded at construction), which is why DataLoader workers fork them: the object is shared
    def load(index: int) -> Any:
        image = dataset[index][0]
        if not hasattr(image, "convert"):
            raise TypeError(f"clip_benchmark:{name} item {index} is a {type(image).__name__}, not an image")
        return image.convert("RGB")

    url = f"clip_benchmark:{name}:{root}:{split}"
    return ImageSet(url, [f"{split}/{i}" for i in range(len(labels))], labels, load,
                    stat_digest("clip_benchmark", _walk_files(root), name, split, ",".join(map(str, labels))),
                    {"source": "clip_benchmark", "url": url, "dataset": name, "path": root, "split": split})


# ------------------------------------------------------------------------------------------- hf:

def _hf_spec(text: str) -> tuple[str, str | None, str, str]:
    body, _, query = text.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"image", "label"})
    if unknown or any(not v for v in options.values()):
        raise PromptgenError(f"--images hf:{text}: options {', '.join(unknown) or 'without a value'}",
                             "the options are image=COLUMN and label=COLUMN, e.g. hf:PATH:test?image=img&label=fine_label")
    path, split = _split_suffix(body)
    if not path:
        raise PromptgenError(f"--images hf:{text}: no path", "write hf:PATH[:SPLIT], PATH a save_to_disk folder "
                             "or parquet files")
    return path, split, options.get("image", "image"), options.get("label", "label")


def _choose_split(splits: list[str], split: str | None, where: str) -> str:
    if split is not None:
        if split not in splits:
            raise PromptgenError(f"{where} has no split {split!r}; its splits: {', '.join(splits)}",
                                 f"write {where}:SPLIT with one of them")
        return split
    if "test" in splits:
        return "test"
    if len(splits) == 1:
        return splits[0]
    raise PromptgenError(f"{where} has the splits {', '.join(splits)} and none is `test`",
                         f"name one: {where}:{splits[0]}")


def _open_hf(kind: str, path: str | list[str], split: str | None) -> Any:
    """The split's Dataset: memory-mapped Arrow (parquet is converted once, into datasets' cache)."""
    import datasets

    if kind == "saved":
        saved = datasets.load_from_disk(path)
        return saved if split is None else saved[split]
    if kind == "parquet-folder":
        return datasets.load_dataset("parquet", data_dir=path, split=split)
    return datasets.Dataset.from_parquet(path)


def _hf_opener(path: str, split: str | None, where: str) -> tuple[Callable[[], Any], str | None, list[str]]:
    """A function opening the chosen split (memory-mapped Arrow; rerun in each process), the split's
    name, and the data files behind it."""
    datasets = _require("datasets", where)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "dataset_dict.json")):
            with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as handle:
                chosen = _choose_split(list(json.load(handle).get("splits", [])), split, where)
            return partial(_open_hf, "saved", path, chosen), chosen, _files_under(path, None)
        if os.path.isfile(os.path.join(path, "state.json")):
            if split is not None:
                raise PromptgenError(f"{where} is one saved Dataset, without splits", f"drop :{split}")
            return partial(_open_hf, "saved", path, None), None, _files_under(path, None)
        parquet = _files_under(path, ".parquet")
        if not parquet:
            raise PromptgenError(f"{where}: {path} is neither a save_to_disk folder nor a folder of parquet files",
                                 "save the dataset with Dataset.save_to_disk, or give parquet files")
        # datasets' own rule reads the split from the file names (data/test-00000-of-00001.parquet)
        splits = list(datasets.load_dataset_builder("parquet", data_dir=path).config.data_files)
        chosen = _choose_split(splits, split, where)
        return partial(_open_hf, "parquet-folder", path, chosen), chosen, parquet
    files = sorted(glob.glob(path), key=_natural) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
    if not files:
        raise PromptgenError(f"{where}: {path} matches no file or folder",
                             "give a save_to_disk folder, a parquet file, a folder of them, or a glob")
    if any(not f.endswith(".parquet") for f in files):
        raise PromptgenError(f"{where}: {next(f for f in files if not f.endswith('.parquet'))} is not a parquet file",
                             "give parquet files, or a save_to_disk folder")
    if split is not None:
        raise PromptgenError(f"{where}: parquet files named one by one have no splits",
                             f"drop :{split}, or give the folder whose file names carry the splits")
    return partial(_open_hf, "parquet-files", files, None), None, files


def _files_under(folder: str, suffix: str | None) -> list[str]:
    return [path for path in _walk_files(folder) if suffix is None or path.endswith(suffix)]


def _hf_labels(column: Any, feature: Any, classes: ClassList, where: str) -> list[int]:
    from datasets import ClassLabel, Value

    values = column.to_pylist()
    if isinstance(feature, ClassLabel):
        if feature.names != [str(i) for i in range(feature.num_classes)]:  # names of its own, not just 0..n-1
            check_class_names(feature.names, classes, where)
    elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        lookup = label_lookup(classes)
        mapped = [None if v is None else lookup.get(v, lookup.get(loose_name(v))) for v in values]
        unknown = list(dict.fromkeys(v for v, m in zip(values, mapped) if v is not None and m is None))
        if unknown:
            raise PromptgenError(f"{where}: {len(unknown)} label names are not classes of {classes.dataset}: "
                                 f"{', '.join(map(repr, unknown[:5]))}",
                                 "label names must be the class list's names (or WordNet ids)")
        return [-1 if m is None else m for m in mapped]
    elif not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
        raise PromptgenError(f"{where}: the label column is {feature}, not class indices or names",
                             "name another column with ?label=COLUMN")
    labels = [-1 if v is None else int(v) for v in values]
    for index, label in enumerate(labels):
        if label != -1:  # ClassLabel's "no label"
            _check_label(label, classes, f"{where} row {index}")
    return labels


def _image_kind(feature: Any, where: str, column: str) -> str:
    from datasets import Image, Value

    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, Value) and feature.dtype in ("binary", "large_binary"):
        return "bytes"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "path"
    if isinstance(feature, dict) and "bytes" in feature:
        return "image"
    raise PromptgenError(f"{where}: column {column!r} is {feature}, not images",
                         "name the image column with ?image=COLUMN (an Image feature, bytes or file paths)")


class _HFReader:
    """`load(i)`: row i's image bytes from the split, opened in each process (a memory-mapped Arrow
    table, so memory stays bounded); decoded here, never by datasets for the whole column."""

    def __init__(self, opener: Callable[[], Any], column: str, kind: str, folder: str) -> None:
        self.opener, self.column, self.kind, self.folder = opener, column, kind, folder
        self._pid: int | None = None
        self._rows: Any = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_rows": None}

    def rows(self) -> Any:
        if self._pid != os.getpid():
            from datasets import Image

            rows = self.opener().select_columns([self.column])
            if self.kind == "image":
                rows = rows.cast_column(self.column, Image(decode=False))
            self._rows, self._pid = rows, os.getpid()
        return self._rows

    def __call__(self, index: int) -> Any:
        value = self.rows()[index][self.column]
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            path = value if os.path.isabs(value) or os.path.exists(value) else os.path.join(self.folder, value)
            with open(path, "rb") as handle:
                value = handle.read()
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError(f"row {index} has no image ({type(value).__name__})")
        return _decode(bytes(value))


def hf_dataset(text: str, classes: ClassList) -> ImageSet:
    """`hf:PATH[:SPLIT][?image=COL&label=COL]`: a save_to_disk folder (DatasetDict or Dataset), a folder
    of parquet files (splits from their names), a parquet file or a glob of them. A DatasetDict's split
    is `test` when there is one, else its only split."""
    path_text, split, image_column, label_column = _hf_spec(text)
    path = os.path.abspath(os.path.expanduser(path_text))
    opener, chosen, files = _hf_opener(path, split, f"hf:{path_text}")
    where = f"hf:{path_text}" + (f":{chosen}" if chosen else "")
    dataset = opener()
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise PromptgenError(f"{where} has no column {' or '.join(map(repr, missing))}; its columns: "
                             f"{', '.join(dataset.column_names)}",
                             "name the columns: hf:PATH[:SPLIT]?image=COLUMN&label=COLUMN")
    kind = _image_kind(dataset.features[image_column], where, image_column)
    labels = _hf_labels(dataset.with_format("arrow")[label_column], dataset.features[label_column], classes, where)
    if not labels:
        raise PromptgenError(f"{where} has no rows", "give a split with images")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    query = {k: v for k, v in (("image", image_column), ("label", label_column)) if v != k}
    url = f"hf:{path}" + (f":{chosen}" if chosen else "") + (f"?{urlencode(query)}" if query else "")
    prefix = f"{chosen}/" if chosen else ""
    return ImageSet(url, [f"{prefix}{i}" for i in range(len(labels))], labels,
                    _HFReader(opener, image_column, kind, folder),
                    stat_digest("hf", files, url, getattr(dataset, "_fingerprint", "") or "", classes.hash),
                    {"source": "hf", "url": url, "path": path, "split": chosen, "image_column": image_column,
                     "label_column": label_column, "unlabelled": labels.count(-1)})


OPENERS: dict[str, Callable[[str, ClassList], ImageSet]] = {
    "wds": webdataset_shards, "clip_benchmark": clip_benchmark_dataset, "hf": hf_dataset}


def source_paths(spec: str) -> list[str] | None:
    """The files and folders an `--images` spec of this module reads (a pipeline keys its step by their
    content), or None when the spec is not one of them. Nothing is opened or checked here."""
    prefix, colon, rest = spec.partition(":")
    if not colon or prefix not in OPENERS:
        return None
    if prefix == "wds":
        try:
            shards, _ = _expand_shards(rest)
        except PromptgenError:
            return []
        classnames = _classnames_file(shards) if shards else None
        return shards + ([str(classnames)] if classnames else [])
    if prefix == "hf":
        return [_split_suffix(rest.partition("?")[0])[0]]
    return [_split_suffix(rest.partition(":")[2])[0]]   # clip_benchmark:NAME:ROOT[:SPLIT]
