"""promptgen.clip.embed: TextEncoder must equal open_clip's encode_text exactly (context trimming,
length grouping, de-duplication, the disk cache and its corruption handling)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import promptgen.clip.embed as embed
from promptgen.clip.embed import TextEncoder, causal_text_tower
from promptgen.clip.models import CONFIG_DIR, TINY_MODEL, ClipModel, load_clip

ATOL = 1e-5
LONG_TEXT = "a photo of " + " and ".join(open_clip.IMAGENET_CLASSNAMES[100:140]) + "."


def _prompts() -> list[str]:
    templates = open_clip.OPENAI_IMAGENET_TEMPLATES[:7]
    names = [open_clip.IMAGENET_CLASSNAMES[i] for i in (0, 1, 207, 409, 954)]  # tench .. banana
    texts = [template(name) for template in templates for name in names][:34]
    texts += [LONG_TEXT, "dog", "", "un café naïve 🐶 日本の犬 — ok?", texts[0], texts[7]]
    return texts


PROMPTS = _prompts()


def _reference(clip: ClipModel, texts: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return clip.model.encode_text(clip.tokenizer(texts)).float()


def _token_lengths(clip: ClipModel, texts: list[str]) -> list[int]:
    return (clip.tokenizer(texts).argmax(dim=-1) + 1).tolist()


@pytest.fixture(scope="module")
def vit_b32():
    return load_clip("ViT-B-32", "random")


@pytest.fixture(scope="module")
def non_causal_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noncausal")
    config = json.loads((CONFIG_DIR / f"{TINY_MODEL}.json").read_text())
    config["text_cfg"]["no_causal_mask"] = True
    path = folder / "tiny-noncausal.json"
    path.write_text(json.dumps(config))
    return load_clip(str(path), "random", cache=folder / "cache")


def _with_model(clip: ClipModel, model: torch.nn.Module) -> ClipModel:
    return dataclasses.replace(clip, model=model)


# ---------------------------------------------------------------- 1. exactness


def test_prompt_set_has_the_intended_edge_cases(tiny_clip):
    assert len(PROMPTS) == 40
    assert max(_token_lengths(tiny_clip, [LONG_TEXT])) == 77  # truncated to the context
    assert len(tiny_clip.tokenizer([LONG_TEXT + " extra words"])[0]) == 77
    assert len(set(PROMPTS)) == 38


@pytest.mark.parametrize("which", ["tiny", pytest.param("vit_b32", marks=pytest.mark.slow)])
def test_encode_equals_encode_text(which, request):
    clip = request.getfixturevalue("tiny_clip" if which == "tiny" else "vit_b32")
    encoder = TextEncoder(clip, None, tokens_per_batch=512)
    assert encoder.trimming is True
    assert encoder.trim_reason == "causal text tower"
    out = encoder.encode(PROMPTS)
    reference = _reference(clip, PROMPTS)
    assert out.dtype == torch.float32
    assert out.shape == (len(PROMPTS), clip.embed_dim)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    assert encoder.stats.positions < encoder.stats.full_positions
    assert encoder.stats.full_positions == 38 * 77
    # trimming really ran short batches: less than half the full positions
    assert encoder.stats.positions * 2 < encoder.stats.full_positions
    # and it is not the plain path in disguise: the features are raw (not normalised)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(len(PROMPTS)))


def test_encode_normalized(tiny_clip):
    encoder = TextEncoder(tiny_clip, None)
    out = encoder.encode_normalized(PROMPTS[:10])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, F.normalize(_reference(tiny_clip, PROMPTS[:10]), dim=-1), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- 2. order and duplicates


def test_row_order_and_duplicates(tiny_clip):
    texts = ["b photo", "a photo", "b photo", "", "a photo", "c", "b photo"]
    encoder = TextEncoder(tiny_clip, None)
    out = encoder.encode(texts)
    unique = ["b photo", "a photo", "", "c"]
    reference = dict(zip(unique, _reference(tiny_clip, unique)))
    for row, text in enumerate(texts):
        torch.testing.assert_close(out[row], reference[text], atol=ATOL, rtol=0)
    assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[6])
    assert not torch.allclose(out[0], out[1])
    stats = encoder.stats
    assert (stats.requested, stats.unique, stats.encoded, stats.from_cache) == (7, 4, 4, 0)
    assert stats.full_positions == 4 * 77


def test_reversed_input_gives_reversed_rows(tiny_clip):
    encoder = TextEncoder(tiny_clip, None, batch_size=3)
    forward = encoder.encode(PROMPTS)
    backward = TextEncoder(tiny_clip, None, batch_size=5).encode(PROMPTS[::-1])
    torch.testing.assert_close(backward, forward.flip(0), atol=ATOL, rtol=0)


def test_empty_input(tiny_clip):
    encoder = TextEncoder(tiny_clip, None)
    out = encoder.encode([])
    assert out.shape == (0, tiny_clip.embed_dim)
    assert out.dtype == torch.float32
    assert encoder.stats.encoded == 0 and encoder.stats.batches == 0
    assert encoder.encode_normalized([]).shape == (0, tiny_clip.embed_dim)


# ---------------------------------------------------------------- 3. length grouping


def test_length_grouping_keeps_batches_short_and_exact(tiny_clip):
    texts = list(dict.fromkeys(PROMPTS))
    grouped = TextEncoder(tiny_clip, None, tokens_per_batch=128)
    one_batch = TextEncoder(tiny_clip, None, tokens_per_batch=10**9, batch_size=10**6, trim=False)
    defaults = TextEncoder(tiny_clip, None)
    out_grouped, out_one = grouped.encode(texts), one_batch.encode(texts)
    reference = _reference(tiny_clip, texts)
    torch.testing.assert_close(out_grouped, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(out_one, reference, atol=ATOL, rtol=0)

    lengths = _token_lengths(tiny_clip, texts)
    assert one_batch.stats.batches == 1
    assert one_batch.stats.positions == len(texts) * max(lengths) == len(texts) * 77
    assert grouped.stats.batches > 1
    assert grouped.stats.positions * 3 < one_batch.stats.positions
    # with the default budget too, one long prompt must not drag the short ones to 77 positions
    torch.testing.assert_close(defaults.encode(texts), reference, atol=ATOL, rtol=0)
    assert defaults.stats.positions * 3 < one_batch.stats.positions

    batches = grouped._length_grouped_batches(lengths)
    assert sorted(row for batch in batches for row in batch) == list(range(len(texts)))
    assert len(batches) == grouped.stats.batches
    assert grouped.stats.positions == sum(len(b) * max(lengths[i] for i in b) for b in batches)
    for batch in batches:  # the budget holds unless a single prompt exceeds it
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 128
    for before, after in zip(batches, batches[1:]):  # similar lengths together
        assert max(lengths[i] for i in before) <= min(lengths[i] for i in after)
    # the long prompt does not drag the short ones to 77 positions
    long_batch = next(b for b in batches if texts.index(LONG_TEXT) in b)
    assert len(long_batch) == 1


def test_batch_size_limits_prompts_per_batch(tiny_clip):
    texts = list(dict.fromkeys(PROMPTS))
    encoder = TextEncoder(tiny_clip, None, batch_size=4)
    torch.testing.assert_close(encoder.encode(texts), _reference(tiny_clip, texts), atol=ATOL, rtol=0)
    assert encoder.stats.batches == -(-len(texts) // 4)
    assert all(len(b) <= 4 for b in encoder._length_grouped_batches(_token_lengths(tiny_clip, texts)))


# ---------------------------------------------------------------- 4. towers that must not be trimmed


def test_non_causal_tower_is_not_trimmed(non_causal_clip):
    assert non_causal_clip.model.attn_mask is None
    assert causal_text_tower(non_causal_clip.model) is None
    encoder = TextEncoder(non_causal_clip, None, tokens_per_batch=128)
    assert encoder.trimming is False
    assert "not" in encoder.trim_reason and "causal" in encoder.trim_reason
    out = encoder.encode(PROMPTS)
    torch.testing.assert_close(out, _reference(non_causal_clip, PROMPTS), atol=ATOL, rtol=0)
    assert encoder.stats.positions == encoder.stats.full_positions
    # trimming would have been wrong here: padding positions change the features of a full-attention tower
    model = non_causal_clip.model
    tower = embed._TextTower(model.token_embedding, model.positional_embedding, model.transformer,
                             torch.zeros(77, 77), model.ln_final, model.text_projection, "argmax", None)
    tokens = non_causal_clip.tokenizer(PROMPTS[:4])
    with torch.inference_mode():
        trimmed = embed._encode_trimmed(tower, tokens, int(tokens.argmax(dim=-1).max()) + 1)
    assert not torch.allclose(trimmed, out[:4], atol=1e-3)


def test_trim_false_forces_the_plain_path(tiny_clip):
    encoder = TextEncoder(tiny_clip, None, trim=False, tokens_per_batch=128)
    assert encoder.trimming is False
    assert encoder.trim_reason == "disabled"
    out = encoder.encode(PROMPTS)
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)
    assert encoder.stats.positions == encoder.stats.full_positions == 38 * 77


def test_last_token_pooling_is_not_trimmed(tiny_clip):
    model = copy.deepcopy(tiny_clip.model)
    model.text_pool_type = "last"
    assert causal_text_tower(model) is None
    clip = _with_model(tiny_clip, model)
    encoder = TextEncoder(clip, None, tokens_per_batch=128)
    assert encoder.trimming is False
    out = encoder.encode(PROMPTS[:12])
    reference = _reference(clip, PROMPTS[:12])
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    # last-token pooling really differs from EOT pooling, so trimming would have changed the result
    assert not torch.allclose(reference, _reference(tiny_clip, PROMPTS[:12]), atol=1e-3)


def test_full_attention_mask_is_not_trimmed(tiny_clip):
    model = copy.deepcopy(tiny_clip.model)
    model.attn_mask = torch.zeros_like(model.attn_mask)
    assert causal_text_tower(model) is None
    clip = _with_model(tiny_clip, model)
    encoder = TextEncoder(clip, None)
    assert encoder.trimming is False
    torch.testing.assert_close(encoder.encode(PROMPTS[:8]), _reference(clip, PROMPTS[:8]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("pool_type, eos_id, expect_trim", [
    ("first", None, True), ("eos", 49407, True), ("eos", None, False), ("argmax", None, True)])
def test_pool_types(tiny_clip, pool_type, eos_id, expect_trim):
    model = copy.deepcopy(tiny_clip.model)
    model.text_pool_type = pool_type
    model.text_eos_id = eos_id
    assert (causal_text_tower(model) is not None) is expect_trim
    clip = _with_model(tiny_clip, model)
    if not expect_trim:
        return
    encoder = TextEncoder(clip, None, tokens_per_batch=128)
    assert encoder.trimming is True
    out = encoder.encode(PROMPTS)
    torch.testing.assert_close(out, _reference(clip, PROMPTS), atol=ATOL, rtol=0)
    if pool_type == "first":
        assert encoder.stats.positions == 38  # one position per prompt is all the first token needs


# ---------------------------------------------------------------- 5. the disk cache


def _shards(cache_dir: Path, clip: ClipModel) -> list[Path]:
    return sorted((cache_dir / "embeddings" / clip.key).glob("*.npy"))


def test_cache_is_reused_by_a_second_encoder(tmp_path, tiny_clip):
    first = TextEncoder(tiny_clip, tmp_path)
    out1 = first.encode(PROMPTS)
    assert first.stats.encoded == 38 and first.stats.from_cache == 0
    shards = _shards(tmp_path, tiny_clip)
    assert len(shards) == 1
    assert shards[0].with_suffix(".json").is_file()
    assert [p.name for p in (tmp_path / "embeddings").iterdir()] == [tiny_clip.key]

    second = TextEncoder(tiny_clip, tmp_path)
    out2 = second.encode(PROMPTS)
    assert torch.equal(out1, out2)
    assert second.stats.encoded == 0
    assert second.stats.from_cache == 38
    assert second.stats.batches == 0 and second.stats.corrupt_shards == 0
    torch.testing.assert_close(out2, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)


def test_cache_shard_format_has_no_pickle(tmp_path, tiny_clip):
    texts = list(dict.fromkeys(PROMPTS))
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS)
    (shard,) = _shards(tmp_path, tiny_clip)
    array = np.load(shard, allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (38, tiny_clip.embed_dim)
    meta = json.loads(shard.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["sha256"] == "sha256:" + hashlib.sha256(shard.read_bytes()).hexdigest()
    assert sorted(meta["texts"]) == sorted(texts)
    assert "un café naïve 🐶 日本の犬 — ok?" in meta["texts"]
    reference = _reference(tiny_clip, meta["texts"]).numpy()
    np.testing.assert_allclose(array, reference, atol=ATOL, rtol=0)


def test_partial_cache_hit(tmp_path, tiny_clip):
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS[:10])
    encoder = TextEncoder(tiny_clip, tmp_path)
    out = encoder.encode(PROMPTS)
    assert encoder.stats.from_cache == 10
    assert encoder.stats.encoded == 28
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)
    assert len(_shards(tmp_path, tiny_clip)) == 2
    third = TextEncoder(tiny_clip, tmp_path)
    assert torch.equal(third.encode(PROMPTS), out) and third.stats.encoded == 0


def test_another_model_does_not_reuse_the_cache(tmp_path, tiny_clip):
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS)
    other = load_clip(TINY_MODEL, "random", seed=1)
    assert other.key != tiny_clip.key
    encoder = TextEncoder(other, tmp_path)
    out = encoder.encode(PROMPTS)
    assert encoder.stats.from_cache == 0 and encoder.stats.encoded == 38
    torch.testing.assert_close(out, _reference(other, PROMPTS), atol=ATOL, rtol=0)
    assert sorted(p.name for p in (tmp_path / "embeddings").iterdir()) == sorted([tiny_clip.key, other.key])


@pytest.mark.parametrize("damage", ["flip", "truncate", "zero-row"])
def test_corrupt_shard_is_detected_and_reencoded(tmp_path, tiny_clip, damage):
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS[:6])  # the shard to damage
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS[6:])  # a healthy shard
    bad, = [s for s in _shards(tmp_path, tiny_clip)
            if PROMPTS[0] in json.loads(s.with_suffix(".json").read_text(encoding="utf-8"))["texts"]]
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[-7] ^= 0xFF  # inside the float payload: np.load alone would not notice
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-4 * tiny_clip.embed_dim:] = bytes(4 * tiny_clip.embed_dim)
    bad.write_bytes(bytes(data))

    encoder = TextEncoder(tiny_clip, tmp_path)
    out = encoder.encode(PROMPTS)
    assert encoder.stats.corrupt_shards == 1
    assert encoder.stats.encoded == 6
    assert encoder.stats.from_cache == 32
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)
    # the damaged bytes are gone: every shard on disk matches its checksum again (the re-encoded
    # texts may land under the same content-derived name)
    shards = _shards(tmp_path, tiny_clip)
    assert len(shards) == 2
    for shard in shards:
        meta = json.loads(shard.with_suffix(".json").read_text(encoding="utf-8"))
        assert meta["sha256"] == "sha256:" + hashlib.sha256(shard.read_bytes()).hexdigest()
        assert np.load(shard, allow_pickle=False).shape[0] == len(meta["texts"])

    healed = TextEncoder(tiny_clip, tmp_path)
    assert torch.equal(healed.encode(PROMPTS), out)
    assert healed.stats.encoded == 0 and healed.stats.corrupt_shards == 0


def test_shard_without_its_json_is_ignored(tmp_path, tiny_clip):
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS)
    (shard,) = _shards(tmp_path, tiny_clip)
    shard.with_suffix(".json").unlink()  # as after a crash between the .npy and the .json
    (shard.parent / "0123456789abcdef01234567.npy").write_bytes(b"junk")  # a stray file too
    encoder = TextEncoder(tiny_clip, tmp_path)
    out = encoder.encode(PROMPTS)
    assert encoder.stats.from_cache == 0
    assert encoder.stats.encoded == 38
    assert encoder.stats.corrupt_shards == 0
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)


def test_shard_rows_not_matching_texts_are_corrupt(tmp_path, tiny_clip):
    TextEncoder(tiny_clip, tmp_path).encode(PROMPTS[:5])
    (shard,) = _shards(tmp_path, tiny_clip)
    sidecar = shard.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta["texts"].append("an extra text with no row")
    sidecar.write_text(json.dumps(meta), encoding="utf-8")
    encoder = TextEncoder(tiny_clip, tmp_path)
    out = encoder.encode(PROMPTS[:5])
    assert encoder.stats.corrupt_shards == 1 and encoder.stats.encoded == 5
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS[:5]), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- 6. self-check


def test_failed_self_check_falls_back_to_encode_text(tiny_clip, monkeypatch):
    calls = []

    def broken(tower, tokens, length):
        calls.append(length)
        return torch.zeros(tokens.shape[0], tiny_clip.embed_dim)

    monkeypatch.setattr(embed, "_encode_trimmed", broken)
    encoder = TextEncoder(tiny_clip, None, tokens_per_batch=128)
    assert calls, "the self-check must exercise the trimmed path"
    assert encoder.trimming is False
    assert "self-check" in encoder.trim_reason
    calls.clear()
    out = encoder.encode(PROMPTS)
    assert calls == []
    torch.testing.assert_close(out, _reference(tiny_clip, PROMPTS), atol=ATOL, rtol=0)
    assert encoder.stats.positions == encoder.stats.full_positions


def test_slightly_wrong_trimmed_path_also_fails_the_self_check(tiny_clip, monkeypatch):
    original = embed._encode_trimmed
    monkeypatch.setattr(embed, "_encode_trimmed", lambda tower, tokens, length: original(tower, tokens, length) + 1e-3)
    encoder = TextEncoder(tiny_clip, None)
    assert encoder.trimming is False
    torch.testing.assert_close(encoder.encode(PROMPTS[:5]), _reference(tiny_clip, PROMPTS[:5]), atol=ATOL, rtol=0)
