"""Where --images came from: every image source records meta["url"], the source with absolute paths."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from promptgen.classes import ClassList, load_dataset
from promptgen.clip.images import open_image_set

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


def write_folder(folder: Path) -> Path:
    for (stem, label), data in zip(ITEMS, PNGS):
        (folder / CLASSES.names[label]).mkdir(parents=True, exist_ok=True)
        (folder / CLASSES.names[label] / f"{stem}.png").write_bytes(data)
    return folder


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
