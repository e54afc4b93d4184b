"""Image sets, image features (and their cache), feature files, evaluate_heads and `promptgen eval`."""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from promptgen.classes import ClassList, load_dataset
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip import encode as encode_module
from promptgen.clip import images as images_module
from promptgen.clip.heads import Head, load_head
from promptgen.clip.encode import encode_images
from promptgen.clip.images import (FASHION_MNIST_DIR, fashion_mnist, image_set_from_csv, image_set_from_folder,
                                   load_feature_file, open_image_set, save_feature_file)
from promptgen.errors import PromptgenError
from tests.conftest import TINY_ARGS, run_cli

CIFAR = load_dataset("cifar10")
FASHION = load_dataset("fashion-mnist")
DEBIAN_FASHION_MNIST = FASHION_MNIST_DIR


# ---------------------------------------------------------------------------------------------- helpers

def _png(path: Path, seed: int, size: int = 24) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mode="RGB").save(path)
    return path


def _truncated_png(path: Path, seed: int) -> Path:
    _png(path, seed, size=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(99).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


def _expected_features(clip, paths: list[Path]) -> torch.Tensor:
    """Each image through the image tower on its own: what encode_images must give, row for row."""
    from PIL import Image

    rows = []
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as image:
                tensor = clip.preprocess(image.convert("RGB"))
            rows.append(clip.model.encode_image(tensor[None]).float()[0])
    return torch.stack(rows)


@contextmanager
def counting_image_tower(clip):
    """Counts calls of clip.model.encode_image; the model is left exactly as it was."""
    original = clip.model.encode_image
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    clip.model.encode_image = wrapper
    try:
        yield calls
    finally:
        del clip.model.encode_image
    assert clip.model.encode_image.__func__ is type(clip.model).encode_image


def _write_idx(path: Path, array: np.ndarray, *, magic_type: int = 0x08, truncate: int = 0) -> Path:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if truncate:
        payload = payload[:-truncate]
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    return path


def _orthogonal(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()


# ---------------------------------------------------------------------------------------------- 1. evaluate_heads

def test_evaluate_heads_three_classes_by_hand():
    # logits = 100 * normalize(f) @ W; with f = v Q^T and W = Q the logits are normalize(v) itself,
    # so the vectors below say directly which class wins
    q = _orthogonal(3, 1)
    v = torch.tensor([
        [5.0, 1.0, 0.5], [4.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.1, 1.0, 0.5],   # class 0: 3 of 4 right
        [0.5, 3.0, 1.0], [2.0, 1.0, 0.2],                                      # class 1: 1 of 2 right
        [0.3, 0.2, 9.0],                                                       # class 2: 1 of 1 right
    ])
    scale = torch.tensor([1.0, 7.0, 0.1, 3.0, 0.5, 20.0, 2.0])[:, None]       # norms must not matter
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    (result,) = evaluate_heads(v @ q.T * scale, labels, [Head(q, {"name": "rotated"})], 3)
    assert result["head"] == "rotated"
    assert result["images"] == 7
    assert result["top1"] == pytest.approx(5 / 7)
    assert result["k_top5"] == 3                      # k = min(5, C)
    assert result["top5"] == pytest.approx(1.0)
    assert result["per_class_accuracy"] == pytest.approx([0.75, 0.5, 1.0])
    assert result["mean_per_class_recall"] == pytest.approx(0.75)   # not top-1: the classes are unequal
    assert result["mean_per_class_recall"] != pytest.approx(result["top1"])
    assert result["support"] == [4, 2, 1]


def test_evaluate_heads_top5_absent_classes_and_unlabelled_rows():
    eye = torch.eye(7)
    v = torch.tensor([
        [1.0, 7, 6, 5, 4, 3, 2],    # label 0, ranked 7th: top-1 and top-5 miss
        [3.0, 7, 6, 5, 4, 2, 1],    # label 0, ranked 5th: top-5 hit only
        [1.0, 9, 2, 3, 4, 5, 6],    # label 1: top-1 hit
        [7.0, 6, 5, 4, 3, 2, 1],    # label 6, ranked 7th: miss
        [0.0, 0, 0, 0, 0, 0, 9],    # unlabelled (-1): must not count at all
    ])
    labels = torch.tensor([0, 0, 1, 6, -1])
    (result,) = evaluate_heads(v, labels, [Head(eye)], 7)
    assert result["images"] == 4
    assert result["k_top5"] == 5
    assert result["top1"] == pytest.approx(1 / 4)
    assert result["top5"] == pytest.approx(2 / 4)
    assert result["per_class_accuracy"] == [0.0, 1.0, None, None, None, None, 0.0]
    assert result["mean_per_class_recall"] == pytest.approx(1 / 3)   # absent classes are left out of the mean
    assert result["support"] == [2, 1, 0, 0, 0, 0, 1]


def test_evaluate_heads_matches_numpy_and_is_independent_of_batching():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(300, 16, generator=generator)
    labels = torch.randint(0, 9, (300,), generator=generator)
    labels[labels == 4] = 3                                    # class 4 absent
    heads = [Head(torch.randn(16, 9, generator=generator), {"name": f"h{i}"}) for i in range(3)]
    together = evaluate_heads(features, labels, heads, 9)
    alone = [evaluate_heads(features, labels, [h], 9)[0] for h in heads]
    chunked = evaluate_heads(features, labels, heads, 9, chunk=7)
    assert [r["head"] for r in together] == ["h0", "h1", "h2"]
    for a, b, c in zip(together, alone, chunked):
        assert a.keys() == b.keys() == c.keys()
        for key in ("images", "k_top5", "support", "per_class_accuracy", "head"):
            assert a[key] == b[key] == c[key]
        for key in ("top1", "top5", "mean_per_class_recall"):
            assert a[key] == pytest.approx(b[key]) and a[key] == pytest.approx(c[key])
    # an independent computation of the same numbers
    f = features.numpy() / np.linalg.norm(features.numpy(), axis=1, keepdims=True)
    y = labels.numpy()
    for head, result in zip(heads, together):
        logits = f @ head.weights.numpy()
        order = np.argsort(-logits, axis=1)
        top1 = order[:, 0] == y
        assert result["top1"] == pytest.approx(top1.mean())
        assert result["top5"] == pytest.approx((order[:, :5] == y[:, None]).any(axis=1).mean())
        recalls = [top1[y == c].mean() if (y == c).any() else None for c in range(9)]
        assert result["per_class_accuracy"][4] is None
        assert result["per_class_accuracy"] == pytest.approx([r if r is None else round(r, 6) for r in recalls],
                                                            abs=1e-6)
        assert result["mean_per_class_recall"] == pytest.approx(np.mean([r for r in recalls if r is not None]))
    # the heads differ, so the results must too (the stacking keeps the heads apart)
    assert len({r["top1"] for r in together}) > 1 or len({tuple(r["per_class_accuracy"]) for r in together}) > 1


def test_evaluate_heads_rejects_bad_input():
    features = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 0])
    with pytest.raises(PromptgenError, match="shape"):
        evaluate_heads(features, labels, [Head(torch.randn(8, 3)), Head(torch.randn(8, 4))], 3)
    with pytest.raises(PromptgenError, match="shape"):
        evaluate_heads(features, labels, [Head(torch.randn(3, 8))], 3)         # transposed
    with pytest.raises(PromptgenError, match="shape"):
        evaluate_heads(features, labels, [Head(torch.randn(7, 3))], 3)         # other embedding size
    with pytest.raises(PromptgenError, match="labels"):
        evaluate_heads(features, torch.full((4,), -1), [Head(torch.randn(8, 3))], 3)
    with pytest.raises(PromptgenError, match="no head"):
        evaluate_heads(features, labels, [], 3)


# ---------------------------------------------------------------------------------------------- 2. image sets

def test_image_folder_names_indices_and_broken_files(tmp_path, tiny_clip):
    folder = tmp_path / "images"
    airplane = [_png(folder / "Airplane" / f"{i}.png", i) for i in range(2)]          # loose case
    auto = [_png(folder / "automobile" / "x.png", 10)]                                 # exact
    cat = [_png(folder / "3" / "nested" / "c.PNG", 11), _png(folder / "3" / "d.png", 12)]   # label index
    _corrupt_jpg(folder / "automobile" / "bad.jpg")
    _truncated_png(folder / "3" / "a_truncated.png", 13)
    (folder / "automobile" / "notes.txt").write_text("not an image")                  # not listed at all
    (folder / "Horse ").mkdir()                                                        # stray space: loose
    _png(folder / "Horse " / "h.png", 14)
    horse = [folder / "Horse " / "h.png"]

    image_set = open_image_set(str(folder), CIFAR)
    assert len(image_set) == 8
    assert not any(k.endswith("notes.txt") for k in image_set.keys)
    by_key = dict(zip(image_set.keys, image_set.labels))
    assert by_key[str(folder / "Airplane" / "0.png")] == 0
    assert by_key[str(folder / "automobile" / "bad.jpg")] == 1
    assert by_key[str(folder / "3" / "nested" / "c.PNG")] == 3
    assert by_key[str(folder / "Horse " / "h.png")] == 7

    features = encode_images(tiny_clip, image_set, tmp_path / "cache", batch_size=2, show_progress=False)
    assert features.meta["skipped"] == 2
    assert features.meta["encoded"] == 6 and features.meta["count"] == 8
    skipped = {Path(s["image"]).name for s in features.meta["skipped_images"]}
    assert skipped == {"bad.jpg", "a_truncated.png"}
    kept = [Path(k) for k in image_set.keys if Path(k).name not in skipped]
    assert features.labels.tolist() == [by_key[str(p)] for p in kept]
    assert sorted(features.labels.tolist()) == [0, 0, 1, 3, 3, 7]
    assert features.features.shape == (6, tiny_clip.embed_dim)
    assert sorted(map(str, kept)) == sorted(map(str, airplane + auto + cat + horse))
    # every kept row holds its own image's features, although skips fall inside batches
    torch.testing.assert_close(features.features, _expected_features(tiny_clip, kept), atol=1e-4, rtol=1e-4)


def test_image_folder_fashion_mnist_style_names(tmp_path):
    # "T-shirt/top" cannot be a folder name: the exports call it t-shirt_top, T-shirt_top, ...
    folder = tmp_path / "fm"
    _png(folder / "t-shirt_top" / "a.png", 1)
    _png(folder / "Ankle_boot" / "b.png", 2)
    _png(folder / "trouser" / "c.png", 3)
    image_set = image_set_from_folder(folder, FASHION)
    assert dict(zip((Path(k).parent.name for k in image_set.keys), image_set.labels)) == \
        {"Ankle_boot": 9, "t-shirt_top": 0, "trouser": 1}


def test_image_folder_wordnet_ids_and_errors(tmp_path):
    classes = ClassList("toy", ("sea lion", "dog"), ids=("n02077923", "n02084071"))
    folder = tmp_path / "wn"
    _png(folder / "n02084071" / "a.png", 1)
    _png(folder / "sea_lion" / "b.png", 2)
    image_set = image_set_from_folder(folder, classes)
    assert sorted(zip((Path(k).parent.name for k in image_set.keys), image_set.labels)) == \
        [("n02084071", 1), ("sea_lion", 0)]

    _png(folder / "unicorn" / "u.png", 3)
    _png(folder / "7" / "u.png", 4)                              # index out of range for 2 classes
    with pytest.raises(PromptgenError) as info:
        image_set_from_folder(folder, classes)
    assert "'unicorn'" in info.value.message and "'7'" in info.value.message
    assert "'dog'" not in info.value.message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PromptgenError, match="sub-folders"):
        open_image_set(str(empty), classes)
    (empty / "dog").mkdir()
    (empty / "dog" / "readme.txt").write_text("x")
    with pytest.raises(PromptgenError, match="no images"):
        open_image_set(str(empty), classes)
    with pytest.raises(PromptgenError, match="no such folder"):
        open_image_set(str(tmp_path / "missing"), classes)
    (tmp_path / "list.txt").write_text("a.png,0\n")
    with pytest.raises(PromptgenError, match="neither a folder nor a .csv"):
        open_image_set(str(tmp_path / "list.txt"), classes)


def test_csv_image_list(tmp_path):
    a = _png(tmp_path / "imgs" / "a.png", 1, size=20)
    _png(tmp_path / "imgs" / "sub" / "b.png", 2, size=21)
    elsewhere = _png(tmp_path / "other" / "c.png", 3, size=22)
    listing = tmp_path / "imgs" / "list.csv"
    listing.write_text(f"path,label\na.png,0\n\nsub/b.png,cat\n{elsewhere},Automobile\n  a.png , 9 \n")
    image_set = open_image_set(str(listing), CIFAR)
    assert image_set.labels == [0, 3, 1, 9]
    assert image_set.keys == [str(a), str(tmp_path / "imgs" / "sub" / "b.png"), str(elsewhere), str(a)]
    assert [image_set.load(i).size for i in range(4)] == [(20, 20), (21, 21), (22, 22), (20, 20)]
    assert image_set.load(1).mode == "RGB"

    bad = tmp_path / "imgs" / "bad.csv"
    bad.write_text("path,label\na.png,0\nsub/b.png,unicorn\na.png,10\nonly-a-path\n")
    with pytest.raises(PromptgenError) as info:
        image_set_from_csv(bad, CIFAR)
    message = info.value.message
    assert "line 3" in message and "'unicorn'" in message
    assert "line 4" in message and "'10'" in message
    assert "line 5" in message
    assert "line 2" not in message

    empty = tmp_path / "imgs" / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(PromptgenError, match="no images"):
        image_set_from_csv(empty, CIFAR)


# ---------------------------------------------------------------------------------------------- 3. feature cache

def test_feature_cache_reuse_invalidation_and_corruption(tmp_path, tiny_clip):
    folder = tmp_path / "images"
    paths = [_png(folder / name / f"{i}.png", 10 * j + i) for j, name in enumerate(CIFAR.names[:3]) for i in range(2)]
    _corrupt_jpg(folder / "bird" / "zz_bad.jpg")
    cache = tmp_path / "cache"

    with counting_image_tower(tiny_clip) as calls:
        first = encode_images(tiny_clip, open_image_set(str(folder), CIFAR), cache, batch_size=4,
                              show_progress=False)
        assert calls["n"] == 2 and first.meta["from_cache"] is False
        stored = list((cache / "features" / tiny_clip.key).glob("*/part-*.npz"))
        assert len(stored) == 1 and stored[0].with_suffix(".json").is_file()

        calls["n"] = 0
        again = encode_images(tiny_clip, open_image_set(str(folder), CIFAR), cache, batch_size=4,
                              show_progress=False)
        assert calls["n"] == 0
        assert again.meta["from_cache"] is True
        assert again.meta["skipped"] == 1
        assert torch.equal(again.features, first.features) and torch.equal(again.labels, first.labels)
        assert again.features.dtype == torch.float32 and again.labels.dtype == torch.long

        # a limit is another request: encoded, and cached on its own
        limited = encode_images(tiny_clip, open_image_set(str(folder), CIFAR), cache, limit=3,
                                show_progress=False)
        assert calls["n"] == 1 and limited.meta["from_cache"] is False
        torch.testing.assert_close(limited.features, first.features[:3], atol=1e-4, rtol=1e-4)

        # a changed image (other content, size and time) invalidates the cache
        calls["n"] = 0
        _png(paths[1], 1234, size=30)
        changed = encode_images(tiny_clip, open_image_set(str(folder), CIFAR), cache, batch_size=4,
                                show_progress=False)
        assert calls["n"] > 0 and changed.meta["from_cache"] is False
        assert not torch.allclose(changed.features[1], first.features[1])
        torch.testing.assert_close(changed.features, _expected_features(tiny_clip, paths), atol=1e-4, rtol=1e-4)

        # touching a file (same bytes, new time) invalidates it too
        calls["n"] = 0
        stat = paths[0].stat()
        os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        touched = encode_images(tiny_clip, open_image_set(str(folder), CIFAR), cache, show_progress=False)
        assert calls["n"] > 0 and touched.meta["from_cache"] is False
        torch.testing.assert_close(touched.features, changed.features, atol=1e-4, rtol=1e-4)

        # the cached array is damaged: encoded again, right values, the cache repaired
        current = open_image_set(str(folder), CIFAR)
        assert encode_images(tiny_clip, current, cache, show_progress=False).meta["from_cache"] is True
        newest = cache / "features" / tiny_clip.key / encode_module._run_key(tiny_clip, current, "fp32") / \
            "part-000000000-000000007.npz"
        assert newest.is_file()
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
        calls["n"] = 0
        repaired = encode_images(tiny_clip, current, cache, show_progress=False)
        assert calls["n"] > 0 and repaired.meta["from_cache"] is False
        torch.testing.assert_close(repaired.features, touched.features, atol=1e-4, rtol=1e-4)
        assert repaired.labels.tolist() == touched.labels.tolist()
        calls["n"] = 0
        assert encode_images(tiny_clip, current, cache, show_progress=False).meta["from_cache"] is True
        assert calls["n"] == 0

        # an unreadable sidecar or a truncated array is no crash either
        newest.with_suffix(".json").write_text("{not json")
        assert encode_images(tiny_clip, current, cache, show_progress=False).meta["from_cache"] is False
        newest.write_bytes(b"")
        calls["n"] = 0
        rebuilt = encode_images(tiny_clip, current, cache, show_progress=False)
        assert calls["n"] > 0 and rebuilt.meta["from_cache"] is False
        torch.testing.assert_close(rebuilt.features, touched.features, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- 4. Fashion-MNIST

def test_fashion_mnist_from_synthetic_idx_files(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:2])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:2])

    test = fashion_mnist(FASHION, "test", folder=tmp_path)
    assert len(test) == 5
    assert test.labels == [9, 0, 3, 3, 7]
    assert test.name == "fashion-mnist:test"
    for i in range(5):
        picture = test.load(i)
        assert picture.size == (28, 28) and picture.mode == "RGB"
        pixels = np.asarray(picture)
        for channel in range(3):
            assert np.array_equal(pixels[:, :, channel], images[i])
    train = fashion_mnist(FASHION, "train", folder=tmp_path)
    assert train.labels == [9, 0] and np.array_equal(np.asarray(train.load(1))[:, :, 0], images[1])
    assert train.fingerprint != test.fingerprint

    with pytest.raises(PromptgenError, match="split"):
        fashion_mnist(FASHION, "val", folder=tmp_path)
    with pytest.raises(PromptgenError, match="10 classes"):
        fashion_mnist(ClassList("toy", ("a", "b", "c")), "test", folder=tmp_path)
    with pytest.raises(PromptgenError, match="not found") as missing:
        fashion_mnist(FASHION, "test", folder=tmp_path / "nowhere")
    assert "apt-get install dataset-fashion-mnist" in missing.value.hint

    broken = tmp_path / "broken"
    broken.mkdir()
    _write_idx(broken / "t10k-images-idx3-ubyte.gz", images, truncate=100)
    _write_idx(broken / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(PromptgenError, match="truncated"):
        fashion_mnist(FASHION, "test", folder=broken)
    _write_idx(broken / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(broken / "t10k-labels-idx1-ubyte.gz", labels[:4])
    with pytest.raises(PromptgenError, match="4 labels"):
        fashion_mnist(FASHION, "test", folder=broken)
    _write_idx(broken / "t10k-labels-idx1-ubyte.gz", labels, magic_type=0x0D)   # floats, not bytes
    with pytest.raises(PromptgenError, match="not an IDX"):
        fashion_mnist(FASHION, "test", folder=broken)
    with gzip.open(broken / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00")
    with pytest.raises(PromptgenError, match="not an IDX"):
        fashion_mnist(FASHION, "test", folder=broken)


def test_fashion_mnist_debian_files(tmp_path, tiny_clip, monkeypatch):
    """The real files of Debian's dataset-fashion-mnist, which scripts/test installs (or the folder
    PROMPTGEN_FASHION_MNIST names); a missing install is a failure here, not a quiet pass."""
    assert (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(), \
        f"Fashion-MNIST is not in {DEBIAN_FASHION_MNIST}: scripts/test installs dataset-fashion-mnist"
    image_set = fashion_mnist(FASHION, "test", folder=DEBIAN_FASHION_MNIST)
    assert len(image_set) == 10000
    assert Counter(image_set.labels) == {label: 1000 for label in range(10)}
    # read the files independently: the loader must give the same pixels and labels
    with gzip.open(DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        raw_labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    with gzip.open(DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        raw_images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    assert image_set.labels == raw_labels.tolist()
    for i in (0, 1, 4321, 9999):
        assert np.array_equal(np.asarray(image_set.load(i))[:, :, 0], raw_images[i])

    # the --images spec reads the default folder (module global, set from the environment at import)
    monkeypatch.setattr(images_module, "FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST)
    spec_set = open_image_set("fashion-mnist", FASHION)
    assert spec_set.name == "fashion-mnist:test" and spec_set.labels == image_set.labels
    assert len(open_image_set("fashion-mnist:train", FASHION)) == 60000

    features = encode_images(tiny_clip, image_set, tmp_path / "cache", limit=64, show_progress=False)
    assert features.features.shape == (64, tiny_clip.embed_dim)
    assert features.labels.tolist() == raw_labels[:64].tolist()
    assert features.meta["skipped"] == 0 and features.meta["count"] == 64
    assert torch.isfinite(features.features).all()


# ---------------------------------------------------------------------------------------------- 5. feature files

def test_load_feature_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((6, 64)).astype(np.float32)
    labels = np.array([0, 1, 2, 9, 3, 3])
    np.savez(tmp_path / "f.npz", features=features, labels=labels)
    loaded = load_feature_file(tmp_path / "f.npz", CIFAR, 64)
    assert np.array_equal(loaded.features.numpy(), features) and loaded.labels.tolist() == labels.tolist()
    assert loaded.features.dtype == torch.float32 and loaded.labels.dtype == torch.long

    torch.save({"features": torch.from_numpy(features).double(), "labels": torch.from_numpy(labels)},
               tmp_path / "f.pt")
    loaded_pt = load_feature_file(tmp_path / "f.pt", CIFAR, 64)
    torch.testing.assert_close(loaded_pt.features, torch.from_numpy(features))
    assert loaded_pt.labels.tolist() == labels.tolist()

    for name in ("saved.npz", "saved.pt"):
        save_feature_file(loaded, tmp_path / name)
        again = load_feature_file(tmp_path / name, CIFAR, 64)
        assert torch.equal(again.features, loaded.features) and torch.equal(again.labels, loaded.labels)

    torch.save(torch.from_numpy(features), tmp_path / "plain.pt")                   # a bare tensor: unlabeled
    plain = load_feature_file(tmp_path / "plain.pt", CIFAR, 64)
    assert plain.labels.tolist() == [-1] * 6
    np.savez(tmp_path / "nolabels.npz", features=features)
    assert load_feature_file(tmp_path / "nolabels.npz").labels.tolist() == [-1] * 6


def test_load_feature_file_errors(tmp_path):
    rng = np.random.default_rng(1)
    good = rng.standard_normal((4, 64)).astype(np.float32)

    np.savez(tmp_path / "dim.npz", features=rng.standard_normal((4, 32)).astype(np.float32), labels=[0, 1, 2, 3])
    with pytest.raises(PromptgenError) as info:
        load_feature_file(tmp_path / "dim.npz", CIFAR, 64)
    assert "dimension 32" in info.value.message and "64" in info.value.message

    np.savez(tmp_path / "len.npz", features=good, labels=[0, 1, 2])
    with pytest.raises(PromptgenError, match="labels"):
        load_feature_file(tmp_path / "len.npz", CIFAR, 64)

    np.savez(tmp_path / "big.npz", features=good, labels=[0, 1, 10, 3])
    with pytest.raises(PromptgenError, match="label 10") as info:
        load_feature_file(tmp_path / "big.npz", CIFAR, 64)
    assert "10 classes" in info.value.message

    for bad in (np.nan, np.inf):
        broken = good.copy()
        broken[2, 5] = bad
        np.savez(tmp_path / "nan.npz", features=broken, labels=[0, 1, 2, 3])
        with pytest.raises(PromptgenError, match="NaN"):
            load_feature_file(tmp_path / "nan.npz", CIFAR, 64)

    with pytest.raises(PromptgenError, match="not found"):
        load_feature_file(tmp_path / "missing.npz", CIFAR, 64)

    np.savez(tmp_path / "flat.npz", features=good[0], labels=[0])
    with pytest.raises(PromptgenError, match=r"\(N, D\)"):
        load_feature_file(tmp_path / "flat.npz", CIFAR, 64)
    np.savez(tmp_path / "other.npz", vectors=good)
    with pytest.raises(PromptgenError, match="features"):
        load_feature_file(tmp_path / "other.npz", CIFAR, 64)
    (tmp_path / "junk.pt").write_bytes(b"definitely not a torch file")
    with pytest.raises(PromptgenError, match="cannot read"):
        load_feature_file(tmp_path / "junk.pt", CIFAR, 64)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(PromptgenError, match="cannot read"):
        load_feature_file(tmp_path / "junk.npz", CIFAR, 64)


# ---------------------------------------------------------------------------------------------- 6. CLI

def _table_rows(output: str) -> dict[str, list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("head ") and "top-1" in line)
    assert set(lines[start + 1].replace(" ", "")) == {"-"}
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("wrote "):
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_cli_eval_end_to_end(tmp_path, root):
    images = tmp_path / "cifar"
    for c, name in enumerate(CIFAR.names):
        for i in range(3):
            _png(images / name / f"{i}.png", 100 * c + i)
    _corrupt_jpg(images / "ship" / "broken.jpg")

    result = run_cli("head", "cifar10", "--builder", "template", "--templates", "openai80", *TINY_ARGS,
                     "-o", tmp_path / "h.pt", root=root)
    assert result.exit_code == 0, result.output
    result = run_cli("head", "cifar10", *TINY_ARGS, "-o", tmp_path / "photo.pt", root=root)   # template:photo
    assert result.exit_code == 0, result.output

    out = tmp_path / "res.json"
    result = run_cli("eval", "cifar10", "--images", images, "--head", tmp_path / "h.pt", "--build", "template",
                     "--build", "waffle", "--build", "zpe:openai80", *TINY_ARGS, "-o", out, root=root)
    assert result.exit_code == 0, result.output
    assert "30 images (1 skipped" in result.output
    rows = _table_rows(result.output)
    assert list(rows) == ["h", "template", "waffle", "zpe:openai80"]
    report = json.loads(out.read_text())
    assert report["format"] == "promptgen.eval/1" and report["dataset"] == "cifar10"
    assert [h["head"] for h in report["heads"]] == ["h", "template", "waffle", "zpe:openai80"]
    assert report["images"]["from_cache"] is False
    assert report["images"]["skipped"] == 1 and report["images"]["encoded"] == 30
    for head in report["heads"]:
        assert head["images"] == 30 and head["support"] == [3] * 10
        assert rows[head["head"]][-3] == f"{100 * head['top1']:.2f}"
        assert rows[head["head"]][-1] == f"{100 * head['mean_per_class_recall']:.2f}"
        assert len(head["per_class_accuracy"]) == 10

    # the same numbers from the features file and the head file, computed here
    result = run_cli("features", "cifar10", "--images", images, *TINY_ARGS, "-o", tmp_path / "f.npz", root=root)
    assert result.exit_code == 0, result.output
    features = load_feature_file(tmp_path / "f.npz", CIFAR, 64)
    assert features.features.shape == (30, 64)
    expected = evaluate_heads(features.features, features.labels,
                              [load_head(tmp_path / "h.pt", CIFAR), load_head(tmp_path / "photo.pt", CIFAR)], 10)
    got = {h["head"]: h for h in report["heads"]}
    assert got["h"]["top1"] == pytest.approx(expected[0]["top1"])
    assert got["h"]["per_class_accuracy"] == pytest.approx(expected[0]["per_class_accuracy"])
    assert got["template"]["top1"] == pytest.approx(expected[1]["top1"])           # --build template = photo
    assert got["template"]["per_class_accuracy"] == pytest.approx(expected[1]["per_class_accuracy"])

    # a new head on the same images: the image features come from the cache
    out2 = tmp_path / "res2.json"
    result = run_cli("eval", "cifar10", "--images", images, "--head", tmp_path / "photo.pt", *TINY_ARGS,
                     "-o", out2, root=root)
    assert result.exit_code == 0, result.output
    assert "features from cache" in result.output
    report2 = json.loads(out2.read_text())
    assert report2["images"]["from_cache"] is True
    assert report2["heads"][0]["top1"] == pytest.approx(expected[1]["top1"])

    # --features gives the same as --images
    result = run_cli("eval", "cifar10", "--features", tmp_path / "f.npz", "--head", tmp_path / "h.pt",
                     "--json", root=root)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["heads"][0]["top1"] == pytest.approx(expected[0]["top1"])


def test_cli_eval_errors(tmp_path, root):
    images = tmp_path / "cifar"
    for c, name in enumerate(CIFAR.names):
        _png(images / name / "0.png", c)
    assert run_cli("head", "cifar10", *TINY_ARGS, "-o", tmp_path / "h.pt", root=root).exit_code == 0
    np.savez(tmp_path / "f32.npz", features=np.ones((5, 32), dtype=np.float32), labels=[0, 1, 2, 3, 4])

    # features of another dimension: with a head file alone, and with a head built by the model
    result = run_cli("eval", "cifar10", "--features", tmp_path / "f32.npz", "--head", tmp_path / "h.pt", root=root)
    assert result.exit_code == 2
    assert "dimension" in result.stderr and "32" in result.stderr and "64" in result.stderr
    result = run_cli("eval", "cifar10", "--features", tmp_path / "f32.npz", "--build", "template", *TINY_ARGS,
                     root=root)
    assert result.exit_code == 2
    assert "dimension 32" in result.stderr and "64" in result.stderr

    # exactly one of --images and --features
    result = run_cli("eval", "cifar10", "--images", images, "--features", tmp_path / "f32.npz",
                     "--head", tmp_path / "h.pt", *TINY_ARGS, root=root)
    assert result.exit_code == 2 and "exactly one of --images and --features" in result.stderr
    result = run_cli("eval", "cifar10", "--head", tmp_path / "h.pt", *TINY_ARGS, root=root)
    assert result.exit_code == 2 and "exactly one" in result.stderr
    result = run_cli("eval", "cifar10", "--images", images, *TINY_ARGS, root=root)
    assert result.exit_code == 2 and "no head" in result.stderr

    # a head built for another dataset (same class count: only the names tell them apart)
    assert run_cli("head", "fashion-mnist", *TINY_ARGS, "-o", tmp_path / "fm.pt", root=root).exit_code == 0
    result = run_cli("eval", "cifar10", "--images", images, "--head", tmp_path / "fm.pt", *TINY_ARGS, root=root)
    assert result.exit_code == 2
    assert "fm.pt" in result.stderr and "cifar10" in result.stderr
    assert "'airplane'" in result.stderr and "'T-shirt/top'" in result.stderr
    assert "Traceback" not in result.output
    assert not list((root / "cache").glob("features/*/*.npz"))          # nothing encoded before the check
