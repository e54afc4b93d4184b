"""One set of images in every --images form: the features and the eval results must be identical.

scikit-learn's digits (real handwriting, 3 per class) are drawn at 28x28 and written as an ImageFolder,
a CSV list, webdataset shards, a saved Hugging Face dataset, parquet files and MNIST's IDX files (read
through CLIP_benchmark's own `build_dataset`). `features` and `eval` then run on each with the tiny model.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_ARGS, run_cli
from tests.test_image_sources import _write_mnist

DIGITS = [str(d) for d in range(10)]
PER_CLASS = 3


def _digit_images() -> tuple[np.ndarray, list[int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = [], []
    for label in range(10):
        for row in np.flatnonzero(digits.target == label)[:PER_CLASS]:
            big = np.kron(digits.images[row] * (255 / 16), np.ones((3, 3))).round().astype(np.uint8)
            images.append(np.pad(big, 2))
            labels.append(label)
    return np.stack(images), labels


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_every_form(base: Path) -> dict[str, str]:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    images, labels = _digit_images()
    pngs = [_png(image) for image in images]
    names = [f"{label}_{i:02d}" for i, label in enumerate(labels)]   # sorted = written order
    for name, label, data in zip(names, labels, pngs):
        (base / "folder" / str(label)).mkdir(parents=True, exist_ok=True)
        (base / "folder" / str(label) / f"{name}.png").write_bytes(data)
    (base / "list.csv").write_text("path,label\n" + "".join(f"folder/{label}/{name}.png,{label}\n"
                                                            for name, label in zip(names, labels)))
    (base / "shards" / "test").mkdir(parents=True)
    for shard in range(3):
        with tarfile.open(base / "shards" / "test" / f"{shard:04d}.tar", "w") as tar:
            for index in range(shard * 10, shard * 10 + 10):
                for suffix, data in (("png", pngs[index]), ("cls", str(labels[index]).encode())):
                    info = tarfile.TarInfo(f"{names[index]}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (base / "shards" / "classnames.txt").write_text("\n".join(DIGITS) + "\n")
    features = Features({"image": Image(), "label": ClassLabel(names=DIGITS)})
    dataset = Dataset.from_dict({"image": [{"bytes": data, "path": f"{name}.png"} for name, data in zip(names, pngs)],
                                 "label": labels}, features=features)
    DatasetDict({"test": dataset}).save_to_disk(str(base / "saved"))
    (base / "parquet").mkdir()
    dataset.to_parquet(str(base / "parquet" / "test.parquet"))
    _write_mnist(base / "mnist", images, np.array(labels))
    return {"folder": str(base / "folder"), "csv": str(base / "list.csv"),
            "wds": f"wds:{base}/shards/test/{{0000..0002}}.tar", "hf-saved": f"hf:{base}/saved:test",
            "hf-parquet": f"hf:{base}/parquet/test.parquet", "clip_benchmark": f"clip_benchmark:mnist:{base}/mnist"}


@pytest.mark.slow
def test_every_source_gives_identical_features_and_eval_results(tmp_path, root, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    specs = _write_every_form(tmp_path / "data")
    classes = tmp_path / "digits.txt"
    classes.write_text("\n".join(DIGITS) + "\n")
    features, results = {}, {}
    for form, spec in specs.items():
        out = tmp_path / f"{form}.npz"
        done = run_cli("features", "digits", "--classes", str(classes), "--images", spec, *TINY_ARGS,
                       "--batch-size", "8", "-o", str(out), root=root)
        assert done.exit_code == 0, f"{form}: {done.output}"
        with np.load(out) as data:
            features[form] = (data["features"], data["labels"])
        report = tmp_path / f"{form}.json"
        done = run_cli("eval", "digits", "--classes", str(classes), "--images", spec, *TINY_ARGS,
                       "--batch-size", "8", "--build", "template:photo", "--build", "template:simple7",
                       "-o", str(report), root=root)
        assert done.exit_code == 0, f"{form}: {done.output}"
        results[form] = json.loads(report.read_text())

    reference, labels = features["folder"]
    assert reference.shape == (30, 64) and labels.tolist() == [d for d in range(10) for _ in range(PER_CLASS)]
    for form, (got, got_labels) in features.items():
        assert np.array_equal(got, reference), f"{form}: features differ from the folder's"
        assert np.array_equal(got_labels, labels), form
    measured = ("images", "top1", "top5", "mean_per_class_recall", "per_class_accuracy", "support", "confusions")
    expected = [{key: head[key] for key in measured} for head in results["folder"]["heads"]]
    for form, report in results.items():
        assert [{key: head[key] for key in measured} for head in report["heads"]] == expected, form
        assert report["images"]["source"]["url"].startswith(specs[form].split(":")[0]), form
    urls = {form: report["images"]["source"]["url"] for form, report in results.items()}
    assert len(set(urls.values())) == len(urls)  # each source says where its images came from
