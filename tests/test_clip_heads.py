"""Head builders against the formulas of docs/methods.md (template, cupl, dclip, waffle, zpe), recomputed here from
`encode_text` directly, on the tiny random CLIP model; planted-signal recovery; bad input;
the head file and its sidecar; the `promptgen head` CLI against the Python API."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from promptgen.classes import ClassList, load_dataset
from promptgen.clip.api import make_head
from promptgen.clip.embed import TextEncoder
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip.heads import Head, build_head, list_builders, load_head, save_head
from promptgen.clip.sources import load_template_set, source_from_set, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.formats import import_prompt_file
from promptgen.store import SetRef, Store
from tests.conftest import TINY_ARGS, run_cli

CLASSES = ["red fox", "fire truck", "violin", "sunflower", "sailboat", "teapot"]

# CuPL-style sentences: distinctive per class, mostly without the class name
SENTENCES = {
    "red fox": ["A small wild canine with rusty orange fur and a bushy white-tipped tail.",
                "It pounces on mice hidden under the snow.",
                "Pointed ears, amber eyes and a narrow black-nosed snout.",
                "A red fox trotting along the edge of a dark forest."],
    "fire truck": ["A huge vehicle with extending ladders and flashing lights.",
                   "Firefighters ride it to emergencies with the siren blaring.",
                   "Chrome fittings and hoses coiled along its side panels.",
                   "A fire truck parked in front of the station."],
    "violin": ["A wooden string instrument held under the chin and played with a bow.",
               "Four strings, f-shaped sound holes and a scroll at the end of the neck.",
               "A musician in an orchestra performing a concerto.",
               "A violin resting in an open velvet case."],
    "sunflower": ["A tall plant with a huge yellow blossom turning towards the sun.",
                  "Bright golden petals around a dark centre full of seeds.",
                  "A field of tall yellow flowers in the summer heat.",
                  "A sunflower with a bee collecting pollen."],
    "sailboat": ["A small vessel driven across the water by the wind in its white canvas.",
                 "A tall mast, a boom and ropes rigged to the deck.",
                 "Boats racing in a regatta on a breezy bay.",
                 "A sailboat anchored near a sandy beach."],
    "teapot": ["A ceramic vessel with a spout, a handle and a lid for brewing tea.",
               "Steam rising from the spout beside a cup and saucer.",
               "A porcelain pot painted with blue flowers on a kitchen table.",
               "A teapot on a tray with biscuits."],
}

# DCLIP-style descriptors covering the three sentence rules; "amber eyes" / "angular ..." start
# with the letter a but not the article: DCLIP's own rule tests the letter and gives "which is"
DESCRIPTORS = {
    "red fox": ["a small wild canine", "an orange coat", "has a bushy tail", "often seen at dusk", "amber eyes"],
    "fire truck": ["a large red vehicle", "ladders on the roof", "can spray water", "typically has sirens"],
    "violin": ["a wooden string instrument", "four strings", "may have a chin rest", "an arched top"],
    "sunflower": ["a tall plant", "yellow petals", "typically faces the sun", "angular green leaves"],
    "sailboat": ["a boat with sails", "a tall mast", "can heel in the wind", "white canvas"],
    "teapot": ["a ceramic vessel", "a spout and a handle", "often decorated", "may have a lid", "steam"],
}

FEW_TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}.", "itap of a {c}.", "a blurry photo of a {c}.",
                 "a {c} in a video game.", "art of the {c}.", "a close-up photo of the {c}."]


# -- independent reference --------------------------------------------------------------------

_REFERENCE: dict[tuple[int, str], torch.Tensor] = {}


def embed(clip, texts: list[str]) -> torch.Tensor:
    """e(t): normalised encode_text, straight from the model (not through TextEncoder), float64;
    remembered per text for the module so each text runs through the model once."""
    missing = [t for t in dict.fromkeys(texts) if (id(clip.model), t) not in _REFERENCE]
    if missing:
        with torch.no_grad():
            vectors = F.normalize(clip.model.encode_text(clip.tokenizer(missing)).double(), dim=-1)
        _REFERENCE.update({(id(clip.model), t): v for t, v in zip(missing, vectors)})
    return torch.stack([_REFERENCE[(id(clip.model), t)] for t in texts])


def ref_dclip_sentence(c: str, d: str) -> str:
    """DCLIP's make_descriptor_sentence: case-sensitive prefix tests (descriptor_strings.py)."""
    if d.startswith("a"):
        return f"{c}, which is {d}"
    if any(d.startswith(w) for w in ("has", "often", "typically", "may", "can")):
        return f"{c}, which {d}"
    if d.startswith("used"):
        return f"{c}, which is {d}"
    return f"{c}, which has {d}"


def ref_mean_head(clip, texts_per_class: list[list[str]], renormalise: bool) -> torch.Tensor:
    columns = [embed(clip, texts).mean(dim=0) for texts in texts_per_class]
    head = torch.stack(columns, dim=1)
    return F.normalize(head, dim=0) if renormalise else head


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    return actual.shape == expected.shape and torch.allclose(actual.double(), expected.double(), atol=atol, rtol=0)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def top1(features: torch.Tensor, labels: torch.Tensor, head: Head, classes: int) -> float:
    return evaluate_heads(features, labels, [head], classes)[0]["top1"]


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A root with a user dataset `toy6` and its sets: `sents` (CuPL), `desc` (DCLIP), `partial`
    (CuPL without 'teapot'), and a user dataset `inet3` of two ImageNet names and one unknown one."""
    base = tmp_path_factory.mktemp("heads")
    root = base / "root"
    class_file = base / "toy6.txt"
    class_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    store = Store(root)
    classes = store.classes("toy6", class_file)
    import_prompt_file(store, classes, write_json(base / "sents.json", SENTENCES), "cupl", "sents")
    import_prompt_file(store, classes, write_json(base / "desc.json", DESCRIPTORS), "dclip", "desc")
    partial = {k: v for k, v in SENTENCES.items() if k != "teapot"}
    import_prompt_file(store, classes, write_json(base / "partial.json", partial), "cupl", "partial")
    return SimpleNamespace(base=base, root=root, store=store, classes=store.classes("toy6"), class_file=class_file)


@pytest.fixture(scope="module")
def encoder(tiny_clip, tmp_path_factory: pytest.TempPathFactory):
    """The engine under test, with a disk cache of its own so that texts shared by tests are encoded once."""
    return TextEncoder(tiny_clip, tmp_path_factory.mktemp("encoder-cache"))


def sentences_of(world) -> list[list[str]]:
    return [SENTENCES[c] for c in world.classes.names]


def dclip_texts_of(world) -> list[list[str]]:
    return [[ref_dclip_sentence(c, d) for d in DESCRIPTORS[c]] for c in world.classes.names]


def planted_images(clip, texts_per_class: list[list[str]], per_class: int, noise: float, seed: int):
    """v_i = normalise(mean of class y_i's text embeddings + noise), labels y_i."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.stack([embed(clip, texts).mean(dim=0) for texts in texts_per_class]).float()
    labels = torch.arange(len(texts_per_class)).repeat_interleave(per_class)
    features = means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=generator)
    return F.normalize(features, dim=-1), labels


# -- 1. each builder equals its formula -----------------------------------------------------

def test_template_head_with_openai80_is_the_normalised_mean(tiny_clip, world, encoder) -> None:
    _, templates, _ = load_template_set("openai80")
    assert len(templates) == 80 and all("{c}" in t for t in templates)
    source = source_from_templates("openai80", world.classes)
    head = build_head("template", encoder=encoder, classes=world.classes, sources=[source])
    texts = [[t.replace("{c}", c) for t in templates] for c in world.classes.names]
    expected = ref_mean_head(tiny_clip, texts, renormalise=True)
    assert head.weights.shape == (64, 6) and head.weights.dtype == torch.float32
    assert close(head.weights, expected)
    assert torch.allclose(head.weights.norm(dim=0), torch.ones(6), atol=1e-5)
    assert head.info["prompt_counts"] == [80] * 6 and head.info["prompts_total"] == 480


def test_template_head_without_source_uses_a_photo_of_a(tiny_clip, world, encoder) -> None:
    head = build_head("template", encoder=encoder, classes=world.classes, sources=[])
    expected = embed(tiny_clip, [f"a photo of a {c}." for c in world.classes.names]).T
    assert close(head.weights, expected)


def test_cupl_head_is_the_normalised_mean_of_the_sentences(tiny_clip, world, encoder) -> None:
    source = source_from_set(world.store, "sents@v1", world.classes)
    assert source.texts == sentences_of(world)
    head = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source])
    assert close(head.weights, ref_mean_head(tiny_clip, sentences_of(world), renormalise=True))
    assert head.info["prompt_counts"] == [4] * 6


def test_every_repeat_counts_unless_dedupe(tiny_clip, world, encoder) -> None:
    """CuPL's head averages its samples as they occur: an imported repeat counts twice; the
    dedupe option (ours) counts it once."""
    repeated = {c: texts + texts[:1] for c, texts in SENTENCES.items()}
    import_prompt_file(world.store, world.classes, write_json(world.base / "reps.json", repeated), "cupl", "reps")
    source = source_from_set(world.store, "reps@v1", world.classes)
    assert source.counts == [5] * 6
    head = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source])
    expected = ref_mean_head(tiny_clip, [repeated[c] for c in world.classes.names], renormalise=True)
    assert close(head.weights, expected)
    once = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source], dedupe=True)
    assert close(once.weights, ref_mean_head(tiny_clip, sentences_of(world), renormalise=True))
    assert not close(once.weights, head.weights, atol=1e-4)
    assert once.info["sources"][0]["deduplicated"] == 6 and once.info["options"]["dedupe"] is True


def test_dclip_sentences_follow_the_published_rule(world) -> None:
    source = source_from_set(world.store, "desc@v1", world.classes)
    assert source.texts == dclip_texts_of(world)
    fox = source.texts[0]
    assert fox[0] == "red fox, which is a small wild canine"
    assert fox[1] == "red fox, which is an orange coat"
    assert fox[2] == "red fox, which has a bushy tail"
    assert fox[3] == "red fox, which often seen at dusk"
    assert fox[4] == "red fox, which is amber eyes"  # DCLIP tests the letter a, not the article
    grammatical = source.with_sentence_rule("grammatical", world.classes)
    assert grammatical.texts[0][4] == "red fox, which has amber eyes"  # our option: the word
    assert grammatical.texts[0][:4] == fox[:4] and grammatical.meta["sentence_rule"] == "grammatical"


def test_dclip_head_is_the_mean_without_renormalisation(tiny_clip, world, encoder) -> None:
    source = source_from_set(world.store, "desc@v1", world.classes)
    head = build_head("dclip", encoder=encoder, classes=world.classes, sources=[source])
    expected = ref_mean_head(tiny_clip, dclip_texts_of(world), renormalise=False)
    assert close(head.weights, expected)
    norms = head.weights.norm(dim=0)
    assert bool((norms < 0.999).all()), norms  # a mean of unit vectors, not renormalised


def test_pooled_count_mode_sums_every_text_of_both_sources(tiny_clip, world, encoder) -> None:
    sources = [source_from_set(world.store, "sents@v1", world.classes), source_from_templates("simple7", world.classes)]
    _, simple7, _ = load_template_set("simple7")
    head = build_head("pooled", encoder=encoder, classes=world.classes, sources=sources)
    columns = []
    for c, name in enumerate(world.classes.names):
        texts = SENTENCES[name] + [t.replace("{c}", name) for t in simple7]
        columns.append(embed(tiny_clip, texts).sum(dim=0))
    expected = F.normalize(torch.stack(columns, dim=1), dim=0)
    assert close(head.weights, expected)
    assert head.info["details"]["pool"] == "count"
    assert head.info["prompt_counts"] == [4 + 7] * 6
    # count mode is not the mean of the two source means
    mean_mode = build_head("pooled", encoder=encoder, classes=world.classes, sources=sources, pool="mean")
    assert not close(mean_mode.weights, expected, atol=1e-3)


@pytest.mark.parametrize("pool", ["mean", "count"])
def test_pooled_with_source_weights(tiny_clip, world, encoder, pool: str) -> None:
    sources = [source_from_set(world.store, "sents@v1", world.classes), source_from_templates("simple7", world.classes)]
    _, simple7, _ = load_template_set("simple7")
    weights = [2.0, 0.5]
    head = build_head("pooled", encoder=encoder, classes=world.classes, sources=sources, pool=pool,
                      source_weights=weights)
    columns = []
    for name in world.classes.names:
        a = embed(tiny_clip, SENTENCES[name])
        b = embed(tiny_clip, [t.replace("{c}", name) for t in simple7])
        if pool == "mean":
            columns.append(weights[0] * a.mean(0) + weights[1] * b.mean(0))
        else:
            columns.append(weights[0] * a.sum(0) + weights[1] * b.sum(0))
    expected = F.normalize(torch.stack(columns, dim=1), dim=0)
    assert close(head.weights, expected)
    assert head.info["details"] == {"pool": pool, "source_weights": weights}


def test_pooled_rejects_a_wrong_number_of_weights(world, encoder) -> None:
    sources = [source_from_set(world.store, "sents@v1", world.classes), source_from_templates("simple7", world.classes)]
    with pytest.raises(PromptgenError, match="3 source weights for 2 sources"):
        build_head("pooled", encoder=encoder, classes=world.classes, sources=sources, source_weights=[1, 1, 1])


def _template_file(base: Path) -> Path:
    return write_json(base / "few.json", {"templates": FEW_TEMPLATES})


def _zpe_family_reference(clip, names, templates, images, pool):
    """ZPE (docs/methods.md, zpe) over template families: returns (quality q, prompt vectors E (P, C, D))."""
    E = torch.stack([embed(clip, [t.replace("{c}", c) for c in names]) for t in templates])  # (P, C, D)
    V = F.normalize(images.double(), dim=-1)
    S = 100 * torch.einsum("nd,pcd->pnc", V, E)
    correction = S.mean(dim=1, keepdim=True)
    if pool is not None:
        M = F.normalize(pool.double(), dim=-1)
        correction = (correction + (100 * torch.einsum("nd,pcd->pnc", M, E)).mean(dim=1, keepdim=True)) / 2
    q = (S - correction).max(dim=2).values.mean(dim=1)
    return q, E


@pytest.mark.parametrize("with_pool", [False, True])
def test_zpe_softmax_family_mode(tiny_clip, world, encoder, with_pool: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(40, 64, generator=generator) * 3  # not normalised: the builder normalises
    pool = torch.randn(30, 64, generator=generator) if with_pool else None
    source = source_from_templates(str(_template_file(world.base)), world.classes)
    head = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images,
                      pool_features=pool)
    q, E = _zpe_family_reference(tiny_clip, world.classes.names, FEW_TEMPLATES, images, pool)
    w = torch.softmax(q, dim=0) / len(FEW_TEMPLATES)  # the notebook's mean over prompts of weighted logits
    details = head.info["details"]
    assert details["zpe_group"] == "family" and details["zpe_mode"] == "softmax"
    assert details["correction"] == ("pre+test" if with_pool else "test-only")
    assert len(details["families"]) == len(FEW_TEMPLATES)
    assert np.allclose(details["quality"], q.numpy(), atol=1e-3)
    assert np.allclose(details["weights"], w.numpy(), atol=1e-5)
    assert abs(sum(details["weights"]) * len(FEW_TEMPLATES) - 1) < 1e-6
    expected = torch.einsum("p,pcd->dc", w, E)  # no renormalisation
    assert close(head.weights, expected)


def test_zpe_pool_changes_the_weights(world, encoder) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(40, 64, generator=generator)
    pool = torch.randn(30, 64, generator=generator) + 2.0
    source = source_from_templates(str(_template_file(world.base)), world.classes)
    plain = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images)
    pooled = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images,
                        pool_features=pool)
    assert not np.allclose(plain.info["details"]["quality"], pooled.info["details"]["quality"], atol=1e-3)


def test_zpe_mad_selection_keeps_prompts_above_tau(tiny_clip, world, encoder) -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(40, 64, generator=generator)
    source = source_from_templates(str(_template_file(world.base)), world.classes)
    q, E = _zpe_family_reference(tiny_clip, world.classes.names, FEW_TEMPLATES, images, None)
    qn = q.numpy()
    median = np.median(qn)
    mad = np.median(np.abs(qn - median))
    z = np.sort((qn - median) / mad)[::-1]
    tau = float((z[2] + z[3]) / 2)  # exactly three prompts above tau
    head = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images,
                      zpe_mode="mad", zpe_tau=tau)
    keep = (qn - median) / mad > tau
    assert keep.sum() == 3
    # the kept prompts keep their softmax weights (over all prompts), averaged over the kept ones
    expected_weights = torch.softmax(q, dim=0).numpy() * keep / keep.sum()
    expected = torch.einsum("p,pcd->dc", torch.from_numpy(expected_weights), E)
    details = head.info["details"]
    assert details["kept"] == 3 and details["tau"] == tau
    assert abs(details["median"] - median) < 1e-3 and abs(details["mad"] - mad) < 1e-3
    assert np.allclose(details["weights"], expected_weights, atol=1e-6)
    assert not np.allclose(details["weights"], keep / 3, atol=1e-3)  # not equal weights
    assert close(head.weights, expected)
    # equal weights over the kept prompts is the paper's separate ablation, an option
    equal = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images,
                       zpe_mode="mad-equal", zpe_tau=tau)
    assert np.allclose(equal.info["details"]["weights"], keep / 3, atol=1e-7)
    assert close(equal.weights, E[torch.from_numpy(keep)].mean(dim=0).T)


def test_zpe_class_mode_on_a_description_set(tiny_clip, world, encoder) -> None:
    texts = sentences_of(world)
    images, _ = planted_images(tiny_clip, texts[:5], per_class=8, noise=0.03, seed=3)  # none planted for teapot
    source = source_from_set(world.store, "sents@v1", world.classes)
    head = build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], image_features=images)
    assert head.info["details"]["zpe_group"] == "class"  # one family: auto picks class mode

    V = images.double()
    per_class = [embed(tiny_clip, t) for t in texts]
    equal = F.normalize(torch.stack([e.mean(0) for e in per_class], dim=1), dim=0)
    assigned = (V @ equal).argmax(dim=1)
    columns, uniform = [], 0
    for c, e in enumerate(per_class):
        scores = 100 * V @ e.T
        corrected = scores - scores.mean(dim=0)
        mine = assigned == c
        if not bool(mine.any()):
            w = torch.full((len(e),), 1 / len(e), dtype=torch.float64)
            uniform += 1
        else:
            w = torch.softmax(corrected[mine].mean(dim=0), dim=0)  # summing to 1 in every class
        columns.append(w @ e)
    assert uniform >= 1
    assert head.info["details"]["classes_with_uniform_weights"] == uniform
    assert close(head.weights, torch.stack(columns, dim=1))
    # the weighting did something: not the plain mean
    assert not close(head.weights, torch.stack([e.mean(0) for e in per_class], dim=1), atol=1e-4)


def test_waffle_is_seeded_and_shares_its_random_descriptors(tiny_clip, world, encoder) -> None:
    """The draw-for-draw comparison with WaffleCLIP's generator is in test_faithful_heads.py."""
    desc = source_from_set(world.store, "desc@v1", world.classes)
    head = build_head("waffle", encoder=encoder, classes=world.classes, sources=[desc], waffle_count=4, seed=7)
    again = build_head("waffle", encoder=encoder, classes=world.classes, sources=[desc], waffle_count=4, seed=7)
    other = build_head("waffle", encoder=encoder, classes=world.classes, sources=[desc], waffle_count=4, seed=8)
    assert torch.equal(head.weights, again.weights)
    assert not close(other.weights, head.weights, atol=1e-4)
    assert head.info["prompt_counts"] == [8] * 6 and head.info["details"]["characters_from"] == "toy6/desc@v1"
    texts = head.info["details"]["example"]
    assert all(t.startswith("A photo of a red fox, which ") and t.endswith(".") for t in texts)
    assert bool((head.weights.norm(dim=0) < 0.999).all())  # a mean, not renormalised


def test_waffle_takes_only_descriptor_sets(world, encoder) -> None:
    cupl = source_from_set(world.store, "sents@v1", world.classes)
    with pytest.raises(PromptgenError, match="descriptor set"):
        build_head("waffle", encoder=encoder, classes=world.classes, sources=[cupl])
    with pytest.raises(PromptgenError, match="descriptor set"):
        build_head("waffle+gpt", encoder=encoder, classes=world.classes, sources=[cupl])


def test_waffle_gpt_mixes_random_pairs_and_the_class_descriptors(tiny_clip, world, encoder) -> None:
    desc = source_from_set(world.store, "desc@v1", world.classes)
    head = build_head("waffle+gpt", encoder=encoder, classes=world.classes, sources=[desc], seed=3)
    assert head.info["prompt_counts"] == [30] * 6  # int(2/3 * 15) * 3
    assert head.info["details"]["texts_per_class"] == 30
    # a class the descriptor set lacks (a set of another dataset, matched by name) is named, not a numpy error
    lacking = dataclasses.replace(desc, descriptors=[[] if c == 2 else d for c, d in enumerate(desc.descriptors)])
    with pytest.raises(PromptgenError, match="1 classes have no DCLIP descriptor to draw: 'violin'"):
        build_head("waffle+gpt", encoder=encoder, classes=world.classes, sources=[lacking], seed=3)


def test_eval_reports_waffle_as_the_mean_and_std_over_seeds(tiny_clip, world, encoder, tmp_path: Path) -> None:
    """WaffleCLIP reports the mean and (population) std of 7 seeds; eval --build waffle,reps=N does too."""
    features, labels = planted_images(tiny_clip, dclip_texts_of(world), per_class=10, noise=0.2, seed=9)
    np.savez(tmp_path / "f.npz", features=features.numpy(), labels=labels.numpy())
    out = tmp_path / "res.json"
    result = run_cli("eval", "toy6", "--features", tmp_path / "f.npz", "--build", "waffle:desc,reps=3,waffle_count=4",
                     *TINY_ARGS, "-o", out, root=world.root)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [h["head"] for h in report["heads"]] == [f"waffle:desc,reps=3,waffle_count=4 seed={s}" for s in range(3)]
    (summary,) = report["seed_means"]
    top1 = np.array([h["top1"] for h in report["heads"]])
    assert summary["runs"] == 3 and summary["top1"] == pytest.approx(top1.mean())
    assert summary["top1_std"] == pytest.approx(top1.std())
    for seed, row in enumerate(report["heads"]):  # each run is the builder at that seed
        head = build_head("waffle", encoder=encoder, classes=world.classes,
                          sources=[source_from_set(world.store, "desc@v1", world.classes)], waffle_count=4, seed=seed)
        assert row["top1"] == pytest.approx(top1_of(features, labels, head))
    assert "(mean of 3 seeds): top-1" in result.output


def top1_of(features: torch.Tensor, labels: torch.Tensor, head: Head) -> float:
    return float(((F.normalize(features, dim=-1) @ head.weights).argmax(dim=1) == labels).double().mean())


# -- 2. planted signal ------------------------------------------------------------------------

def test_cupl_head_recovers_planted_labels(tiny_clip, world, encoder) -> None:
    features, labels = planted_images(tiny_clip, sentences_of(world), per_class=20, noise=0.03, seed=4)
    cupl = build_head("cupl", encoder=encoder, classes=world.classes,
                      sources=[source_from_set(world.store, "sents@v1", world.classes)])
    names = build_head("template", encoder=encoder, classes=world.classes,
                       sources=[source_from_templates("name", world.classes)])
    assert names.info["prompts_total"] == 6
    derangement = [1, 2, 3, 4, 5, 0]
    shuffled = Head(cupl.weights[:, derangement], {"name": "shuffled"})
    results = evaluate_heads(features, labels, [cupl, names, shuffled], 6)
    cupl_top1, name_top1, shuffled_top1 = (r["top1"] for r in results)
    assert cupl_top1 >= 0.95
    assert name_top1 <= cupl_top1 - 0.25, (cupl_top1, name_top1)
    assert shuffled_top1 <= 0.2


def test_dclip_head_recovers_planted_labels(tiny_clip, world, encoder) -> None:
    features, labels = planted_images(tiny_clip, dclip_texts_of(world), per_class=20, noise=0.03, seed=5)
    dclip = build_head("dclip", encoder=encoder, classes=world.classes,
                       sources=[source_from_set(world.store, "desc@v1", world.classes)])
    shuffled = Head(dclip.weights[:, [5, 0, 1, 2, 3, 4]], {"name": "shuffled"})
    dclip_top1, shuffled_top1 = (r["top1"] for r in evaluate_heads(features, labels, [dclip, shuffled], 6))
    assert dclip_top1 >= 0.95
    assert shuffled_top1 <= 0.2


def test_dclip_head_from_the_shipped_set_matched_by_name(tiny_clip, tmp_path: Path, encoder) -> None:
    imagenet = load_dataset("imagenet").names
    picked = [imagenet[i] for i in (1, 100, 300, 500, 800, 900)]
    class_file = tmp_path / "inet6.txt"
    class_file.write_text("\n".join(picked) + "\n", encoding="utf-8")
    store = Store(tmp_path / "root")
    classes = store.classes("inet6", class_file)
    source = source_from_set(store, "imagenet/dclip-published@v1", classes)
    assert source.meta["matched_by"] == "name" and source.meta["version"] == 1
    assert all(source.counts)
    assert all(t.startswith(f"{c}, which ") for c, texts in zip(picked, source.texts) for t in texts)
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    assert close(head.weights, ref_mean_head(tiny_clip, source.texts, renormalise=False))
    features, labels = planted_images(tiny_clip, source.texts, per_class=15, noise=0.03, seed=6)
    assert top1(features, labels, head, 6) >= 0.95


# -- 3. bad input -----------------------------------------------------------------------------

def test_a_class_without_prompts_is_an_error_naming_it(world, encoder) -> None:
    source = source_from_set(world.store, "partial@v1", world.classes)
    with pytest.raises(PromptgenError, match="teapot") as error:
        build_head("cupl", encoder=encoder, classes=world.classes, sources=[source])
    assert "1 of 6 classes" in str(error.value)


def test_allow_empty_falls_back_to_a_photo_of_a(tiny_clip, world, encoder) -> None:
    source = source_from_set(world.store, "partial@v1", world.classes)
    head = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source], allow_empty=True)
    assert head.info["fallback_classes"] == ["teapot"]
    assert head.info["prompt_counts"] == [4, 4, 4, 4, 4, 1]
    texts = sentences_of(world)[:5] + [["a photo of a teapot."]]
    assert close(head.weights, ref_mean_head(tiny_clip, texts, renormalise=True))


def test_a_set_of_another_dataset_must_cover_the_classes(tiny_clip, tmp_path: Path, encoder) -> None:
    class_file = tmp_path / "mix.txt"
    class_file.write_text("tench\ngoldfish\nunicorn\n", encoding="utf-8")
    store = Store(tmp_path / "root")
    classes = store.classes("mix", class_file)
    source = source_from_set(store, "imagenet/dclip-published@v1", classes)
    assert source.counts[2] == 0 and source.counts[0] > 0 and source.counts[1] > 0
    with pytest.raises(PromptgenError, match="'unicorn'") as error:
        build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    assert "tench" not in str(error.value).split("fix:")[0]
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source], allow_empty=True)
    assert head.info["fallback_classes"] == ["unicorn"]
    assert close(head.weights[:, 2], embed(tiny_clip, ["a photo of a unicorn."])[0])

    other = tmp_path / "none.txt"
    other.write_text("unicorn\ngriffin\n", encoding="utf-8")
    with pytest.raises(PromptgenError, match="shares no class name"):
        source_from_set(store, "imagenet/dclip-published@v1", store.classes("none", other))


def test_zpe_needs_image_features(world, encoder) -> None:
    source = source_from_templates("simple7", world.classes)
    with pytest.raises(PromptgenError, match="image features"):
        build_head("zpe", encoder=encoder, classes=world.classes, sources=[source])
    with pytest.raises(PromptgenError, match="image features"):
        build_head("zpe", encoder=encoder, classes=world.classes, sources=[source],
                   image_features=torch.empty(0, 64))


@pytest.mark.parametrize("which", ["image_features", "pool_features"])
def test_features_of_another_dimension_are_rejected(world, encoder, which: str) -> None:
    source = source_from_templates("simple7", world.classes)
    features = {"image_features": torch.randn(5, 64), which: torch.randn(5, 32)}
    with pytest.raises(PromptgenError, match="dimension 32"):
        build_head("zpe", encoder=encoder, classes=world.classes, sources=[source], **features)


def test_pooled_needs_two_sources(world, encoder) -> None:
    source = source_from_set(world.store, "sents@v1", world.classes)
    with pytest.raises(PromptgenError, match="at least two sources"):
        build_head("pooled", encoder=encoder, classes=world.classes, sources=[source])


def test_unknown_builder_lists_the_builders(world, encoder) -> None:
    with pytest.raises(PromptgenError, match="unknown head builder 'nope'") as error:
        build_head("nope", encoder=encoder, classes=world.classes, sources=[])
    for name in ("template", "cupl", "dclip", "pooled", "zpe", "waffle"):
        assert name in list_builders()
        assert name in error.value.hint


@pytest.mark.parametrize("builder", ["cupl", "dclip"])
def test_set_builders_need_a_set(world, encoder, builder: str) -> None:
    with pytest.raises(PromptgenError, match="needs a prompt set"):
        build_head(builder, encoder=encoder, classes=world.classes, sources=[])
    with pytest.raises(PromptgenError, match="needs a prompt set"):
        build_head(builder, encoder=encoder, classes=world.classes,
                   sources=[source_from_templates("simple7", world.classes)])


# -- 4. the head file -------------------------------------------------------------------------

def test_save_and_load_head(world, encoder, tmp_path: Path) -> None:
    source = source_from_set(world.store, "sents@v1", world.classes)
    head = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source], name="mine")
    path = tmp_path / "heads" / "cupl.pt"
    sidecar = save_head(head, path)
    assert sidecar == path.with_suffix(".json")

    raw = torch.load(path, weights_only=True)
    assert type(raw) is torch.Tensor and raw.shape == (64, 6) and torch.equal(raw, head.weights)

    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    assert meta["builder"] == "cupl" and meta["name"] == "mine" and meta["file"] == "cupl.pt"
    assert meta["shape"] == [64, 6]
    assert meta["classes"]["names"] == CLASSES and meta["classes"]["hash"] == world.classes.hash
    assert meta["classes"]["count"] == 6
    records = world.store.resolve(SetRef.parse("toy6/sents@v1"))
    (set_source,) = meta["sources"]
    assert set_source["set"] == "toy6/sents@v1" and set_source["version"] == 1
    assert set_source["records_sha256"] == records.manifest["records_sha256"]
    assert set_source["records_sha256"]
    assert meta["model"]["key"] == encoder.clip.key and meta["model"]["weights"] == "random:seed=0"
    assert meta["prompt_counts"] == [4] * 6

    loaded = load_head(path, classes=world.classes, embed_dim=64)
    assert torch.equal(loaded.weights, head.weights)
    assert loaded.class_names == CLASSES and loaded.info["builder"] == "cupl"


def test_load_head_rejects_another_class_list(world, encoder, tmp_path: Path) -> None:
    source = source_from_set(world.store, "sents@v1", world.classes)
    head = build_head("cupl", encoder=encoder, classes=world.classes, sources=[source])
    path = tmp_path / "cupl.pt"
    save_head(head, path)
    with pytest.raises(PromptgenError) as error:
        load_head(path, classes=load_dataset("cifar10"))
    message = str(error.value)
    assert "'airplane'" in message and "'red fox'" in message

    reordered = ClassList(dataset="toy6b", names=tuple(reversed(CLASSES)))
    with pytest.raises(PromptgenError, match="another order"):
        load_head(path, classes=reordered)
    with pytest.raises(PromptgenError, match="dimension 64"):
        load_head(path, classes=world.classes, embed_dim=32)


def test_load_head_names_a_transposed_tensor(world, tmp_path: Path) -> None:
    path = tmp_path / "transposed.pt"
    torch.save(torch.randn(6, 64), path)  # (C, D), no sidecar
    with pytest.raises(PromptgenError, match="transposed"):
        load_head(path, classes=world.classes)
    right = tmp_path / "right.pt"
    torch.save(torch.randn(64, 6), right)
    assert load_head(right, classes=world.classes, embed_dim=64).weights.shape == (64, 6)


# -- 5. the CLI writes what the Python API returns ----------------------------------------------

def test_cli_head_equals_make_head_and_reuses_the_cache(tiny_clip, root: Path, tmp_path: Path) -> None:
    class_file = tmp_path / "toy6.txt"
    class_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    sets_file = write_json(tmp_path / "sents.json", SENTENCES)
    result = run_cli("import", "toy6", sets_file, "--format", "cupl", "--set", "sents", "--classes", class_file,
                     root=root)
    assert result.exit_code == 0, result.output

    out = tmp_path / "out" / "cupl.pt"
    args = ("head", "toy6", "--builder", "cupl", "--set", "sents@v1", *TINY_ARGS, "-o", out, "--json")
    first = run_cli(*args, root=root)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["encoding"]["encoded"] == 24 and report["encoding"]["from_cache"] == 0
    assert report["shape"] == [64, 6] and report["file"] == str(out)

    written = torch.load(out, weights_only=True)
    api = make_head("toy6", "cupl", sets=["sents@v1"], clip_model=tiny_clip, root=root)
    assert torch.allclose(written, api, atol=1e-6)
    assert close(written, ref_mean_head(tiny_clip, [SENTENCES[c] for c in CLASSES], renormalise=True))
    api_by_name = make_head("toy6", "cupl", sets=["toy6/sents@v1"], clip_model="promptgen-tiny", pretrained="random",
                            root=root, return_head=True)
    assert torch.allclose(api_by_name.weights, written, atol=1e-6)
    assert api_by_name.info["model"]["key"] == report["model"]["key"]

    second = run_cli(*args, root=root)
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["encoding"]["encoded"] == 0 and again["encoding"]["from_cache"] == 24
    assert torch.equal(torch.load(out, weights_only=True), written)
