"""The --images sources of promptgen/clip/image_sources.py: webdataset shards, CLIP_benchmark datasets
from a local root, Hugging Face datasets (save_to_disk, parquet). The same generated images written in
each form must come back with the same labels and the same pixels as from an ImageFolder tree."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from promptgen.classes import ClassList, load_dataset
from promptgen.clip.images import open_image_set
from promptgen.errors import PromptgenError
from tests.conftest import TINY_ARGS, run_cli

CLASSES = ClassList("toys", ("blue ball", "red car", "teddy bear"))
# 12 images, 4 per class, in the folder source's order (class folder, then file name)
ITEMS: list[tuple[str, int]] = [(f"img{i:02d}", i // 4) for i in range(12)]


def _png_bytes(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    height, width = 12 + seed % 5, 16 + seed % 3      # sizes differ: nothing may assume one shape
    mode = ("RGB", "L", "RGBA")[seed % 3]              # each must come back as RGB
    channels = {"RGB": (3,), "L": (), "RGBA": (4,)}[mode]
    array = rng.integers(0, 256, (height, width, *channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


PNGS = [_png_bytes(seed) for seed in range(len(ITEMS))]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_folder(folder: Path) -> Path:
    for (stem, label), data in zip(ITEMS, PNGS):
        (folder / CLASSES.names[label]).mkdir(parents=True, exist_ok=True)
        (folder / CLASSES.names[label] / f"{stem}.png").write_bytes(data)
    return folder


def write_shards(root: Path, shards: int = 3, classnames: list[str] | None = list(CLASSES.names),
                 members: dict[int, list[tuple[str, bytes]]] | None = None) -> Path:
    """CLIP_benchmark's layout: ROOT/test/{0..shards-1}.tar, ROOT/classnames.txt. `members` replaces
    the members of some samples (by item index)."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(ITEMS) // shards)
    for number in range(shards):
        with tarfile.open(root / "test" / f"{number}.tar", "w") as tar:
            for index in range(number * per_shard, min(len(ITEMS), (number + 1) * per_shard)):
                stem, label = ITEMS[index]
                default = [(f"{stem}.png", PNGS[index]), (f"{stem}.cls", str(label).encode())]
                for name, data in (members or {}).get(index, default):
                    _add(tar, name, data)
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    return root


def _hf_dataset(image_column: str = "image", label_column: str = "label", label_feature=None):
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({image_column: Image(), label_column: label_feature or ClassLabel(names=list(CLASSES.names))})
    return Dataset.from_dict({image_column: [{"bytes": data, "path": f"{stem}.png"} for (stem, _), data in
                                             zip(ITEMS, PNGS)],
                              label_column: [label for _, label in ITEMS]}, features=features)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """datasets converts parquet into Arrow files in its cache: the test's own, not the user's."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def write_saved(folder: Path, **kwargs) -> Path:
    from datasets import DatasetDict

    dataset = _hf_dataset(**kwargs)
    DatasetDict({"train": dataset.select(range(3)), "test": dataset}).save_to_disk(str(folder))
    return folder


def write_parquet(folder: Path, **kwargs) -> Path:
    """Two files named as the Hub names them, so that datasets reads the split from their names."""
    dataset = _hf_dataset(**kwargs)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dataset.select(range(7)).to_parquet(str(folder / "data" / "test-00000-of-00002.parquet"))
    dataset.select(range(7, len(ITEMS))).to_parquet(str(folder / "data" / "test-00001-of-00002.parquet"))
    return folder


def pixels(image_set) -> list[np.ndarray]:
    return [np.asarray(image_set.load(i)) for i in range(len(image_set))]


# ---------------------------------------------------------------------------------------------- same images

@pytest.mark.parametrize("form", ["wds-braces", "wds-glob", "wds-folder", "hf-saved", "hf-parquet-folder",
                                  "hf-parquet-glob"])
def test_every_source_gives_the_folders_labels_and_pixels(tmp_path, form, hf_cache):
    folder = open_image_set(str(write_folder(tmp_path / "folder")), CLASSES)
    expected = pixels(folder)
    assert all(a.ndim == 3 and a.shape[2] == 3 for a in expected)
    if form.startswith("wds"):
        root = write_shards(tmp_path / "shards")
        spec = {"wds-braces": f"wds:{root}/test/{{0..2}}.tar", "wds-glob": f"wds:{root}/test/*.tar",
                "wds-folder": f"wds:{root}/test"}[form]
    elif form == "hf-saved":
        spec = f"hf:{write_saved(tmp_path / 'saved')}"
    elif form == "hf-parquet-folder":
        spec = f"hf:{write_parquet(tmp_path / 'pq')}"
    else:
        spec = f"hf:{write_parquet(tmp_path / 'pq')}/data/*.parquet"
    image_set = open_image_set(spec, CLASSES)
    assert len(image_set) == len(folder) == 12
    assert image_set.labels == folder.labels == [label for _, label in ITEMS]
    if form.startswith("wds"):   # keys name the shard and the sample
        assert [k.split(":")[1] for k in image_set.keys] == [Path(k).stem for k in folder.keys]
        assert image_set.keys[0] == "0.tar:img00" and image_set.keys[-1] == "2.tar:img11"
    got = pixels(image_set)
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == b.dtype and a.shape == b.shape, index
        assert np.array_equal(a, b), index
    assert image_set.meta["url"].split(":", 1)[0] == form.split("-")[0]
    assert os.path.isabs(image_set.meta["url"].split(":", 1)[1])


def test_folder_and_csv_record_absolute_urls(tmp_path, monkeypatch):
    write_folder(tmp_path / "folder")
    (tmp_path / "list.csv").write_text("folder/blue ball/img00.png,0\n")
    monkeypatch.chdir(tmp_path)
    assert open_image_set("folder", CLASSES).meta["url"] == str(tmp_path / "folder")
    assert open_image_set("list.csv", CLASSES).meta["url"] == str(tmp_path / "list.csv")


def test_fashion_mnist_records_its_url(tmp_path):
    from promptgen.clip.images import fashion_mnist
    from tests.test_clip_eval import _write_idx

    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]))
    assert fashion_mnist(load_dataset("fashion-mnist"), "test", tmp_path).meta["url"] == "fashion-mnist:test"


def test_source_urls_are_canonical_and_absolute(tmp_path, monkeypatch, hf_cache):
    write_folder(tmp_path / "folder")
    write_shards(tmp_path / "shards")
    write_saved(tmp_path / "saved")
    monkeypatch.chdir(tmp_path)
    assert open_image_set("wds:shards/test/{0..2}.tar", CLASSES).meta["url"] == f"wds:{tmp_path}/shards/test/{{0..2}}.tar"
    assert open_image_set("wds:shards/test", CLASSES).meta["url"] == f"wds:{tmp_path}/shards/test/*.tar"
    saved = open_image_set("hf:saved", CLASSES)
    assert saved.meta["url"] == f"hf:{tmp_path}/saved:test" and saved.meta["split"] == "test"
    assert open_image_set("hf:saved:train", CLASSES).meta["url"] == f"hf:{tmp_path}/saved:train"
    assert len(open_image_set("hf:saved:train", CLASSES)) == 3
    (tmp_path / "folder").rename(tmp_path / "hf")        # a prefix without its colon is a folder's name
    assert open_image_set("hf", CLASSES).meta["source"] == "folder"


def test_renamed_columns_and_string_labels(tmp_path, hf_cache):
    from datasets import Value

    # labels as class names (any case, _ for spaces), columns named as CIFAR-100's on the Hub
    dataset = _hf_dataset("img", "fine_label", Value("int64")).cast_column("fine_label", Value("string"))
    names = ["Blue_Ball", "red car", "TEDDY BEAR"]
    dataset = dataset.map(lambda row: {"fine_label": names[int(row["fine_label"])]})
    dataset.to_parquet(str(tmp_path / "named.parquet"))
    image_set = open_image_set(f"hf:{tmp_path}/named.parquet?image=img&label=fine_label", CLASSES)
    assert image_set.labels == [label for _, label in ITEMS]
    assert image_set.meta["url"] == f"hf:{tmp_path}/named.parquet?image=img&label=fine_label"
    assert np.array_equal(np.asarray(image_set.load(5)), np.asarray(open_image_set(
        str(write_folder(tmp_path / "folder")), CLASSES).load(5)))

    # without naming them: the error lists the columns there are
    with pytest.raises(PromptgenError, match=r"no column 'image' or 'label'; its columns: img, fine_label") as info:
        open_image_set(f"hf:{tmp_path}/named.parquet", CLASSES)
    assert "?image=COLUMN&label=COLUMN" in info.value.hint
    with pytest.raises(PromptgenError, match=r"no column 'label'"):
        open_image_set(f"hf:{tmp_path}/named.parquet?image=img", CLASSES)
    with pytest.raises(PromptgenError, match="options colour"):
        open_image_set(f"hf:{tmp_path}/named.parquet?colour=img", CLASSES)

    # a name that is no class: a few are listed
    dataset.map(lambda row, i: {"fine_label": "zebra" if i % 2 else row["fine_label"]}, with_indices=True) \
        .to_parquet(str(tmp_path / "zebra.parquet"))
    with pytest.raises(PromptgenError, match=r"1 label names are not classes of toys: 'zebra'"):
        open_image_set(f"hf:{tmp_path}/zebra.parquet?image=img&label=fine_label", CLASSES)


# ---------------------------------------------------------------------------------------------- wds details

def test_classnames_txt_is_compared_loosely_and_a_different_list_named(tmp_path):
    root = write_shards(tmp_path / "a", classnames=["Blue_Ball", "red-car", "Teddy Bear"])
    assert open_image_set(f"wds:{root}/test/*.tar", CLASSES).meta["classnames"] == str(root / "classnames.txt")
    root = write_shards(tmp_path / "b", classnames=["blue ball", "teddy bear", "red car"])
    with pytest.raises(PromptgenError, match="same names in another order") as info:
        open_image_set(f"wds:{root}/test/*.tar", CLASSES)
    assert str(root / "classnames.txt") in info.value.message and "--classes" in info.value.hint
    root = write_shards(tmp_path / "c", classnames=["blue ball", "red car", "teddy bear", "kite"])
    with pytest.raises(PromptgenError, match=r"4 classes instead of 3; unknown 'kite'"):
        open_image_set(f"wds:{root}/test/*.tar", CLASSES)
    # beside the shards (no split folder) counts too; without one, only the label range is checked
    root = write_shards(tmp_path / "d", classnames=None)
    (root / "test" / "classnames.txt").write_text("kite\n")
    with pytest.raises(PromptgenError, match="unknown 'kite'"):
        open_image_set(f"wds:{root}/test/0.tar", CLASSES)
    root = write_shards(tmp_path / "e", classnames=None)
    assert open_image_set(f"wds:{root}/test/0.tar", CLASSES).meta["classnames"] is None


def test_label_outside_the_class_list_names_shard_key_and_count(tmp_path):
    root = write_shards(tmp_path / "s", members={5: [("img05.png", PNGS[5]), ("img05.cls", b"7\n")]})
    with pytest.raises(PromptgenError) as info:
        open_image_set(f"wds:{root}/test/{{0..2}}.tar", CLASSES)
    assert str(root / "test" / "1.tar") in info.value.message and "sample img05" in info.value.message
    assert "label 7 is outside 0..2 (toys has 3 classes)" in info.value.message
    root = write_shards(tmp_path / "t", members={0: [("img00.png", PNGS[0]), ("img00.cls", b"cat")]})
    with pytest.raises(PromptgenError, match="cls 'cat' is not an integer"):
        open_image_set(f"wds:{root}/test/*.tar", CLASSES)


def test_corrupt_image_in_a_shard_fails_alone(tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes()
    root = write_shards(tmp_path / "s", members={4: [("img04.jpg", noise), ("img04.cls", b"1")],
                                                  6: [("img06.png", PNGS[6][: len(PNGS[6]) // 2]), ("img06.cls", b"1")]})
    image_set = open_image_set(f"wds:{root}/test/*.tar", CLASSES)
    assert len(image_set) == 12
    for index in range(12):
        if index in (4, 6):
            with pytest.raises(Exception):
                image_set.load(index)
        else:
            assert np.array_equal(np.asarray(image_set.load(index)),
                                  np.asarray(open_image_set(str(write_folder(tmp_path / "f")), CLASSES).load(index)))


def test_samples_without_image_are_skipped_and_without_cls_unlabelled(tmp_path):
    root = write_shards(tmp_path / "s", members={
        1: [("img01.cls", b"0"), ("img01.json", b"{}")],                      # no image: skipped, counted
        2: [("img02.seg.png", PNGS[2]), ("img02.cls", b"0")],                 # suffix seg.png is no image
        3: [("img03.PNG", PNGS[3])],                                          # no cls: unlabelled
        8: [("sub/img08.webp", PNGS[8]), ("sub/img08.png", PNGS[0]), ("sub/img08.cls", b"2"),
            ("__meta__", b"x")],                                              # webp first, as CLIP_benchmark
    })
    image_set = open_image_set(f"wds:{root}/test/*.tar", CLASSES)
    assert image_set.meta["without_image"] == 2
    assert image_set.meta["without_image_samples"] == ["0.tar:img01", "0.tar:img02"]
    assert image_set.meta["unlabelled"] == 1
    keys = [k.split(":")[1] for k in image_set.keys]
    assert "img01" not in keys and "img02" not in keys and "sub/img08" in keys
    assert image_set.labels[keys.index("img03")] == -1
    assert np.array_equal(np.asarray(image_set.load(keys.index("sub/img08"))),
                          np.asarray(open_image_set(str(write_folder(tmp_path / "f")), CLASSES).load(8)))


def test_shard_specs_that_match_nothing(tmp_path):
    root = write_shards(tmp_path / "s")
    with pytest.raises(PromptgenError, match=r"matches no shard") as info:
        open_image_set(f"wds:{root}/train/*.tar", CLASSES)
    assert "{0..9}.tar" in info.value.hint
    with pytest.raises(PromptgenError, match=r"2 shards not found, e.g. .*/test/3.tar"):
        open_image_set(f"wds:{root}/test/{{0..4}}.tar", CLASSES)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(PromptgenError, match="hold no image"):
        open_image_set(f"wds:{empty}", CLASSES)
    import gzip

    (tmp_path / "z.tar").write_bytes(gzip.compress((root / "test" / "0.tar").read_bytes()))
    with pytest.raises(PromptgenError, match="not an uncompressed tar file") as info:
        open_image_set(f"wds:{tmp_path}/z.tar", CLASSES)
    assert "gunzip" in info.value.hint


def test_wds_fingerprint_follows_the_shards_and_classnames(tmp_path):
    root = write_shards(tmp_path / "s")
    spec = f"wds:{root}/test/*.tar"
    first = open_image_set(spec, CLASSES).fingerprint
    assert open_image_set(spec, CLASSES).fingerprint == first
    (root / "classnames.txt").write_text("blue ball\nred car\nTeddy bear\n")   # same classes, other text
    second = open_image_set(spec, CLASSES).fingerprint
    assert second != first
    shard = root / "test" / "1.tar"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert open_image_set(spec, CLASSES).fingerprint != second


# ---------------------------------------------------------------------------------------------- hf details

def test_hf_splits(tmp_path, hf_cache):
    saved = write_saved(tmp_path / "saved")
    with pytest.raises(PromptgenError, match=r"has no split 'validation'; its splits: train, test"):
        open_image_set(f"hf:{saved}:validation", CLASSES)
    from datasets import DatasetDict

    dataset = _hf_dataset()
    DatasetDict({"train": dataset, "validation": dataset}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(PromptgenError, match="has the splits train, validation and none is `test`") as info:
        open_image_set(f"hf:{tmp_path}/two", CLASSES)
    assert info.value.hint == f"name one: hf:{tmp_path}/two:train"
    DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / "one"))
    assert open_image_set(f"hf:{tmp_path}/one", CLASSES).meta["split"] == "validation"
    dataset.save_to_disk(str(tmp_path / "plain"))      # a Dataset: no splits
    assert open_image_set(f"hf:{tmp_path}/plain", CLASSES).labels == [label for _, label in ITEMS]
    with pytest.raises(PromptgenError, match="one saved Dataset, without splits"):
        open_image_set(f"hf:{tmp_path}/plain:test", CLASSES)
    parquet = write_parquet(tmp_path / "pq")
    with pytest.raises(PromptgenError, match=r"has no split 'train'; its splits: test"):
        open_image_set(f"hf:{parquet}:train", CLASSES)
    with pytest.raises(PromptgenError, match="matches no file or folder"):
        open_image_set(f"hf:{tmp_path}/nothing/*.parquet", CLASSES)


def test_hf_class_label_names_and_range_are_checked(tmp_path, hf_cache):
    from datasets import ClassLabel

    write_saved(tmp_path / "other", label_feature=ClassLabel(names=["blue ball", "kite", "teddy bear"]))
    with pytest.raises(PromptgenError, match=r"classes of hf:.*other:test are not those of toys: .*unknown 'kite'"):
        open_image_set(f"hf:{tmp_path}/other", CLASSES)
    # ClassLabel(num_classes=...) names nothing: only the range counts
    write_saved(tmp_path / "plain", label_feature=ClassLabel(num_classes=3))
    assert open_image_set(f"hf:{tmp_path}/plain", CLASSES).labels == [label for _, label in ITEMS]
    two = ClassList("two", ("blue ball", "red car"))
    with pytest.raises(PromptgenError, match=r"row 8: label 2 is outside 0..1 \(two has 2 classes\)"):
        open_image_set(f"hf:{tmp_path}/plain", two)


def test_hf_fingerprint_follows_the_files(tmp_path, hf_cache):
    parquet = write_parquet(tmp_path / "pq")
    first = open_image_set(f"hf:{parquet}", CLASSES).fingerprint
    assert open_image_set(f"hf:{parquet}", CLASSES).fingerprint == first
    assert open_image_set(f"hf:{parquet}/data/*.parquet", CLASSES).fingerprint != first
    data = parquet / "data" / "test-00001-of-00002.parquet"
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    assert open_image_set(f"hf:{parquet}", CLASSES).fingerprint != first


# ---------------------------------------------------------------------------------------------- missing packages

@pytest.mark.parametrize("module, spec", [("datasets", "hf:{tmp}"), ("webdataset", "wds:{tmp}/*.tar"),
                                          ("braceexpand", "wds:{tmp}/*.tar"),
                                          ("clip_benchmark", "clip_benchmark:mnist:{tmp}")])
def test_a_missing_package_names_the_extra(tmp_path, monkeypatch, module, spec):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)     # import raises ImportError
    with pytest.raises(PromptgenError, match=f"needs the `{module}` package") as info:
        open_image_set(spec.format(tmp=tmp_path), CLASSES)
    assert info.value.hint == "pip install 'promptgen[images]'"


# ---------------------------------------------------------------------------------------------- clip_benchmark

MNIST = ClassList("digits", tuple(str(d) for d in range(10)))


def _write_raw_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, images: np.ndarray, labels: np.ndarray, splits=("t10k", "train")) -> Path:
    """torchvision's MNIST files, uncompressed: it checks that all four exist (not their md5) and reads
    the split's two."""
    for prefix in splits:
        _write_raw_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", images)
        _write_raw_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.mark.slow
def test_clip_benchmark_mnist_from_local_files(tmp_path):
    pytest.importorskip("clip_benchmark")
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_mnist(tmp_path / "mnist", images, np.array([3, 1, 4, 1, 5, 9]))
    image_set = open_image_set(f"clip_benchmark:mnist:{tmp_path}/mnist", MNIST)
    assert image_set.labels == [3, 1, 4, 1, 5, 9]
    assert image_set.keys == [f"test/{i}" for i in range(6)]
    assert image_set.meta["url"] == f"clip_benchmark:mnist:{tmp_path}/mnist:test"
    for index in range(6):
        got = np.asarray(image_set.load(index))
        assert got.shape == (28, 28, 3) and np.array_equal(got[:, :, 1], images[index])
    assert open_image_set(f"clip_benchmark:mnist:{tmp_path}/mnist:test", MNIST).fingerprint == image_set.fingerprint
    assert open_image_set(f"clip_benchmark:mnist:{tmp_path}/mnist:train", MNIST).fingerprint != image_set.fingerprint
    # the dataset's classes are checked against ours
    with pytest.raises(PromptgenError, match="clip_benchmark:mnist are not those of words: .*unknown '0'"):
        open_image_set(f"clip_benchmark:mnist:{tmp_path}/mnist", ClassList("words", tuple("abcdefghij")))
    with pytest.raises(PromptgenError, match=r"Only `train` and `test` split available"):
        open_image_set(f"clip_benchmark:mnist:{tmp_path}/mnist:val", MNIST)
    # some files missing: their "not found" becomes ours, with the way to get them
    _write_mnist(tmp_path / "half", images, np.zeros(6), splits=("t10k",))
    with pytest.raises(PromptgenError, match=r"files were not found in .*/half \(RuntimeError: Dataset not found"):
        open_image_set(f"clip_benchmark:mnist:{tmp_path}/half", MNIST)


@pytest.mark.slow
@pytest.mark.parametrize("name, classes", [("cifar10", load_dataset("cifar10")), ("mnist", MNIST)])
def test_clip_benchmark_root_without_files(tmp_path, name, classes):
    pytest.importorskip("clip_benchmark")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptgenError, match=f"clip_benchmark:{name}: the dataset's files were not found in "
                                             f"{tmp_path}/empty") as info:
        open_image_set(f"clip_benchmark:{name}:{tmp_path}/empty", classes)
    assert "promptgen never downloads" in info.value.hint and "download=True" in info.value.hint
    assert list((tmp_path / "empty").iterdir()) == []          # and nothing was fetched or written
    with pytest.raises(PromptgenError, match=r"not found in .*/missing \(no such folder\)"):
        open_image_set(f"clip_benchmark:{name}:{tmp_path}/missing", classes)
    assert not (tmp_path / "missing").exists()


def test_clip_benchmark_specs_it_cannot_read(tmp_path):
    pytest.importorskip("clip_benchmark")
    with pytest.raises(PromptgenError, match="name the dataset and its folder"):
        open_image_set("clip_benchmark:mnist", MNIST)
    with pytest.raises(PromptgenError, match="read as a stream") as info:
        open_image_set(f"clip_benchmark:wds/cifar10:{tmp_path}", MNIST)
    assert "wds:" in info.value.hint
    with pytest.raises(PromptgenError, match="retrieval or caption dataset"):
        open_image_set(f"clip_benchmark:flickr30k:{tmp_path}", MNIST)
    with pytest.raises(PromptgenError, match="CLIP_benchmark has no dataset 'nosuch'"):
        open_image_set(f"clip_benchmark:nosuch:{tmp_path}", MNIST)


# ---------------------------------------------------------------------------------------------- forked workers

@pytest.mark.subprocess
@pytest.mark.parametrize("form", ["wds", "hf"])
def test_load_works_in_forked_dataloader_workers(tmp_path, form, hf_cache):
    import torch.utils.data

    if form == "wds":
        spec = f"wds:{write_shards(tmp_path / 's')}/test/{{0..2}}.tar"
    else:
        spec = f"hf:{write_parquet(tmp_path / 'pq')}"
    image_set = open_image_set(spec, CLASSES)
    expected = pixels(image_set)   # the parent reads first: its open handles must not leak into the workers

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(image_set)

        def __getitem__(self, index):
            return index, os.getpid(), np.asarray(image_set.load(index))

    loader = torch.utils.data.DataLoader(Images(), batch_size=4, num_workers=2, collate_fn=list,
                                         multiprocessing_context="fork")
    rows = [row for batch in loader for row in batch]
    assert [index for index, _, _ in rows] == list(range(12))
    assert os.getpid() not in {pid for _, pid, _ in rows} and len({pid for _, pid, _ in rows}) == 2
    for index, _, array in rows:
        assert np.array_equal(array, expected[index]), index
    assert np.array_equal(np.asarray(image_set.load(11)), expected[11])   # and the parent still reads


def test_wds_and_hf_loaders_survive_pickling(tmp_path, hf_cache):
    """A spawned worker gets the loader pickled: it must travel without its open files."""
    import pickle

    for spec in (f"wds:{write_shards(tmp_path / 's')}/test/*.tar", f"hf:{write_saved(tmp_path / 'saved')}"):
        image_set = open_image_set(spec, CLASSES)
        image_set.load(0)                                   # a file or dataset is open now
        copy = pickle.loads(pickle.dumps(image_set.load))
        assert np.array_equal(np.asarray(copy(7)), np.asarray(image_set.load(7))), spec


# ---------------------------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_features_from_shards(tmp_path, root):
    cifar = load_dataset("cifar10")
    shards = write_shards(tmp_path / "cifar", classnames=list(cifar.names))
    result = run_cli("features", "cifar10", "--images", f"wds:{shards}/test/{{0..2}}.tar", *TINY_ARGS,
                     "-o", tmp_path / "x.npz", root=root)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "x.npz") as data:
        assert data["features"].shape == (12, 64)
        assert data["labels"].tolist() == [label for _, label in ITEMS]


# ---------------------------------------------------------------------------------------------- pipelines

def test_a_pipeline_keys_each_source_spec_by_its_files(tmp_path, hf_cache):
    """A pipeline step reading --images wds:/hf:/clip_benchmark: must rerun when those files change."""
    from promptgen.pipeline.keys import content_identity

    shards = write_shards(tmp_path / "shards")
    saved = write_saved(tmp_path / "saved")
    mnist = _write_mnist(tmp_path / "mnist", np.zeros((2, 28, 28)), np.array([1, 2]))
    specs = {"wds": f"wds:{shards}/test/{{0..2}}.tar", "hf": f"hf:{saved}:test?label=label",
             "clip_benchmark": f"clip_benchmark:mnist:{mnist}:test"}
    first = {form: content_identity(spec, {}) for form, spec in specs.items()}
    assert all(value and value.startswith("source:") for value in first.values())
    assert {form: content_identity(spec, {}) for form, spec in specs.items()} == first  # stable

    with tarfile.open(shards / "test" / "1.tar", "a") as tar:
        _add(tar, "extra.png", PNGS[0])
    (shards / "classnames.txt").write_text("\n".join(reversed(CLASSES.names)) + "\n")
    write_saved(tmp_path / "saved", label_column="label")
    (tmp_path / "saved" / "test" / "state.json").write_text("{}")
    (mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"changed")
    now = {form: content_identity(spec, {}) for form, spec in specs.items()}
    assert all(now[form] != first[form] for form in specs), now

    # only the classnames.txt changed: still another key
    before = content_identity(specs["wds"], {})
    (shards / "classnames.txt").write_text("\n".join(CLASSES.names) + "\n")
    assert content_identity(specs["wds"], {}) != before


@pytest.mark.slow
def test_differentiate_records_the_shards_url(tmp_path, root, cli, fake_llm, monkeypatch):
    cifar = load_dataset("cifar10")
    shards = write_shards(tmp_path / "cifar", classnames=list(cifar.names))
    monkeypatch.chdir(tmp_path)  # a relative spec: the manifest must say where the shards are
    result = cli("differentiate", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, "--no-progress",
                 *TINY_ARGS, "--images", "wds:cifar/test/{0..2}.tar", "--k", "2", "--workers", "1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "prompts" / "cifar10" / "differential" / "v1.manifest.json").read_text())
    assert manifest["pairs"]["head"]["images"] == f"wds:{shards}/test/{{0..2}}.tar"
