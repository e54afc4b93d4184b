"""FuDD (docs/methods.md, fudd): the per-image re-ranker against an independent per-image reference, its
one-time embedding, planted-signal recovery through the real differentiate stage (fake LLM) and
the tiny random CLIP model, the static head, the `promptgen eval/head` CLI, and the FuDD file format."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from promptgen.classes import ClassList
from promptgen.clip.embed import TextEncoder
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip.fudd import OUTSIDE_TOP_K, FuddReranker
from promptgen.clip.heads import build_head, save_head
from promptgen.clip.sources import PromptSource
from promptgen.clip.pairs import all_pairs, pair_key
from promptgen.clip.sources import source_from_set
from promptgen.errors import PromptgenError
from promptgen.formats import export_version, import_fudd_file
from promptgen.llm.cache import LLMCache
from promptgen.llm.client import LLMClient
from promptgen.testing.fake_server import FakeLLMServer
from promptgen.stages.differentiate import DifferentiateJob, run_differentiate
from promptgen.store import SetRef, Store
from promptgen.templates import load_template
from tests.conftest import TINY_ARGS

NAMES = ("zorblat", "quindle", "frommet", "plaxter", "vumble", "drissock")  # made up, no name inside another
PLANTED_PAIRS = [(0, 1), (2, 3), (4, 5)]


# -- 1. the re-ranker against an independent per-image reference ------------------------------------

def reference_fudd(features, initial, k, side_texts, vectors_of):
    """Per image, in float64: S = top-k of normalise(v) @ initial; for c in S, the texts of c over
    its pairs (c, d) with d in S, each text once; score = cos(v, mean of their vectors), or
    cos(v, initial[:, c]) without a text. Returns (S per image, scores per image, fallbacks)."""
    features, initial = features.double(), initial.double()
    tops, scores, fallbacks = [], [], 0
    for v in features:
        v = v / v.norm()
        top = torch.topk(v @ initial, k).indices.tolist()
        row = {}
        for c in top:
            texts = []
            for d in top:
                for text in side_texts.get((c, d), []):
                    if text not in texts:
                        texts.append(text)
            if texts:
                column = torch.stack([vectors_of[t].double() for t in texts]).mean(0)
            else:
                column = initial[:, c]
                fallbacks += 1
            row[c] = float(v @ column / column.norm())
        tops.append(top)
        scores.append(row)
    return tops, scores, fallbacks


def random_problem(seed: int, num_classes: int = 8, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    # columns of very different norms: the top-k uses the raw head, the fallback its cosine
    initial = torch.randn(dim, num_classes, generator=generator) * torch.linspace(0.3, 3.0, num_classes)
    side_texts: dict[tuple[int, int], list[str]] = {}
    pool = [f"text {n}" for n in range(40)]
    pick = iter(torch.randperm(len(pool), generator=generator).tolist() * 4)
    for i in range(6):  # classes 6 and 7 have no sentence at all
        for j in range(i + 1, 6):
            if (i + j) % 4 == 3:
                continue  # some pairs were never asked
            side_texts[(i, j)] = [pool[next(pick)] for _ in range(1 + (i + j) % 3)]
            side_texts[(j, i)] = [pool[next(pick)] for _ in range(1 + (i * j) % 2)] if (i + 2 * j) % 5 else []
    # a sentence of class c shared by two of its pairs, and one text used by two different classes
    for c in range(5):
        partners = [d for d in range(6) if (c, d) in side_texts]
        side_texts[(c, partners[0])].append(f"shared by class {c}")
        side_texts[(c, partners[-1])].append(f"shared by class {c}")
    side_texts[(0, 1)].append("same words, two classes")
    side_texts[(1, 0)].append("same words, two classes")
    side_texts[(2, 3)].append(side_texts[(2, 3)][0])  # repeated inside one side too
    texts = sorted({t for ts in side_texts.values() for t in ts})
    vectors_of = {t: F.normalize(torch.randn(dim, generator=generator), dim=0) for t in texts}
    return initial, side_texts, vectors_of


def test_logits_equal_the_per_image_reference() -> None:
    initial, side_texts, vectors_of = random_problem(seed=11)
    k, n = 4, 61
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(n, 16, generator=generator) * 5  # not normalised: the re-ranker normalises
    labels = torch.randint(0, 8, (n,), generator=generator)
    labels[::9] = -1  # unknown labels do not count in the recall

    reranker = FuddReranker.from_texts(initial, k, side_texts, lambda ts: torch.stack([vectors_of[t] for t in ts]))
    reranker.chunk = 7  # several chunks, the last one short
    logits = reranker.logits(features, labels)
    tops, scores, fallbacks = reference_fudd(features, initial, k, side_texts, vectors_of)

    assert logits.shape == (n, 8)
    assert fallbacks > 0  # classes 6/7 and unasked pairs take the initial column
    v = F.normalize(features.double(), dim=-1)
    for row, (top, expected) in enumerate(zip(tops, scores)):
        predicted = max(expected, key=expected.get)
        assert int(logits[row].argmax()) == predicted, row
        for c, score in expected.items():
            assert abs(float(logits[row, c]) / 100 - score) < 1e-5, (row, c, float(logits[row, c]) / 100, score)
        outside = [c for c in range(8) if c not in top]
        assert float(logits[row, outside].max()) < float(logits[row, top].min())
        for c in outside:
            assert abs(float(logits[row, c]) - (100 * float(v[row] @ initial[:, c].double()) - OUTSIDE_TOP_K)) < 1e-2
        # the outside classes keep their initial order
        order = sorted(outside, key=lambda c: -float(v[row] @ initial[:, c].double()))
        assert sorted(outside, key=lambda c: -float(logits[row, c])) == order

    report = reranker.report()
    known = labels >= 0
    hits = sum(1 for row in range(n) if labels[row] >= 0 and int(labels[row]) in tops[row])
    assert report["k"] == 4 and report["images"] == n
    assert report["fallback_columns"] == fallbacks
    assert report["fallback_fraction"] == pytest.approx(fallbacks / (n * k))
    assert report["topk_recall"] == pytest.approx(hits / int(known.sum()))
    assert report["sides"] == sum(1 for ts in side_texts.values() if ts)
    unique_units = {(c, t) for (c, _), ts in side_texts.items() for t in ts}
    assert report["unique_sentences"] == len(unique_units)


def test_a_sentence_shared_by_two_pairs_counts_once() -> None:
    """Image v = x1 - 0.3 x2 with top-4 {0, 1, 2, 3}. Class 0 says "s" (= x1) in its pairs with 1 and 2
    and "a" (= x2) with 1: counted once, cos = 0.474 and class 1 (0.575) wins; counted twice,
    cos = 0.728 and class 0 would win. Class 0's pair with 5 (outside the top-4) must not count either."""
    dim, num_classes = 8, 8
    axis = torch.eye(dim)
    initial = torch.zeros(dim, num_classes)
    for c in range(num_classes):
        initial[:, c] = (1 - 0.01 * c) * axis[0] if c < 4 else -axis[0] + 0.1 * axis[c]
    vectors_of = {"s": axis[0], "a": axis[1], "b": F.normalize(0.6 * axis[0] + 0.8 * axis[2], dim=0),
                  "c": axis[4], "d": axis[5], "z": -axis[1]}
    side_texts = {(0, 1): ["s", "a"], (0, 2): ["s"], (0, 5): ["z"], (1, 0): ["b"], (2, 0): ["c"], (3, 1): ["d"]}
    reranker = FuddReranker.from_texts(initial, 4, side_texts, lambda ts: torch.stack([vectors_of[t] for t in ts]))
    v = (axis[0] - 0.3 * axis[1])[None]
    logits = reranker.logits(v)
    tops, scores, _ = reference_fudd(v, initial, 4, side_texts, vectors_of)
    assert sorted(tops[0]) == [0, 1, 2, 3]
    assert scores[0][0] == pytest.approx(0.7 / (2 ** 0.5 * 1.09 ** 0.5))
    assert int(logits[0].argmax()) == 1
    assert float(logits[0, 0]) / 100 == pytest.approx(scores[0][0], abs=1e-5)
    assert float(logits[0, 1]) / 100 == pytest.approx(0.6 / 1.09 ** 0.5, abs=1e-5)


def test_a_top_k_class_without_sentences_keeps_its_initial_cosine() -> None:
    generator = torch.Generator().manual_seed(3)
    initial = torch.randn(12, 5, generator=generator) * torch.tensor([1.0, 4.0, 0.2, 2.0, 0.5])
    reranker = FuddReranker.from_texts(initial, 3, {}, lambda ts: pytest.fail("nothing to encode"))
    features = torch.randn(9, 12, generator=generator)
    logits = reranker.logits(features)
    v = F.normalize(features, dim=-1)
    top = (v @ initial).topk(3, dim=1).indices
    expected = (v @ F.normalize(initial, dim=0)).gather(1, top)
    assert torch.allclose(logits.gather(1, top) / 100, expected, atol=1e-5)
    assert reranker.report()["fallback_columns"] == 27 and reranker.report()["fallback_fraction"] == 1.0


def test_k_is_checked() -> None:
    initial = torch.randn(4, 3)
    with pytest.raises(PromptgenError, match="k=4"):
        FuddReranker.from_texts(initial, 4, {}, lambda ts: torch.zeros(0, 4))
    with pytest.raises(PromptgenError, match="k=1"):
        FuddReranker.from_texts(initial, 1, {}, lambda ts: torch.zeros(0, 4))
    with pytest.raises(PromptgenError, match="itself"):
        FuddReranker.from_texts(initial, 2, {(1, 1): ["x"]}, lambda ts: torch.zeros(len(ts), 4))


# -- 2. every sentence is embedded once ---------------------------------------------------------

def test_encode_is_called_once_with_the_unique_class_texts() -> None:
    initial, side_texts, vectors_of = random_problem(seed=21)
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return torch.stack([vectors_of[t] for t in texts])

    reranker = FuddReranker.from_texts(initial, 4, side_texts, encode)
    assert len(calls) == 1
    units = {(c, t) for (c, _), ts in side_texts.items() for t in ts}
    assert len(calls[0]) == len(units)
    assert Counter(calls[0]) == Counter(t for _, t in units)  # a text of two classes is one unit per class
    generator = torch.Generator().manual_seed(22)
    first = reranker.logits(torch.randn(20, 16, generator=generator))
    second = reranker.logits(torch.randn(33, 16, generator=generator))
    assert first.shape == (20, 8) and second.shape == (33, 8)
    assert len(calls) == 1


# -- the planted world: a differential set from the real stage --------------------------------------

def differentiate(store: Store, url: str, cache: Path, classes: ClassList):
    client = LLMClient("openai/test", api_base=url, cache=LLMCache(cache), progress=False)
    job = DifferentiateJob(classes, load_template("fudd"), "differential", all_pairs(len(classes)))
    return run_differentiate(job, client, store)


def embed(clip, texts: list[str]) -> torch.Tensor:
    """e(t) straight from the model, float64 (not through TextEncoder)."""
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(clip.tokenizer(list(texts))).double(), dim=-1)


def photo_head(clip) -> torch.Tensor:
    return embed(clip, [f"a photo of a {c}." for c in NAMES]).T  # (D, C), unit columns


def pair_direction(records: list[dict], clip, c: int, p: int) -> torch.Tensor:
    """D_c: normalised mean of class c's sentence embeddings from its pair with p."""
    texts = [r["text"] for r in records if r["class_index"] == c and r["other_class_index"] == p]
    assert texts
    return F.normalize(embed(clip, list(dict.fromkeys(texts))).mean(0), dim=0)


def planted_images(records: list[dict], clip, per_class: int = 40, a: float = 1.0, b: float = 1.0,
                   noise: float = 0.005, seed: int = 0):
    """Images of class c (pair partner p): v = a normalise(W0_c + W0_p) + b u + noise, with u the
    direction D_c - D_p keeping only what tells c from p in their own pair's sentences: made
    orthogonal to every column of W0 (the initial head sees the pair, never which side of it) and to
    the other planted pairs' differences D_c' - D_p' (in this random text tower the pairs' difference
    directions share a component, which would let sentences attached to the wrong pair score too).
    D_c . v - D_p . v = b |u| > 0 still tells c from p."""
    W0 = photo_head(clip)
    difference = {(c, p): pair_direction(records, clip, c, p) - pair_direction(records, clip, p, c)
                  for c, p in PLANTED_PAIRS}
    generator = torch.Generator().manual_seed(seed)
    features, labels = [], []
    for c, p in PLANTED_PAIRS:
        others = [difference[q] for q in PLANTED_PAIRS if q != (c, p)]
        basis = torch.linalg.qr(torch.cat([W0, torch.stack(others, dim=1)], dim=1)).Q
        n = F.normalize(W0[:, c] + W0[:, p], dim=0)
        for own, sign in ((c, 1.0), (p, -1.0)):
            delta = sign * difference[(c, p)]
            u = F.normalize(delta - basis @ (basis.T @ delta), dim=0)
            noise_rows = noise * torch.randn(per_class, W0.shape[0], generator=generator, dtype=torch.float64)
            features.append(a * n + b * u + noise_rows)
            labels += [own] * per_class
    return torch.cat(features).float(), torch.tensor(labels)


def shuffled_fudd_file(exported: dict, shift: int = 2) -> dict:
    """The sentences of pair {i, j} attached to the classes {i+shift, j+shift} (mod C): each planted
    pair gets another planted pair's sentences ({0,1} -> {2,3} -> {4,5} -> {0,1}), side for side."""
    out = {}
    for entry in exported.values():
        i, j = entry["classes"]
        ni, nj = (i + shift) % len(NAMES), (j + shift) % len(NAMES)
        out[pair_key(ni, nj)] = {"classes": [ni, nj], "prompt_pairs": entry["prompt_pairs"]}
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_clip):
    """A root with dataset `planted`: `differential@v1` from the differentiate stage (fake LLM,
    all 15 pairs), planted image features, and the photo template head."""
    base = tmp_path_factory.mktemp("fudd")
    root = base / "root"
    store = Store(root)
    classes = ClassList(dataset="planted", names=NAMES)
    with FakeLLMServer() as server:
        result = differentiate(store, server.url, root / "cache" / "llm", classes)
    assert result.manifest["status"] == "complete" and not result.failures
    records = store.read_records(result.info)
    features, labels = planted_images(records, tiny_clip)
    return SimpleNamespace(base=base, root=root, store=store, classes=store.classes("planted"), records=records,
                           info=result.info, features=features, labels=labels, W0=photo_head(tiny_clip))


@pytest.fixture
def world_root(world, root: Path) -> Path:
    """A private copy of the world's root for tests that write into it (the `cli` fixture's root)."""
    shutil.copytree(world.root, root)
    return root


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return TextEncoder(tiny_clip, None)


class CountingEncoder(TextEncoder):
    def __init__(self, clip) -> None:
        super().__init__(clip, None)
        self.calls: list[list[str]] = []

    def encode_normalized(self, texts):
        self.calls.append(list(texts))
        return super().encode_normalized(texts)


def test_fudd_builder_attaches_each_sentence_to_its_own_pair(world, tiny_clip) -> None:
    """build_head("fudd") on the stage's set equals the per-image reference with the sides read from
    the records (class_index, other_class_index), vectors from encode_text in float64."""
    encoder = CountingEncoder(tiny_clip)
    source = source_from_set(world.store, "differential", world.classes)
    # as written (capitalize=False) over the photo head, so the reference below reads the records
    head = build_head("fudd", encoder=encoder, classes=world.classes, sources=[source], k=3, capitalize=False,
                      initial="photo")
    record_texts = {r["text"] for r in world.records}
    sentence_calls = [call for call in encoder.calls if record_texts & set(call)]
    assert len(sentence_calls) == 1
    units = {(r["class_index"], r["text"]) for r in world.records}
    templates = [f"a photo of a {name}." for name in world.classes.names]  # for pairs without descriptions
    assert Counter(sentence_calls[0]) == Counter([t for _, t in units] + templates)
    assert head.info["details"]["unique_sentences"] == len(units) + len(templates)

    side_texts: dict[tuple[int, int], list[str]] = {}
    for r in world.records:
        side_texts.setdefault((r["class_index"], r["other_class_index"]), []).append(r["text"])
    texts = sorted({r["text"] for r in world.records})
    vectors_of = dict(zip(texts, embed(tiny_clip, texts)))
    generator = torch.Generator().manual_seed(5)
    features = torch.cat([world.features, torch.randn(40, 64, generator=generator)])
    calls_before = len(encoder.calls)
    logits = head.logits(F.normalize(features, dim=-1))
    head.logits(F.normalize(features[:10], dim=-1))
    assert len(encoder.calls) == calls_before  # scoring embeds nothing
    tops, scores, fallbacks = reference_fudd(features, world.W0, 3, side_texts, vectors_of)
    assert fallbacks == 0
    for row, (top, expected) in enumerate(zip(tops, scores)):
        assert sorted(logits[row].topk(3).indices.tolist()) == sorted(top), row
        assert int(logits[row].argmax()) == max(expected, key=expected.get), row
        for c, score in expected.items():
            assert abs(float(logits[row, c]) / 100 - score) < 1e-5, (row, c)


# -- 3. planted signal through the real stage ----------------------------------------------------

@pytest.mark.slow
def test_fudd_recovers_the_planted_pair_signal(fake_llm, root: Path, tiny_clip, encoder, tmp_path: Path) -> None:
    store = Store(root)
    classes = ClassList(dataset="planted", names=NAMES)
    result = differentiate(store, fake_llm.url, root / "cache" / "llm", classes)
    assert result.manifest["status"] == "complete"
    assert result.manifest["pairs"]["answered"] == 15 and result.failures == []
    assert fake_llm.request_count == 15
    records = store.read_records(result.info)
    assert {r["pair"] for r in records} == {pair_key(i, j) for i in range(6) for j in range(i + 1, 6)}

    features, labels = planted_images(records, tiny_clip)
    W0 = build_head("template", encoder=encoder, classes=classes, sources=[])
    assert torch.allclose(W0.weights.double(), photo_head(tiny_clip), atol=1e-5)
    # the initial head finds the pair for (nearly) every image
    top2 = (F.normalize(features, dim=-1) @ W0.weights).topk(2, dim=1).indices.sort(dim=1).values
    partner = labels ^ 1  # planted pairs are (0, 1), (2, 3), (4, 5)
    planted = torch.stack([torch.minimum(labels, partner), torch.maximum(labels, partner)], dim=1)
    assert float((top2 == planted).all(dim=1).double().mean()) >= 0.95

    source = source_from_set(store, "differential", classes)
    assert source.partners is not None
    fudd = build_head("fudd", encoder=encoder, classes=classes, sources=[source], k=2)
    assert fudd.info["details"]["pairs"] == 15 and fudd.info["details"]["k"] == 2

    # control: the same sentences, each pair's attached to another pair's classes
    out = tmp_path / "differential.fudd.json"
    export_version(store, result.info, "fudd", out)
    shuffled_file = tmp_path / "shuffled.fudd.json"
    exported = json.loads(out.read_text(encoding="utf-8"))
    shuffled_file.write_text(json.dumps(shuffled_fudd_file(exported)), encoding="utf-8")
    with pytest.raises(PromptgenError, match="do not name their class"):
        import_fudd_file(store, classes, shuffled_file, "shuffled")  # a file indexing other classes is refused
    # the control itself, built in memory: class c gets the sentences (and partner) of class c-2
    shift = [(c - 2) % len(NAMES) for c in range(len(NAMES))]
    moved = PromptSource("shuffled", "set", [source.texts[shift[c]] for c in range(len(NAMES))],
                         [source.families[shift[c]] for c in range(len(NAMES))], {},
                         partners=[[(p + 2) % len(NAMES) for p in source.partners[shift[c]]]
                                   for c in range(len(NAMES))])
    for c, p in PLANTED_PAIRS:  # the planted pairs' sentences really moved
        assert moved.texts[c] and not set(moved.texts[c]) & set(source.texts[c])
    shuffled = build_head("fudd", encoder=encoder, classes=classes, sources=[moved], k=2, name="shuffled")

    initial_r, fudd_r, shuffled_r = evaluate_heads(features, labels, [W0, fudd, shuffled], 6)
    assert initial_r["top1"] <= 0.7, initial_r["top1"]
    assert fudd_r["top1"] >= 0.95, fudd_r["top1"]
    assert fudd_r["top1"] - initial_r["top1"] >= 0.25
    assert shuffled_r["top1"] - initial_r["top1"] <= 0.1, (shuffled_r["top1"], initial_r["top1"])
    assert fudd_r["rerank"]["k"] == 2 and fudd_r["rerank"]["topk_recall"] >= 0.95
    assert fudd_r["rerank"]["images"] == len(labels)
    # a per-image head has no single matrix to save
    with pytest.raises(PromptgenError, match="fudd-static"):
        save_head(fudd, tmp_path / "fudd.pt")


# -- 4. the static head -------------------------------------------------------------------------

def static_reference(world, tiny_clip) -> torch.Tensor:
    """FuDD's static head: each class's sentences once, capitalised as str.capitalize does."""
    columns = []
    for c in range(len(NAMES)):
        texts = list(dict.fromkeys(r["text"] for r in world.records if r["class_index"] == c))
        columns.append(embed(tiny_clip, [t[:1].upper() + t[1:].lower() for t in texts]).mean(0))
    return F.normalize(torch.stack(columns, dim=1), dim=0)


def test_pair_ids_survive_repeated_sentences(world) -> None:
    """A sentence shared by two pairs is two records with their pair's ids, not renumbered as repeats."""
    from promptgen.stages.differentiate import _record_id

    texts = Counter((r["class_index"], r["text"]) for r in world.records)
    assert max(texts.values()) > 1  # the set does repeat sentences across pairs
    assert all(r["id"] == _record_id(r) for r in world.records)
    assert len({r["id"] for r in world.records}) == len(world.records)


def test_dedupe_is_refused_for_pair_sets(world, encoder) -> None:
    """dedupe would drop a sentence from its second pair; FuDD de-duplicates per image itself."""
    source = source_from_set(world.store, "differential", world.classes)
    with pytest.raises(PromptgenError, match="dedupe does not apply to differential sets"):
        build_head("fudd-static", encoder=encoder, classes=world.classes, sources=[source], dedupe=True)


def test_fudd_static_is_the_normalised_mean_of_unique_sentences(world, tiny_clip, encoder) -> None:
    expected = static_reference(world, tiny_clip)
    # the set repeats sentences across pairs, so counting them twice would be another head
    with_repeats = F.normalize(torch.stack(
        [embed(tiny_clip, [r["text"].capitalize() for r in world.records if r["class_index"] == c]).mean(0)
         for c in range(len(NAMES))], dim=1), dim=0)
    assert not torch.allclose(with_repeats, expected, atol=1e-4)
    source = source_from_set(world.store, "differential", world.classes)
    head = build_head("fudd-static", encoder=encoder, classes=world.classes, sources=[source])
    assert head.scorer is None and head.weights.shape == (64, 6)
    assert torch.allclose(head.weights.double(), expected, atol=1e-5)


def test_cli_head_fudd_static_and_fudd(cli, world, world_root: Path, tiny_clip, tmp_path: Path) -> None:
    out = tmp_path / "static.pt"
    result = cli("head", "planted", "--builder", "fudd-static", "--set", "differential", *TINY_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    written = torch.load(out, weights_only=True)
    assert type(written) is torch.Tensor and written.shape == (64, 6)
    assert torch.allclose(written.double(), static_reference(world, tiny_clip), atol=1e-5)

    result = cli("head", "planted", "--builder", "fudd", "--set", "differential", *TINY_ARGS,
                 "-o", tmp_path / "fudd.pt")
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert "promptgen eval" in result.stderr and "fudd-static" in result.stderr
    assert not (tmp_path / "fudd.pt").exists()


# -- 5. promptgen eval --build fudd ----------------------------------------------------------------

@pytest.mark.slow
def test_cli_eval_builds_fudd(cli, world, world_root: Path, tmp_path: Path, encoder) -> None:
    features_file = tmp_path / "planted.npz"
    np.savez(features_file, features=world.features.numpy(), labels=world.labels.numpy())
    out = tmp_path / "res.json"
    photo = tmp_path / "photo.pt"
    save_head(build_head("template", encoder=encoder, classes=world.classes, sources=[]), photo)
    result = cli("eval", "planted", "--features", features_file, "--build", "fudd:differential,k=3",
                 "--build", "template", "--build", "fudd:differential,k=3,initial=photo,name=explicit",
                 "--build", f"fudd:differential,k=3,initial={photo},name=from-file", *TINY_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    fudd, template, explicit, from_file = report["heads"]
    assert fudd["head"] == "fudd:differential,k=3" and fudd["info"]["builder"] == "fudd"
    assert fudd["info"]["details"]["initial"] == "authors"  # FuDD's: "A photo of a {c}." capitalised
    assert explicit["head"] == "explicit" and from_file["info"]["details"]["initial"] == str(photo)
    assert explicit["top1"] == from_file["top1"] and explicit["rerank"] == from_file["rerank"]  # both the photo head
    assert "rerank" not in template
    assert fudd["rerank"]["fallback_columns"] == 0
    rerank = explicit["rerank"]
    assert rerank["k"] == 3 and rerank["images"] == len(world.labels)
    top3 = (F.normalize(world.features.double(), dim=-1) @ world.W0).topk(3, dim=1).indices
    recall = float((top3 == world.labels[:, None]).any(dim=1).double().mean())
    assert rerank["topk_recall"] == pytest.approx(recall)
    assert rerank["fallback_columns"] == 0  # all 15 pairs were answered
    # the CLI's numbers are the library's
    source = source_from_set(world.store, "differential", world.classes)
    head = build_head("fudd", encoder=encoder, classes=world.classes, sources=[source], k=3)
    (expected,) = evaluate_heads(world.features, world.labels, [head], 6)
    assert fudd["top1"] == pytest.approx(expected["top1"]) and fudd["top5"] == pytest.approx(expected["top5"])
    assert fudd["per_class_accuracy"] == expected["per_class_accuracy"]

    bad = cli("eval", "planted", "--features", features_file, "--build", "fudd:differential,k=99", *TINY_ARGS)
    assert bad.exit_code == 2
    assert "k=99" in bad.stderr

    pooled_out = tmp_path / "pooled.json"
    pooled = cli("eval", "planted", "--features", features_file, "--build", "pooled:differential+photo",
                 *TINY_ARGS, "-o", pooled_out)
    assert pooled.exit_code == 0, pooled.output
    (entry,) = json.loads(pooled_out.read_text(encoding="utf-8"))["heads"]
    assert "rerank" not in entry and entry["info"]["builder"] == "pooled"
    assert entry["info"]["prompts_total"] == len(world.records) + len(NAMES)
    assert [s["kind"] for s in entry["info"]["sources"]] == ["set", "templates"]


# -- 6. the FuDD file format ------------------------------------------------------------------------

def test_fudd_export_import_export_is_byte_identical(cli, world, world_root: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    result = cli("export", "planted/differential@v1", "--format", "fudd", "-o", first)
    assert result.exit_code == 0, result.output
    data = json.loads(first.read_text(encoding="utf-8"))
    keys = list(data)
    assert len(keys) == 15
    assert keys == sorted(keys, key=lambda k: tuple(int(x) for x in k.split("_")))
    for key, entry in data.items():
        i, j = (int(x) for x in key.split("_"))
        assert i < j and entry["classes"] == [i, j]
        records = [r for r in world.records if r["pair"] == key]
        attributes = sorted({r["attribute_index"] for r in records})
        expected = []
        for a in attributes:
            side = {r["class_index"]: r for r in records if r["attribute_index"] == a}
            expected.append({"attr_type": side[i]["attribute"], "prompt_pair": [side[i]["text"], side[j]["text"]]})
        assert entry["prompt_pairs"] == expected
        assert all(set(p) == {"attr_type", "prompt_pair"} for p in entry["prompt_pairs"])

    result = cli("import", "planted", first, "--format", "fudd", "--set", "again", "--strict")
    assert result.exit_code == 0, result.output
    second = tmp_path / "second.json"
    result = cli("export", "planted/again@v1", "--format", "fudd", "-o", second)
    assert result.exit_code == 0, result.output
    assert second.read_bytes() == first.read_bytes()
    again = Store(world_root).read_records(Store(world_root).resolve(SetRef.parse("planted/again@v1")))
    assert [r["text"] for r in again] == [r["text"] for r in world.records]


def test_import_puts_a_reversed_pair_in_index_order(cli, world_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "reversed.json"
    path.write_text(json.dumps({"3_1": {"classes": [3, 1], "prompt_pairs": [
        {"attr_type": "shell", "prompt_pair": ["a plaxter with a ridged shell.", "a quindle with a smooth shell."]},
        {"attr_type": "legs", "prompt_pair": ["a plaxter on long legs.", "a quindle on short legs."]}]}}),
        encoding="utf-8")
    result = cli("import", "planted", path, "--format", "fudd", "--set", "rev", "--strict")
    assert result.exit_code == 0, result.output
    store = Store(world_root)
    records = store.read_records(store.resolve(SetRef.parse("planted/rev@v1")))
    assert {r["pair"] for r in records} == {"1_3"}
    assert all(r["pair_classes"] == [1, 3] for r in records)
    by_class = {c: [r["text"] for r in records if r["class_index"] == c] for c in (1, 3)}
    assert by_class[1] == ["a quindle with a smooth shell.", "a quindle on short legs."]
    assert by_class[3] == ["a plaxter with a ridged shell.", "a plaxter on long legs."]
    assert [r["other_class_index"] for r in records if r["class_index"] == 1] == [3, 3]
    exported = tmp_path / "out.json"
    assert cli("export", "planted/rev@v1", "--format", "fudd", "-o", exported).exit_code == 0
    assert json.loads(exported.read_text(encoding="utf-8")) == {"1_3": {"classes": [1, 3], "prompt_pairs": [
        {"attr_type": "shell", "prompt_pair": ["a quindle with a smooth shell.", "a plaxter with a ridged shell."]},
        {"attr_type": "legs", "prompt_pair": ["a quindle on short legs.", "a plaxter on long legs."]}]}}


GOOD_PAIR = {"classes": [0, 2], "prompt_pairs": [
    {"attr_type": "tail", "prompt_pair": ["a zorblat with a curly tail.", "a frommet with a straight tail."]}]}
SWAPPED_OR_IDENTICAL = {"classes": [0, 1], "prompt_pairs": [
    {"attr_type": "ears", "prompt_pair": ["a quindle with long ears.", "a zorblat with short ears."]},
    {"attr_type": "size", "prompt_pair": ["a small animal.", "A small animal!"]}]}


@pytest.mark.parametrize("content, needle", [
    ("{not json", "as JSON"),
    ([{"0_1": GOOD_PAIR}], "not a JSON object"),
    ({"a_b": GOOD_PAIR}, "'a_b'"),
    ({"0_9": {**GOOD_PAIR, "classes": [0, 9]}}, "planted has 6 classes"),
    ({"0_2": {**GOOD_PAIR, "classes": [0, 3]}}, "disagree"),
    ({"0_1": SWAPPED_OR_IDENTICAL}, "no usable pair"),
    # JSON true is not the class index 1 (Python's bool is an int): must not become pair "0_True"
    ({"0_1": {"classes": [True, 0], "prompt_pairs": [
        {"attr_type": "ears", "prompt_pair": ["a quindle with long ears.", "a zorblat with short ears."]}]}}, "'0_1'"),
], ids=["not-json", "list", "bad-key", "out-of-range", "classes-disagree", "only-rejected", "classes-bool"])
def test_import_rejects_files_with_nothing_usable(cli, world_root: Path, tmp_path: Path, content, needle) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    result = cli("import", "planted", path, "--format", "fudd", "--set", "bad", "--filter-attributes")
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and needle in result.stderr, result.stderr
    assert Store(world_root).list_versions("planted", "bad") == []


@pytest.mark.parametrize("extra", [
    {"a_b": GOOD_PAIR}, {"1_4": {**GOOD_PAIR, "classes": [1, 5]}},
    {"0_1": SWAPPED_OR_IDENTICAL}, {"2_0": GOOD_PAIR},
], ids=["bad-key", "classes-disagree", "only-rejected", "duplicate-pair"])
def test_import_keeps_what_fits_and_strict_fails(cli, world_root: Path, tmp_path: Path, extra: dict) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"0_2": GOOD_PAIR, **extra}), encoding="utf-8")
    strict = cli("import", "planted", path, "--format", "fudd", "--set", "mixed", "--strict")
    assert strict.exit_code == 2, strict.output
    assert "does not fit" in strict.stderr
    store = Store(world_root)
    assert store.list_versions("planted", "mixed") == []

    result = cli("import", "planted", path, "--format", "fudd", "--set", "mixed", "--json", "--filter-attributes")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["import"]["pairs"] == 1 and manifest["counts"]["records"] == 2
    records = store.read_records(store.resolve(SetRef.parse("planted/mixed@v1")))
    assert [(r["pair"], r["class_index"], r["text"]) for r in records] == [
        ("0_2", 0, "a zorblat with a curly tail."), ("0_2", 2, "a frommet with a straight tail.")]
    problems = manifest["import"]["bad_keys"] + manifest["import"]["pairs_without_usable_attributes"] \
        + manifest["import"]["duplicated_keys"]
    assert len(problems) == 1
    if extra == {"0_1": SWAPPED_OR_IDENTICAL}:
        assert manifest["import"]["pairs_without_usable_attributes"] == ["0_1"]
        assert manifest["rejected"]["swapped"] == 1 and manifest["rejected"]["identical"] == 1
        assert sum(manifest["rejected"].values()) == 2


def test_import_counts_rejected_attributes_of_a_kept_pair(cli, world_root: Path, tmp_path: Path) -> None:
    entry = {"classes": [0, 1], "prompt_pairs": [
        {"attr_type": "tail", "prompt_pair": ["a zorblat with a curly tail.", "a quindle with a straight tail."]},
        *SWAPPED_OR_IDENTICAL["prompt_pairs"]]}
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"0_1": entry}), encoding="utf-8")
    strict = cli("import", "planted", path, "--format", "fudd", "--set", "partial", "--strict")
    assert strict.exit_code == 2 and "rejected" in strict.stderr
    result = cli("import", "planted", path, "--format", "fudd", "--set", "partial", "--json", "--filter-attributes")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["rejected"]["swapped"] == 1 and manifest["rejected"]["identical"] == 1
    assert manifest["counts"]["records"] == 2 and manifest["import"]["pairs_without_usable_attributes"] == []
    # by default FuDD's attributes are kept as published (their heads use every one), only counted
    published = cli("import", "planted", path, "--format", "fudd", "--set", "published", "--json")
    manifest = json.loads(published.stdout)
    assert manifest["counts"]["records"] == 6 and manifest["filter_attributes"] is False
    assert manifest["rejected"]["swapped"] == 1 and manifest["rejected"]["identical"] == 1
    assert "flagged swapped: kept as published" in cli("import", "planted", path, "--format", "fudd",
                                                       "--set", "published").stderr


def test_export_of_a_set_without_pairs_fails(cli, world_root: Path, tmp_path: Path, encoder) -> None:
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({name: [f"A photo of a {name}."] for name in NAMES}), encoding="utf-8")
    assert cli("import", "planted", cupl, "--format", "cupl", "--set", "plain").exit_code == 0
    out = tmp_path / "plain.fudd.json"
    result = cli("export", "planted/plain@v1", "--format", "fudd", "-o", out)
    assert result.exit_code == 2
    assert "only differential sets export as fudd" in result.stderr
    assert not out.exists()
    # nor does the fudd builder accept it
    store = Store(world_root)
    classes = store.classes("planted")
    with pytest.raises(PromptgenError, match="take differential sets"):
        build_head("fudd", encoder=encoder, classes=classes, sources=[source_from_set(store, "plain", classes)])


def test_make_head_refuses_to_return_a_per_image_head_as_a_tensor(root, tiny_clip):
    from promptgen.classes import load_dataset
    from promptgen.clip import make_head
    from promptgen.store import Store

    path = root / "fudd.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"3_5": {"classes": [3, 5], "prompt_pairs": [
        {"attr_type": "size", "prompt_pair": ["a photo of a cat, small.", "a photo of a dog, larger."]}]}}))
    import_fudd_file(Store(root), load_dataset("cifar10"), path, "differential")
    with pytest.raises(PromptgenError, match="re-ranks each image"):
        make_head("cifar10", "fudd", sets=["differential"], clip_model=tiny_clip, root=root)
    head = make_head("cifar10", "fudd", sets=["differential"], clip_model=tiny_clip, root=root, return_head=True, k=3)
    assert head.scorer is not None and head.logits(torch.randn(4, 64)).shape == (4, 10)


def test_fudd_refuses_sources_without_pairs(root, tiny_clip):
    from promptgen.classes import load_dataset
    from promptgen.clip.sources import PromptSource

    classes = load_dataset("cifar10")
    plain = PromptSource("cifar10/cupl@v1", "set", [[f"a photo of a {c}."] for c in classes.names],
                         [["q"] for _ in classes.names])
    with pytest.raises(PromptgenError, match="cifar10/cupl@v1 has none"):
        build_head("fudd", encoder=TextEncoder(tiny_clip, None), classes=classes, sources=[plain])
