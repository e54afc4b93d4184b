"""Builder options, head files and cache integrity at the edges: what a user gets wrong gets a
clear error before any model or image work, and nothing wrong is returned silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from promptgen.classes import load_dataset
from promptgen.clip.embed import TextEncoder
from promptgen.clip.heads import Head, build_head, load_head, save_head
from promptgen.clip.encode import encode_images
from promptgen.clip.images import ImageSet
from promptgen.clip.sources import PromptSource, source_from_templates
from promptgen.errors import PromptgenError
from tests.conftest import TINY_ARGS, run_cli

CIFAR10 = load_dataset("cifar10")


def _source(name: str, texts_per_class: list[list[str]]) -> PromptSource:
    return PromptSource(name, "set", texts_per_class, [["q"] * len(t) for t in texts_per_class])


def test_pooled_weights_with_allow_empty_fallback(tiny_clip):
    names = CIFAR10.names
    a = _source("a", [[f"a {c}"] if i else [] for i, c in enumerate(names)])
    b = _source("b", [[f"b {c}", f"bb {c}"] if i else [] for i, c in enumerate(names)])
    encoder = TextEncoder(tiny_clip, None)
    head = build_head("pooled", encoder=encoder, classes=CIFAR10, sources=[a, b], allow_empty=True,
                      source_weights=[1.0, 2.0], pool="mean")
    assert head.info["fallback_classes"] == ["airplane"]
    e = lambda texts: F.normalize(tiny_clip.model.encode_text(tiny_clip.tokenizer(texts)).detach(), dim=-1)  # noqa: E731
    expected = F.normalize(e(["a cat"]).mean(0) + 2 * e(["b cat", "bb cat"]).mean(0), dim=0)
    assert torch.allclose(head.weights[:, 3], expected, atol=1e-5)
    assert torch.allclose(head.weights[:, 0], e(["a photo of a airplane."])[0], atol=1e-5)


def test_options_of_another_builder_are_rejected(tiny_clip):
    encoder = TextEncoder(tiny_clip, None)
    source = source_from_templates("photo", CIFAR10)
    with pytest.raises(PromptgenError, match="no option zpe_mode"):
        build_head("template", encoder=encoder, classes=CIFAR10, sources=[source], zpe_mode="mad")
    with pytest.raises(PromptgenError, match="no option pool"):
        build_head("cupl", encoder=encoder, classes=CIFAR10, sources=[source], pool="mean")


@pytest.mark.parametrize("spec, message", [
    ("nosuch:openai80", "unknown builder 'nosuch'"),
    ("zpe:openai80,zpe_mod=mad", "no option 'zpe_mod'"),
    ("zpe:openai80,zpe_tau=abc", "bad value 'abc' for zpe_tau"),
    ("waffle,waffle_count=x", "bad value 'x' for waffle_count"),
    ("pooled:photo+openai80,source_weights=1", "bad value '1' for source_weights"),
    ("template:photo,allow_empty=true", "no option 'allow_empty'"),
])
def test_bad_build_specs_fail_before_any_model_loads(root, spec, message, monkeypatch):
    import promptgen.cli.evaluate as evaluate_cli

    monkeypatch.setattr(evaluate_cli, "open_clip_model", lambda *a, **k: pytest.fail("model loaded"))
    result = run_cli("eval", "cifar10", "--features", "missing.npz", "--build", spec, root=root)
    assert result.exit_code == 2
    assert message in result.output


def test_build_spec_with_a_list_value_is_parsed():
    from promptgen.cli.evaluate import parse_build_spec

    assert parse_build_spec("pooled:cupl@v1+openai80,source_weights=[1, 0.5],pool=mean") == \
        ("pooled", ["cupl@v1", "openai80"], {"source_weights": [1.0, 0.5], "pool": "mean"})


def test_edited_text_list_of_a_cache_shard_is_detected(tiny_clip, tmp_path):
    texts = ["a photo of a cat.", "a photo of a dog."]
    first = TextEncoder(tiny_clip, tmp_path).encode(texts)
    (sidecar,) = (tmp_path / "embeddings" / tiny_clip.key).glob("*.json")
    meta = json.loads(sidecar.read_text())
    meta["texts"] = list(reversed(meta["texts"]))  # valid JSON, right length, wrong rows
    sidecar.write_text(json.dumps(meta))
    second = TextEncoder(tiny_clip, tmp_path)
    assert torch.equal(second.encode(texts), first)
    assert second.stats.corrupt_shards == 1 and second.stats.encoded == 2


def test_head_files_npy_and_foreign_sidecars(tmp_path):
    head = Head(torch.randn(64, 10), {"format": "promptgen.head/1", "classes": {"names": list(CIFAR10.names),
                                                                               "hash": CIFAR10.hash}})
    save_head(head, tmp_path / "h.npy")
    assert torch.equal(load_head(tmp_path / "h.npy", CIFAR10).weights, head.weights)
    assert np.load(tmp_path / "h.npy", allow_pickle=False).shape == (64, 10)
    torch.save(torch.randn(64, 10), tmp_path / "other.pt")
    (tmp_path / "other.json").write_text(json.dumps(["a photo of a {c}."]))  # a templates file, not ours
    assert load_head(tmp_path / "other.pt", CIFAR10).weights.shape == (64, 10)
    (tmp_path / "other.json").write_text("{not json")
    assert load_head(tmp_path / "other.pt", CIFAR10).weights.shape == (64, 10)


def test_all_images_undecodable_is_a_clear_error(tiny_clip):
    def load(index):
        raise OSError("broken file")

    image_set = ImageSet("broken", ["a.png", "b.png"], [0, 1], load, "fp")
    with pytest.raises(PromptgenError, match="none of the 2 images"):
        encode_images(tiny_clip, image_set, None, show_progress=False)


def test_eval_refuses_a_head_of_another_model(root, tmp_path):
    features = tmp_path / "f.npz"
    np.savez(features, features=np.random.randn(20, 64).astype(np.float32), labels=np.arange(20) % 10)
    assert run_cli("head", "cifar10", *TINY_ARGS, "--seed", "1", "-o", tmp_path / "h1.pt", root=root).exit_code == 0
    result = run_cli("eval", "cifar10", "--features", features, "--head", tmp_path / "h1.pt", "--build", "template",
                     *TINY_ARGS, root=root)
    assert result.exit_code == 2
    assert "not the model of these features" in result.output
    ok = run_cli("eval", "cifar10", "--features", features, "--head", tmp_path / "h1.pt", root=root)
    assert ok.exit_code == 0, ok.output  # a features file from elsewhere names no model: dimension check only


def test_zpe_options_need_the_zpe_builder(root, tmp_path):
    result = run_cli("head", "cifar10", *TINY_ARGS, "--zpe-features", tmp_path / "f.npz", "-o", tmp_path / "h.pt",
                     root=root)
    assert result.exit_code == 2 and "options of the zpe builder" in result.output
