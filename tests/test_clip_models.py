"""promptgen.clip.models: load_clip (seeded random weights, model-config JSON files, local weight
files, error messages), list_clip_models, and the `promptgen clip-models` command. No network."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch

from promptgen.clip.models import CONFIG_DIR, TINY_MODEL, ClipModel, list_clip_models, load_clip
from promptgen.errors import PromptgenError
from tests.conftest import run_cli

TEXTS = ["a photo of a dog.", "x", "", "a blurry photo of a tench, a type of fish."]


def _tiny_config() -> dict:
    return json.loads((CONFIG_DIR / f"{TINY_MODEL}.json").read_text())


def _text_features(clip: ClipModel, texts: list[str] = TEXTS) -> torch.Tensor:
    with torch.inference_mode():
        return clip.model.encode_text(clip.tokenizer(texts))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- seeded random weights


def test_random_weights_are_reproducible_from_the_seed(tiny_clip):
    torch.manual_seed(12345)  # the global RNG state must not matter
    torch.rand(10)
    again = load_clip(TINY_MODEL, "random", seed=0)
    assert again.key == tiny_clip.key
    assert again.identity == tiny_clip.identity
    assert _same_weights(again.model, tiny_clip.model)
    assert torch.equal(_text_features(again), _text_features(tiny_clip))
    assert again.embed_dim == 64 and again.context_length == 77
    assert again.weights == "random:seed=0"
    assert not again.model.training


def test_a_different_seed_gives_different_weights_and_key(tiny_clip):
    other = load_clip(TINY_MODEL, "random", seed=1)
    assert other.key != tiny_clip.key
    assert other.weights == "random:seed=1"
    assert not _same_weights(other.model, tiny_clip.model)
    assert not torch.allclose(_text_features(other), _text_features(tiny_clip))


def test_none_and_random_mean_the_same_random_weights(tiny_clip):
    for spelling in ("none", None, "RANDOM"):
        clip = load_clip(TINY_MODEL, spelling, seed=0)
        assert clip.key == tiny_clip.key
        assert _same_weights(clip.model, tiny_clip.model)


def test_describe_records_the_key_and_identity(tiny_clip):
    described = tiny_clip.describe()
    assert described["key"] == tiny_clip.key
    assert described["arch"] == TINY_MODEL
    assert described["embed_dim"] == 64
    assert len(tiny_clip.key) == 20 and all(c in "0123456789abcdef" for c in tiny_clip.key)


# ---------------------------------------------------------------- model-config JSON files


def test_model_config_json_path_loads(tmp_path, tiny_clip):
    path = tmp_path / "my-tiny.json"
    path.write_text(json.dumps(_tiny_config()))
    clip = load_clip(str(path), "random", seed=0, cache=tmp_path / "cache")
    assert clip.embed_dim == 64
    assert clip.identity["name"] == "config:my-tiny.json"
    # same config and seed as the built-in tiny model: the very same random weights
    assert _same_weights(clip.model, tiny_clip.model)
    assert torch.equal(_text_features(clip), _text_features(tiny_clip))
    # the config is registered under a content-derived name in the cache, never as a built-in name
    registered = list((tmp_path / "cache" / "model_configs").glob("user-*.json"))
    assert len(registered) == 1
    assert json.loads(registered[0].read_text()) == _tiny_config()
    # loading the same file again gives the same key
    assert load_clip(str(path), "random", seed=0, cache=tmp_path / "cache").key == clip.key


def test_model_config_key_depends_on_the_config(tmp_path):
    small = _tiny_config()
    path_a = tmp_path / "a" / "model.json"
    path_b = tmp_path / "b" / "model.json"  # same file name, different content
    path_a.parent.mkdir()
    path_b.parent.mkdir()
    path_a.write_text(json.dumps(small))
    small["text_cfg"]["width"] = 32
    small["embed_dim"] = 32
    path_b.write_text(json.dumps(small))
    clip_a = load_clip(str(path_a), "random", cache=tmp_path / "cache")
    clip_b = load_clip(str(path_b), "random", cache=tmp_path / "cache")
    assert clip_a.embed_dim == 64 and clip_b.embed_dim == 32
    assert clip_a.key != clip_b.key
    assert clip_a.identity["arch_config_sha256"] != clip_b.identity["arch_config_sha256"]
    assert clip_b.model.transformer.width == 32


def test_open_clip_config_wrapper_is_accepted(tmp_path):
    path = tmp_path / "open_clip_config.json"
    path.write_text(json.dumps({"model_cfg": _tiny_config(), "preprocess_cfg": {}}))
    clip = load_clip(str(path), "random", cache=tmp_path / "cache")
    assert clip.embed_dim == 64


@pytest.mark.parametrize("content", ['{"embed_dim": 64, "hello": 1}', "[1, 2, 3]", "not json at all {"])
def test_json_that_is_not_a_model_config_names_the_file(tmp_path, content):
    path = tmp_path / "notamodel.json"
    path.write_text(content)
    with pytest.raises(PromptgenError) as info:
        load_clip(str(path), "random", cache=tmp_path / "cache")
    assert str(path) in info.value.message
    assert info.value.hint


def test_missing_model_config_json_is_not_found(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(PromptgenError) as info:
        load_clip(str(path), "random")
    assert "not found" in info.value.message
    assert str(path) in info.value.message


# ---------------------------------------------------------------- local weight files


def test_local_weights_file_reproduces_the_model(tmp_path, tiny_clip):
    weights = tmp_path / "w.pt"
    torch.save(tiny_clip.model.state_dict(), weights)
    cache = tmp_path / "cache"
    clip = load_clip(TINY_MODEL, str(weights), cache=cache)
    assert torch.equal(_text_features(clip), _text_features(tiny_clip))
    expected_sha = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert clip.identity["weights_sha256"] == expected_sha
    assert clip.identity["weights"] == "file:w.pt"
    assert clip.weights == str(weights.resolve())
    assert "init" not in clip.identity  # no seed in the identity of trained weights
    assert clip.key != tiny_clip.key
    # loading again (hash remembered in the cache) gives the same key
    assert load_clip(TINY_MODEL, str(weights), cache=cache).key == clip.key
    assert load_clip(TINY_MODEL, str(weights)).key == clip.key  # and without a cache too


def test_modified_weights_file_changes_the_key(tmp_path, tiny_clip):
    weights = tmp_path / "w.pt"
    cache = tmp_path / "cache"
    torch.save(tiny_clip.model.state_dict(), weights)
    first = load_clip(TINY_MODEL, str(weights), cache=cache)
    other = load_clip(TINY_MODEL, "random", seed=1)
    time.sleep(0.02)  # a distinct mtime even on coarse-timestamp file systems
    torch.save(other.model.state_dict(), weights)
    second = load_clip(TINY_MODEL, str(weights), cache=cache)
    assert second.key != first.key
    assert second.identity["weights_sha256"] == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert torch.equal(_text_features(second), _text_features(other))


def test_weights_of_another_architecture_are_a_promptgen_error(tmp_path):
    config = _tiny_config()
    config["text_cfg"]["width"] = 32
    config["embed_dim"] = 32
    path = tmp_path / "narrow.json"
    path.write_text(json.dumps(config))
    narrow = load_clip(str(path), "random", cache=tmp_path / "cache")
    weights = tmp_path / "narrow.pt"
    torch.save(narrow.model.state_dict(), weights)
    with pytest.raises(PromptgenError) as info:
        load_clip(TINY_MODEL, str(weights))
    assert "narrow.pt" in info.value.message


def test_corrupt_weights_file_is_a_promptgen_error(tmp_path):
    """A file that is not a state dict at all is the user's mistake: a PromptgenError naming the
    file (the CLI prints only PromptgenErrors without a traceback), not a raw unpickling error."""
    weights = tmp_path / "broken.pt"
    weights.write_bytes(b"this is not a torch checkpoint" * 10)
    with pytest.raises(PromptgenError) as info:
        load_clip(TINY_MODEL, str(weights))
    assert "broken.pt" in info.value.message


# ---------------------------------------------------------------- errors


def test_missing_pretrained_weights_offline_fail_fast_with_a_hint():
    started = time.monotonic()
    with pytest.raises(PromptgenError) as info:
        load_clip("ViT-B-32", "openai")
    assert time.monotonic() - started < 30
    error = info.value
    assert "ViT-B-32" in error.message and "openai" in error.message
    assert "--pretrained" in error.hint
    assert "local file" in error.hint
    assert "random" in error.hint
    assert "fix:" in str(error)


def test_unknown_architecture_lists_choices():
    with pytest.raises(PromptgenError) as info:
        load_clip("ViT-Q-99", "random")
    assert "ViT-Q-99" in info.value.message
    known = set(list_clip_models())
    suggested = [name for name in known if name in info.value.hint]
    assert suggested, info.value.hint
    assert "clip-models" in info.value.hint


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(PromptgenError) as info:
        load_clip("ViT-B/32", "random")
    assert "ViT-B-32" in info.value.hint


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(PromptgenError) as info:
        load_clip("ViT-B-32", "no_such_tag")
    assert "no_such_tag" in info.value.message
    assert "openai" in info.value.hint and "laion2b_s34b_b79k" in info.value.hint


def test_tiny_model_has_no_pretrained_tags():
    with pytest.raises(PromptgenError) as info:
        load_clip(TINY_MODEL, "openai")
    assert "(none)" in info.value.hint


def test_missing_weights_file_is_not_found():
    with pytest.raises(PromptgenError) as info:
        load_clip("ViT-B-32", "/nope/w.pt")
    assert "not found" in info.value.message
    assert "/nope/w.pt" in info.value.message


# ---------------------------------------------------------------- listing and CLI


def test_list_clip_models_includes_project_and_open_clip_models():
    names = list_clip_models()
    assert TINY_MODEL in names and "ViT-B-32" in names
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_cli_clip_models_json_lists_tiny_model():
    result = run_cli("clip-models", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert TINY_MODEL in rows
    assert rows[TINY_MODEL]["pretrained"] == []
    assert "openai" in rows["ViT-B-32"]["pretrained"]


def test_cli_clip_models_templates_lists_openai80():
    result = run_cli("clip-models", "--templates", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["openai80"]["count"] == 80
    assert rows["openai80"]["sha256"]
    text = run_cli("clip-models", "--templates")
    assert text.exit_code == 0
    line = next(line for line in text.stdout.splitlines() if line.startswith("openai80"))
    assert " 80 templates" in line
