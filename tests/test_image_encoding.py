"""The image encoder (promptgen/clip/encode.py): workers, fixed parts and their cache, resume, precision,
streamed feature files, the CUDA check, and what the eval/features commands report about skipped images."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from promptgen.classes import load_dataset
from promptgen.clip import encode as encode_module
from promptgen.clip.encode import encode_images, write_features
from promptgen.clip.images import ImageSet, image_set_from_csv, load_feature_file, open_image_set
from promptgen.errors import PromptgenError
from tests.conftest import TINY_ARGS, run_cli
from tests.test_clip_eval import _corrupt_jpg, _png, counting_image_tower

CIFAR = load_dataset("cifar10")


def _folder(tmp_path: Path, per_class: int = 7, classes: int = 3) -> tuple[Path, list[Path]]:
    """An ImageFolder of random PNGs (sizes vary, so preprocessing resizes) and one corrupt JPEG."""
    folder = tmp_path / "images"
    paths = [_png(folder / CIFAR.names[c] / f"{i:02d}.png", 100 * c + i, size=20 + (i % 3) * 9)
             for c in range(classes) for i in range(per_class)]
    _corrupt_jpg(folder / CIFAR.names[1] / "zz_broken.jpg")
    return folder, paths


def _by_key(features, image_set: ImageSet) -> dict[str, torch.Tensor]:
    kept = [s["row"] for s in features.meta["skipped_images"]]
    rows = [i for i in range(len(image_set)) if i not in kept]
    return {image_set.keys[row]: features.features[n] for n, row in enumerate(rows)}


@pytest.mark.subprocess  # DataLoader workers are processes
def test_features_are_the_same_whatever_the_workers_parts_and_order(tmp_path, tiny_clip, monkeypatch):
    folder, paths = _folder(tmp_path)
    image_set = open_image_set(str(folder), CIFAR)
    reference = encode_images(tiny_clip, image_set, None, batch_size=4, show_progress=False)
    assert reference.features.shape == (21, tiny_clip.embed_dim) and reference.features.dtype == torch.float32
    assert reference.meta["skipped"] == 1 and reference.meta["skipped_images"][0]["image"].endswith("zz_broken.jpg")
    assert reference.labels.tolist() == [0] * 7 + [1] * 7 + [2] * 7

    monkeypatch.setattr(encode_module, "PART_IMAGES", 5)  # 22 images: 5 parts, short batches in every part
    for workers in (0, 1, 2):
        again = encode_images(tiny_clip, image_set, tmp_path / f"cache{workers}", batch_size=4, workers=workers,
                              show_progress=False)
        assert again.meta["parts"] == {"total": 5, "cached": 0, "encoded": 5}
        assert torch.equal(again.features, reference.features), f"workers={workers}"
        assert torch.equal(again.labels, reference.labels)

    # the same files listed in reverse order: every image keeps its features, bit for bit, although
    # each now shares its batch with other images
    listing = tmp_path / "reversed.csv"
    listing.write_text("".join(f"{p},{p.parent.name}\n" for p in reversed(paths)))
    reversed_set = image_set_from_csv(listing, CIFAR)
    shuffled = encode_images(tiny_clip, reversed_set, None, batch_size=4, workers=2, show_progress=False)
    expected = _by_key(reference, image_set)
    got = _by_key(shuffled, reversed_set)
    assert set(got) == {str(p) for p in paths}
    assert all(torch.equal(got[key], expected[key]) for key in got)


def test_an_interrupted_run_resumes_from_its_finished_parts(tmp_path, tiny_clip, monkeypatch):
    monkeypatch.setattr(encode_module, "PART_IMAGES", 4)
    folder, _ = _folder(tmp_path)
    image_set = open_image_set(str(folder), CIFAR)
    load = image_set.load

    def stop_at_ten(index: int):
        if index == 10:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main process
        return load(index)

    cache = tmp_path / "cache"
    interrupted = ImageSet(image_set.name, image_set.keys, image_set.labels, stop_at_ten, image_set.fingerprint,
                           image_set.meta)
    with pytest.raises(KeyboardInterrupt):
        encode_images(tiny_clip, interrupted, cache, batch_size=2, show_progress=False)
    parts = sorted(p.name for p in (cache / "features" / tiny_clip.key).glob("*/part-*.npz"))
    assert parts == ["part-000000000-000000004.npz", "part-000000004-000000008.npz"]

    with counting_image_tower(tiny_clip) as calls:
        resumed = encode_images(tiny_clip, image_set, cache, batch_size=2, show_progress=False)
    assert resumed.meta["parts"] == {"total": 6, "cached": 2, "encoded": 4}
    assert calls["n"] == 7  # images 8..21 in batches of two: the first eight were not encoded again
    fresh = encode_images(tiny_clip, image_set, None, batch_size=2, show_progress=False)
    assert torch.equal(resumed.features, fresh.features) and torch.equal(resumed.labels, fresh.labels)
    assert resumed.meta["skipped"] == fresh.meta["skipped"] == 1

    # a --limit inside finished parts encodes nothing; one that ends mid-part encodes only that piece
    with counting_image_tower(tiny_clip) as calls:
        limited = encode_images(tiny_clip, image_set, cache, batch_size=2, limit=8, show_progress=False)
        assert calls["n"] == 0 and limited.meta["from_cache"] is True
        assert torch.equal(limited.features, fresh.features[:8])
        encode_images(tiny_clip, image_set, cache, batch_size=2, limit=10, show_progress=False)
        assert calls["n"] == 1


def test_precision_is_autocast_and_features_stay_float32(tmp_path, tiny_clip):
    folder, _ = _folder(tmp_path, per_class=3)
    image_set = open_image_set(str(folder), CIFAR)
    cache = tmp_path / "cache"
    full = encode_images(tiny_clip, image_set, cache, batch_size=4, show_progress=False)
    half = encode_images(tiny_clip, image_set, cache, batch_size=4, precision="bf16", show_progress=False)
    assert half.features.dtype == torch.float32 and half.meta["precision"] == "bf16"
    assert half.meta["from_cache"] is False  # another precision is another cache entry
    assert not torch.equal(half.features, full.features)
    torch.testing.assert_close(half.features, full.features, atol=0.1, rtol=0.1)
    with pytest.raises(PromptgenError, match="unknown precision 'fp8'"):
        encode_images(tiny_clip, image_set, cache, precision="fp8", show_progress=False)


def test_a_cuda_request_without_cuda_fails_before_anything_loads(tmp_path, root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder, _ = _folder(tmp_path, per_class=1)
    result = run_cli("eval", "cifar10", "--images", str(folder), "--build", "template", *TINY_ARGS,
                     "--device", "cuda", root=root)
    assert result.exit_code != 0
    assert "--device cuda: this machine has no CUDA device" in result.output and "use --device cpu" in result.output
    assert "Traceback" not in result.output


def test_feature_files_are_written_part_by_part(tmp_path, tiny_clip, monkeypatch):
    monkeypatch.setattr(encode_module, "PART_IMAGES", 4)
    folder, _ = _folder(tmp_path)
    image_set = open_image_set(str(folder), CIFAR)
    expected = encode_images(tiny_clip, image_set, None, batch_size=4, show_progress=False)
    for name in ("features.npz", "features.pt"):
        meta = write_features(tiny_clip, image_set, tmp_path / name, tmp_path / "cache", batch_size=4,
                              show_progress=False)
        assert meta["encoded"] == 21 and meta["skipped"] == 1
        written = load_feature_file(tmp_path / name, CIFAR, tiny_clip.embed_dim)
        assert torch.equal(written.features, expected.features) and torch.equal(written.labels, expected.labels)
    with np.load(tmp_path / "features.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["features", "labels"] and data["features"].dtype == np.float32
    assert not list(tmp_path.glob(".features*")), "no scratch file is left beside the output"
    with pytest.raises(PromptgenError, match="written as .npz or .pt"):
        write_features(tiny_clip, image_set, tmp_path / "features.csv", None, show_progress=False)


def test_streaming_a_feature_file_holds_one_part_at_a_time(tmp_path):
    """25.6 MB of features in 100 parts: the writer's peak allocation stays near one part plus the labels."""
    rows, dim, parts = 1000, 64, 100

    def generated():
        for p in range(parts):
            yield (np.full((rows, dim), p, dtype=np.float32), np.full(rows, p % 10, dtype=np.int64))

    tracemalloc.start()
    try:
        encode_module._stream_npz(tmp_path / "big.npz", (rows * parts, dim), generated())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = rows * parts * dim * 4
    assert peak < whole / 5, f"peak {peak} bytes for {whole} bytes of features"
    with np.load(tmp_path / "big.npz", allow_pickle=False) as data:
        features, labels = data["features"], data["labels"]
    assert features.shape == (rows * parts, dim) and features[rows * 42 + 7, 3] == 42 and labels[-1] == 9


def test_progress_bar_shows_images_per_second(tmp_path, tiny_clip, capsys):
    folder, _ = _folder(tmp_path)
    encode_images(tiny_clip, open_image_set(str(folder), CIFAR), None, batch_size=4, show_progress=True)
    assert "img/s" in capsys.readouterr().err


@pytest.mark.subprocess
def test_eval_and_features_report_skipped_images_and_workers_change_nothing(tmp_path, root):
    folder, _ = _folder(tmp_path)
    outputs = []
    for workers in ("0", "2"):
        out = tmp_path / f"eval{workers}.json"
        result = run_cli("eval", "cifar10", "--images", str(folder), "--build", "template", *TINY_ARGS,
                         "--workers", workers, "-o", str(out), root=root)
        assert result.exit_code == 0, result.output
        assert "1 skipped: could not be decoded" in result.output
        outputs.append(json.loads(out.read_text()))
    first, second = outputs
    assert first["images"]["skipped"] == 1
    assert first["images"]["skipped_images"][0]["image"].endswith("zz_broken.jpg")
    assert first["images"]["skipped_images"][0]["error"]
    assert second["images"]["from_cache"] is True  # the second run found every part in the cache
    assert [h["top1"] for h in first["heads"]] == [h["top1"] for h in second["heads"]]

    result = run_cli("features", "cifar10", "--images", str(folder), *TINY_ARGS, "--workers", "2",
                     "-o", str(tmp_path / "f.npz"), "--json", root=root)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 21 and summary["skipped"] == 1
    assert summary["skipped_images"][0]["image"].endswith("zz_broken.jpg")
