"""Interop with CLIP_benchmark (docs/methods.md, formats): an exported set gives CLIP_benchmark's own
zero-shot classifier the same head promptgen builds, and a saved head file is read by its
`evaluate(..., load_clfs=[...])` with the same accuracy promptgen's evaluation reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.metrics import zeroshot_classification as zsc
from PIL import Image

from promptgen.classes import load_dataset
from promptgen.clip.embed import TextEncoder
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip.heads import build_head, load_head, save_head
from promptgen.clip.sources import load_template_set, source_from_set, source_from_templates
from promptgen.store import Store
from tests.conftest import run_cli

CIFAR10 = list(load_dataset("cifar10").names)

SENTENCES = {name: [f"A photo of a {name} seen from far away.", f"The {name} is in the middle of the picture.",
                    f"A blurry snapshot showing one {name}."] for name in CIFAR10}
SENTENCES["cat"].append("A small furry animal with whiskers sleeping on a sofa.")
DESCRIPTORS = {name: [f"a {name}-shaped outline", "has a distinctive silhouette", "four corners", "often in motion"]
               for name in CIFAR10}


def _cli(root: Path, *args: object):
    result = run_cli(*args, root=root)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A root with cifar10/cupl@v1 and cifar10/dclip@v1, exported in CLIP_benchmark's format."""
    base = tmp_path_factory.mktemp("clip_benchmark")
    root = base / "root"
    for fmt, data in (("cupl", SENTENCES), ("dclip", DESCRIPTORS)):
        path = base / f"{fmt}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        _cli(root, "import", "cifar10", path, "--format", fmt, "--set", fmt, "--strict")
        _cli(root, "export", f"cifar10/{fmt}@v1", "--format", "clip-benchmark", "-o", base / f"{fmt}.cb.json")
    store = Store(root)
    return {"base": base, "root": root, "store": store, "classes": store.classes("cifar10")}


@pytest.fixture(scope="module")
def encoder(tiny_clip, tmp_path_factory: pytest.TempPathFactory):
    return TextEncoder(tiny_clip, tmp_path_factory.mktemp("encoder-cache"))


def _exported(world, fmt: str) -> tuple[list[str], dict[str, list[str]]]:
    prompts = json.loads((world["base"] / f"{fmt}.cb.json").read_text(encoding="utf-8"))
    names = json.loads((world["base"] / f"{fmt}.cb.classnames.json").read_text(encoding="utf-8"))
    assert list(prompts) == ["cifar10"] and list(names) == ["cifar10"]
    assert names["cifar10"] == CIFAR10 and list(prompts["cifar10"]) == CIFAR10
    return names["cifar10"], prompts["cifar10"]


def test_exported_cupl_set_gives_clip_benchmark_our_cupl_head(tiny_clip, world, encoder) -> None:
    classnames, templates = _exported(world, "cupl")
    assert templates == SENTENCES
    theirs = zsc.zero_shot_classifier(tiny_clip.model, tiny_clip.tokenizer, classnames, templates, "cpu", amp=False)
    ours = build_head("cupl", encoder=encoder, classes=world["classes"],
                      sources=[source_from_set(world["store"], "cupl@v1", world["classes"])])
    assert theirs.shape == ours.weights.shape == (64, 10)
    assert torch.allclose(theirs.float(), ours.weights, atol=1e-5, rtol=0)


def test_exported_dclip_set_gives_clip_benchmark_our_dclip_sentences(tiny_clip, world, encoder) -> None:
    classnames, templates = _exported(world, "dclip")
    assert templates["cat"] == ["cat, which is a cat-shaped outline", "cat, which has a distinctive silhouette",
                                "cat, which has four corners", "cat, which often in motion"]
    theirs = zsc.zero_shot_classifier(tiny_clip.model, tiny_clip.tokenizer, classnames, templates, "cpu", amp=False)
    ours = build_head("dclip", encoder=encoder, classes=world["classes"],
                      sources=[source_from_set(world["store"], "dclip@v1", world["classes"])])
    # CLIP_benchmark renormalises, DCLIP does not: same directions, different lengths
    assert torch.allclose(theirs.float(), F.normalize(ours.weights, dim=0), atol=1e-5, rtol=0)
    assert not torch.allclose(theirs.float(), ours.weights, atol=1e-3)


def test_template_list_gives_clip_benchmark_our_template_head(tiny_clip, world, encoder) -> None:
    _, templates, _ = load_template_set("openai80")
    raw = json.loads((Path(__file__).resolve().parents[1] / "prompts" / "clip" / "openai80.json").read_text())
    assert templates == raw["templates"] and all("{c}" in t for t in templates)  # CLIP_benchmark's {c} style
    theirs = zsc.zero_shot_classifier(tiny_clip.model, tiny_clip.tokenizer, CIFAR10, templates, "cpu", amp=False)
    ours = build_head("template", encoder=encoder, classes=world["classes"],
                      sources=[source_from_templates("openai80", world["classes"])])
    assert torch.allclose(theirs.float(), ours.weights, atol=1e-5, rtol=0)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def _accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """CLIP_benchmark 1.6.2's `accuracy`, with `.item()`: its `float(<1-element array>)` raises a
    TypeError under NumPy >= 2.4, so `evaluate` cannot finish a single-label run unpatched."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


@pytest.mark.parametrize("builder", ["cupl", "dclip"])
def test_saved_head_is_read_by_clip_benchmark_evaluate(tiny_clip, world, encoder, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, builder: str) -> None:
    monkeypatch.setattr(zsc, "accuracy", _accuracy)
    head = build_head(builder, encoder=encoder, classes=world["classes"],
                      sources=[source_from_set(world["store"], f"{builder}@v1", world["classes"])])
    path = tmp_path / f"{builder}.pt"
    save_head(head, path)
    assert torch.equal(load_head(path, classes=world["classes"], embed_dim=64).weights, head.weights)

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)) for _ in range(48)]
    images = torch.stack([tiny_clip.preprocess(p) for p in pictures])
    with torch.no_grad():
        features = tiny_clip.model.encode_image(images).float()
    predicted = (F.normalize(features, dim=-1) @ head.weights).argmax(dim=1)
    # labels: the head's own prediction for two thirds of the images, another class for the rest,
    # so that neither metric is trivially 0 or 1
    labels = predicted.clone()
    labels[::3] = (predicted[::3] + 1 + torch.arange(len(labels[::3])) % 9) % 10

    loader = torch.utils.data.DataLoader(_Images(images, labels, CIFAR10), batch_size=len(labels), shuffle=False)
    theirs = zsc.evaluate(tiny_clip.model, loader, tiny_clip.tokenizer, CIFAR10, ["a photo of a {c}."],
                          device="cpu", amp=False, load_clfs=[str(path)])
    (ours,) = evaluate_heads(features, labels, [head], 10)
    assert 0 < ours["top1"] < 1
    assert abs(ours["top1"] - 32 / 48) < 1e-9
    assert theirs["acc1"] == pytest.approx(ours["top1"], abs=1e-9)
    assert theirs["acc5"] == pytest.approx(ours["top5"], abs=1e-9)
    assert theirs["mean_per_class_recall"] == pytest.approx(ours["mean_per_class_recall"], abs=1e-9)

    # what CLIP_benchmark built from the template instead is another classifier: the file was used
    plain = zsc.evaluate(tiny_clip.model, loader, tiny_clip.tokenizer, CIFAR10, ["a photo of a {c}."],
                         device="cpu", amp=False)
    template_head = build_head("template", encoder=encoder, classes=world["classes"], sources=[])
    (template_result,) = evaluate_heads(features, labels, [template_head], 10)
    assert plain["acc1"] == pytest.approx(template_result["top1"], abs=1e-9)
