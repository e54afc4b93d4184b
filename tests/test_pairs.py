"""Confusable pairs (promptgen.clip.pairs) against brute-force references written with plain loops."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import pytest
import torch

from promptgen.clip.pairs import (PairPlan, all_pairs, check_k, load_pair_plan, pair_key, pairs_from_images,
                                  pairs_from_text, save_pair_plan)
from promptgen.errors import PromptgenError

N, C, D = 300, 12, 16


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1234)
    features = torch.randn(N, D, generator=generator) * 3.0
    head = torch.randn(D, C, generator=generator)
    labels = torch.randint(0, C, (N,), generator=generator)
    return features, head, labels


# -- brute-force references ---------------------------------------------------------------------


def topk_sets(features: torch.Tensor, head: torch.Tensor, k: int) -> list[set[int]]:
    """Each image's top-k classes, in float64 with plain Python."""
    f = features.double().numpy()
    w = head.double().numpy()
    result = []
    for row in f:
        v = row / math.sqrt(float((row * row).sum()))
        scores = [float(sum(v[d] * w[d, c] for d in range(len(v)))) for c in range(w.shape[1])]
        ranked = sorted(range(len(scores)), key=lambda c: -scores[c])
        result.append(set(ranked[:k]))
    return result


def brute_counts(features, head, k) -> Counter:
    counts = Counter()
    for top in topk_sets(features, head, k):
        for pair in itertools.combinations(sorted(top), 2):
            counts[pair] += 1
    return counts


def brute_image_plan(counts: Counter, min_count=1, max_pairs=None):
    kept = [(pair, n) for pair, n in counts.items() if n >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))
    if max_pairs is not None:
        kept = kept[:max_pairs]
    return [p for p, _ in kept], [float(n) for _, n in kept]


def brute_recall(features, head, k, labels):
    hits = labelled = 0
    for top, label in zip(topk_sets(features, head, k), labels.tolist()):
        if label < 0:
            continue
        labelled += 1
        hits += label in top
    return hits / labelled if labelled else None


def brute_text(head: torch.Tensor, partners: int):
    w = head.double().numpy()
    num = w.shape[1]
    columns = [w[:, c] / math.sqrt(float((w[:, c] ** 2).sum())) for c in range(num)]

    def cos(a, b):
        return float(sum(x * y for x, y in zip(columns[a], columns[b])))

    chosen = {}
    for i in range(num):
        others = sorted((j for j in range(num) if j != i), key=lambda j: (-cos(i, j), j))
        for j in others[:partners]:
            chosen[(min(i, j), max(i, j))] = cos(i, j)
    ordered = sorted(chosen.items(), key=lambda item: (-item[1], item[0]))
    return [p for p, _ in ordered], [s for _, s in ordered]


# -- pairs_from_images --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_images_counts_match_brute_force(data, k):
    features, head, labels = data
    plan = pairs_from_images(features, head, k, labels=labels)
    counts = brute_counts(features, head, k)
    pairs, scores = brute_image_plan(counts)
    assert plan.pairs == pairs
    assert plan.scores == scores
    assert plan.method == "images"
    assert plan.num_classes == C
    assert all(i < j for i, j in plan.pairs)
    assert sum(plan.scores) == N * k * (k - 1) // 2
    assert plan.stats["candidates"] == len(counts)
    assert plan.stats["images"] == N
    assert plan.stats["pair_instances"] == N * k * (k - 1) // 2
    assert plan.stats["labelled_images"] == N
    assert plan.stats["dropped_below_min_count"] == 0
    assert plan.stats["dropped_over_max_pairs"] == 0
    assert plan.stats["topk_recall"] == pytest.approx(brute_recall(features, head, k, labels), abs=1e-12)
    assert plan.settings == {"k": k, "min_count": 1, "max_pairs": None}


def test_images_order_is_count_then_pair(data):
    features, head, _ = data
    plan = pairs_from_images(features, head, 3)
    keys = [(-s, p) for p, s in zip(plan.pairs, plan.scores)]
    assert keys == sorted(keys)
    assert len(set(plan.pairs)) == len(plan.pairs)


def test_images_chunking_is_identical(data):
    features, head, labels = data
    whole = pairs_from_images(features, head, 4, labels=labels, min_count=2, max_pairs=30)
    chunked = pairs_from_images(features, head, 4, labels=labels, min_count=2, max_pairs=30, chunk=7)
    assert chunked.pairs == whole.pairs
    assert chunked.scores == whole.scores
    assert chunked.stats == whole.stats
    assert chunked.sha256 == whole.sha256


def test_images_recall_without_labels(data):
    features, head, _ = data
    plan = pairs_from_images(features, head, 3)
    assert plan.stats["topk_recall"] is None
    assert plan.stats["labelled_images"] == 0
    unlabelled = pairs_from_images(features, head, 3, labels=torch.full((N,), -1, dtype=torch.long), chunk=50)
    assert unlabelled.stats["topk_recall"] is None
    assert unlabelled.stats["labelled_images"] == 0
    assert unlabelled.pairs == plan.pairs


def test_images_partial_labels(data):
    features, head, labels = data
    partial = labels.clone()
    partial[::3] = -1
    partial[1::7] = -1
    labelled = int((partial >= 0).sum())
    assert 0 < labelled < N
    expected = brute_recall(features, head, 3, partial)
    for chunk in (8192, 7):
        plan = pairs_from_images(features, head, 3, labels=partial, chunk=chunk)
        assert plan.stats["labelled_images"] == labelled
        assert plan.stats["topk_recall"] == pytest.approx(expected, abs=1e-12)


def test_images_recall_is_one_when_k_is_all_classes(data):
    features, head, labels = data
    plan = pairs_from_images(features, head, C, labels=labels)
    assert plan.stats["topk_recall"] == 1.0
    assert plan.pairs == [p for p in itertools.combinations(range(C), 2)]
    assert plan.scores == [float(N)] * (C * (C - 1) // 2)


def test_images_recall_known_labels():
    # two images, 3 classes: features point straight at a class column
    head = torch.eye(3)
    features = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0]])
    plan = pairs_from_images(features, head, 2, labels=torch.tensor([1, 0]))
    assert plan.pairs == [(0, 1), (1, 2)]
    assert plan.scores == [1.0, 1.0]
    assert plan.stats["topk_recall"] == 0.5


def test_images_min_count_and_max_pairs(data):
    features, head, _ = data
    counts = brute_counts(features, head, 3)
    values = sorted(counts.values())
    min_count = values[len(values) // 2]
    below = sum(n < min_count for n in counts.values())
    assert 0 < below < len(counts)

    plan = pairs_from_images(features, head, 3, min_count=min_count)
    assert (plan.pairs, plan.scores) == brute_image_plan(counts, min_count=min_count)
    assert plan.stats["candidates"] == len(counts)
    assert plan.stats["dropped_below_min_count"] == below
    assert plan.stats["dropped_over_max_pairs"] == 0
    assert min(plan.scores) >= min_count

    kept = len(counts) - below
    plan = pairs_from_images(features, head, 3, min_count=min_count, max_pairs=5, chunk=7)
    assert (plan.pairs, plan.scores) == brute_image_plan(counts, min_count=min_count, max_pairs=5)
    assert len(plan.pairs) == 5
    assert plan.stats["candidates"] == len(counts)
    assert plan.stats["dropped_below_min_count"] == below
    assert plan.stats["dropped_over_max_pairs"] == kept - 5
    assert plan.settings == {"k": 3, "min_count": min_count, "max_pairs": 5}

    # a cap above what is left drops nothing
    plan = pairs_from_images(features, head, 3, max_pairs=10_000)
    assert plan.stats["dropped_over_max_pairs"] == 0
    assert len(plan.pairs) == len(counts)

    # min_count 0 keeps every candidate (pairs never seen are not candidates)
    plan = pairs_from_images(features, head, 3, min_count=0)
    assert len(plan.pairs) == len(counts)

    # a min_count above every count leaves nothing
    plan = pairs_from_images(features, head, 3, min_count=N + 1)
    assert plan.pairs == [] and plan.scores == []
    assert plan.stats["dropped_below_min_count"] == len(counts)


@pytest.mark.parametrize("k", [C + 1, 50, 1, 0, -2])
def test_images_bad_k(data, k):
    features, head, _ = data
    with pytest.raises(PromptgenError) as info:
        pairs_from_images(features, head, k)
    assert f"k={k}" in str(info.value)
    assert info.value.hint


def test_check_k():
    assert check_k(2, 2) == 2
    assert check_k(5, 12) == 5
    with pytest.raises(PromptgenError, match="top_k=13"):
        check_k(13, 12, what="top_k")
    with pytest.raises(PromptgenError, match="k=1 is too small"):
        check_k(1, 12)


@pytest.mark.parametrize("shape", [(N, D + 1), (N, D - 1), (D,), (2, N, D)])
def test_images_dimension_mismatch(data, shape):
    _, head, _ = data
    with pytest.raises(PromptgenError, match="do not fit a head of dimension 16"):
        pairs_from_images(torch.randn(*shape), head, 3)


def test_images_empty_features(data):
    _, head, _ = data
    with pytest.raises(PromptgenError, match="no image features"):
        pairs_from_images(torch.empty(0, D), head, 3)


@pytest.mark.parametrize("max_pairs", [0, -1])
def test_images_bad_max_pairs(data, max_pairs):
    features, head, _ = data
    with pytest.raises(PromptgenError, match=f"--max-pairs {max_pairs}"):
        pairs_from_images(features, head, 3, max_pairs=max_pairs)


def test_images_negative_min_count(data):
    features, head, _ = data
    with pytest.raises(PromptgenError, match="--min-count -1"):
        pairs_from_images(features, head, 3, min_count=-1)


def test_images_half_precision_head(data):
    features, head, labels = data
    plan = pairs_from_images(features.half(), head.half(), 3, labels=labels)
    assert sum(plan.scores) == N * 3
    assert all(i < j for i, j in plan.pairs)


# -- pairs_from_text ----------------------------------------------------------------------------


@pytest.mark.parametrize("partners", [1, 2, 3, C - 1])
def test_text_matches_brute_force(data, partners):
    _, head, _ = data
    plan = pairs_from_text(head, partners)
    pairs, scores = brute_text(head, partners)
    assert plan.pairs == pairs
    assert plan.scores == pytest.approx(scores, abs=1e-5)
    assert plan.method == "text"
    assert plan.num_classes == C
    assert plan.settings == {"partners": partners, "max_pairs": None}
    assert plan.stats["candidates"] == len(pairs)
    assert plan.stats["dropped_over_max_pairs"] == 0
    # every class has at least `partners` pairs, and no pair is repeated
    assert len(set(plan.pairs)) == len(plan.pairs)
    for c in range(C):
        assert sum(c in p for p in plan.pairs) >= partners
    if partners == C - 1:
        assert sorted(plan.pairs) == list(itertools.combinations(range(C), 2))


def test_text_scale_of_columns_does_not_matter(data):
    _, head, _ = data
    scaled = head * torch.linspace(0.1, 10.0, C)[None, :]
    assert pairs_from_text(scaled, 2).pairs == pairs_from_text(head, 2).pairs


@pytest.mark.parametrize("partners", [1, 3])
def test_text_chunking_is_identical(data, partners):
    _, head, _ = data
    whole = pairs_from_text(head, partners)
    chunked = pairs_from_text(head, partners, chunk=5)
    assert chunked.pairs == whole.pairs
    assert chunked.scores == pytest.approx(whole.scores, abs=1e-6)
    assert chunked.stats == whole.stats
    assert chunked.sha256 == whole.sha256


def test_text_max_pairs(data):
    _, head, _ = data
    pairs, scores = brute_text(head, 3)
    plan = pairs_from_text(head, 3, max_pairs=4, chunk=5)
    assert plan.pairs == pairs[:4]
    assert plan.scores == pytest.approx(scores[:4], abs=1e-5)
    assert plan.stats["candidates"] == len(pairs)
    assert plan.stats["dropped_over_max_pairs"] == len(pairs) - 4
    with pytest.raises(PromptgenError, match="--max-pairs 0"):
        pairs_from_text(head, 3, max_pairs=0)


@pytest.mark.parametrize("partners", [0, -1, C, C + 5])
def test_text_partners_out_of_range(data, partners):
    _, head, _ = data
    with pytest.raises(PromptgenError, match=f"--partners {partners} does not fit {C} classes"):
        pairs_from_text(head, partners)


def test_text_known_geometry():
    # columns at angles 0, 10, 90, 100 degrees: 0~1 and 2~3 are the nearest partners
    angles = torch.tensor([0.0, 10.0, 90.0, 100.0]) * math.pi / 180
    head = torch.stack([torch.cos(angles), torch.sin(angles)])
    plan = pairs_from_text(head, 1)
    assert plan.pairs == [(0, 1), (2, 3)]
    assert plan.scores == pytest.approx([math.cos(math.radians(10))] * 2, abs=1e-6)


# -- all_pairs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num", [2, 3, 7, 12])
def test_all_pairs(num):
    plan = all_pairs(num)
    expected = [(i, j) for i in range(num) for j in range(i + 1, num)]
    assert plan.pairs == expected
    assert len(plan.pairs) == num * (num - 1) // 2 == plan.all_pairs
    assert plan.scores == [0.0] * len(expected)
    assert plan.method == "all"
    assert plan.stats["candidates"] == len(expected)


def test_all_pairs_single_class():
    plan = all_pairs(1)
    assert plan.pairs == [] and plan.all_pairs == 0


def test_all_pairs_max_pairs():
    plan = all_pairs(C, max_pairs=10)
    assert plan.pairs == list(itertools.combinations(range(C), 2))[:10]
    assert plan.stats["dropped_over_max_pairs"] == C * (C - 1) // 2 - 10
    assert plan.settings == {"max_pairs": 10}
    assert all_pairs(C, max_pairs=1000).pairs == list(itertools.combinations(range(C), 2))
    with pytest.raises(PromptgenError):
        all_pairs(C, max_pairs=0)


# -- PairPlan, pair_key, save / load -------------------------------------------------------------


def test_pair_key():
    assert pair_key(5, 2) == "2_5"
    assert pair_key(2, 5) == "2_5"
    assert pair_key(0, 10) == "0_10"


def test_summary(data):
    features, head, labels = data
    plan = pairs_from_images(features, head, 3, labels=labels, max_pairs=20)
    summary = plan.summary()
    assert summary["all_pairs"] == C * (C - 1) // 2 == plan.all_pairs
    assert summary["classes"] == C
    assert summary["pairs"] == 20
    assert summary["method"] == "images"
    assert summary["k"] == 3 and summary["max_pairs"] == 20 and summary["min_count"] == 1
    assert summary["pairs_sha256"] == plan.sha256
    assert plan.sha256.startswith("sha256:") and len(plan.sha256) == len("sha256:") + 64
    assert summary["candidates"] == plan.stats["candidates"]
    json.dumps(summary)  # serialisable


def test_sha256_depends_on_pairs_only():
    a = PairPlan("text", 4, [(0, 1), (2, 3)], [0.5, 0.4])
    b = PairPlan("images", 4, [(0, 1), (2, 3)], [9.0, 1.0], {"k": 2})
    c = PairPlan("text", 4, [(2, 3), (0, 1)], [0.5, 0.4])
    assert a.sha256 == b.sha256 != c.sha256


def test_save_load_round_trip_images(data, tmp_path):
    features, head, labels = data
    plan = pairs_from_images(features, head, 4, labels=labels, min_count=2, max_pairs=25,
                             head_info={"kind": "zeroshot", "hash": "sha256:abc"})
    path = tmp_path / "pairs.json"
    save_pair_plan(plan, path)
    loaded = load_pair_plan(path)
    assert loaded.method == plan.method
    assert loaded.num_classes == plan.num_classes
    assert loaded.pairs == plan.pairs
    assert loaded.scores == plan.scores
    assert loaded.settings == plan.settings == {"k": 4, "min_count": 2, "max_pairs": 25}
    assert loaded.stats == plan.stats
    assert loaded.sha256 == plan.sha256
    assert loaded.summary() == plan.summary()
    data_on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert data_on_disk["format"] == "promptgen.pairs/1"
    assert data_on_disk["list"][0][:2] == list(plan.pairs[0])


def test_save_load_round_trip_text_and_all(data, tmp_path):
    _, head, _ = data
    for plan in (pairs_from_text(head, 2, max_pairs=9), all_pairs(C), all_pairs(3, max_pairs=1)):
        path = tmp_path / f"{plan.method}.json"
        save_pair_plan(plan, path)
        loaded = load_pair_plan(path)
        assert loaded.pairs == plan.pairs
        assert loaded.scores == pytest.approx(plan.scores, abs=1e-6)
        assert loaded.settings == plan.settings
        assert loaded.stats == plan.stats
        assert loaded.sha256 == plan.sha256
        assert loaded.all_pairs == plan.all_pairs


def test_tampered_pair_list_is_refused(data, tmp_path):
    features, head, _ = data
    plan = pairs_from_images(features, head, 3, max_pairs=10)
    path = tmp_path / "pairs.json"
    save_pair_plan(plan, path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    i, j, score = stored["list"][3]
    other = next(p for p in itertools.combinations(range(C), 2) if p not in plan.pairs)
    stored["list"][3] = [other[0], other[1], score]
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(PromptgenError, match="does not match its checksum"):
        load_pair_plan(path)
    # dropping a pair is also caught
    stored["list"][3] = [i, j, score]
    del stored["list"][-1]
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(PromptgenError, match="does not match its checksum"):
        load_pair_plan(path)


def test_unreadable_pair_list(tmp_path):
    path = tmp_path / "pairs.json"
    with pytest.raises(PromptgenError, match="cannot read the pair list"):
        load_pair_plan(path)
    path.write_text('{"format": "promptgen.pairs/1", "list": [[0, 1', encoding="utf-8")
    with pytest.raises(PromptgenError, match="cannot read the pair list"):
        load_pair_plan(path)
