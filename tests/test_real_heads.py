"""REAL-Prompt heads (`real`, `synonym-ensemble`, docs/methods.md, real) against independent
recomputations on the tiny random CLIP model: the chosen names substituted into templates, CuPL
sentences and DCLIP descriptors; ZPE as the base; planted-signal recovery; the CLI and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from promptgen.clip.embed import TextEncoder
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip.heads import build_head
from promptgen.clip.sources import PromptSource, load_template_set, source_from_set, source_from_templates
from promptgen.errors import PromptgenError
from promptgen.formats import import_prompt_file
from promptgen.rename import RENAME_FORMAT, choose_names, replace_name
from promptgen.stages.synonyms import official_name_records
from promptgen.stages.synonyms import load_candidates
from promptgen.store import Store, make_record
from tests.conftest import TINY_ARGS

CLASSES = ["zqxv", "automobile", "fire truck", "honda accord", "teapot", "violin"]

# LLM-style synonyms: "honda" is a subset of "honda accord" (rejected by `subset`), "kettle" is
# shared by teapot and violin (rejected by `ambiguous`); by Zipf frequency dog > zqxv,
# car > automobile > motorcar, fire engine > fire truck, honda > honda accord, kettle > teapot,
# violin > fiddle, violin > kettle
SYNONYMS = {"zqxv": ["dog"], "automobile": ["car", "motorcar"], "fire truck": ["fire engine"],
            "honda accord": ["honda"], "teapot": ["kettle"], "violin": ["fiddle", "kettle"]}
CHOSEN_FREQUENCY = ["dog", "car", "fire engine", "honda accord", "teapot", "violin"]
CHOSEN_NO_FILTERS = ["dog", "car", "fire engine", "honda", "kettle", "violin"]
KEPT_NAMES = [["zqxv", "dog"], ["automobile", "car", "motorcar"], ["fire truck", "fire engine"],
              ["honda accord"], ["teapot"], ["violin", "fiddle"]]

# CuPL sentences naming the class in several spellings (case, hyphen, underscore)
SENTENCES = {
    "zqxv": ["a zqxv chasing a ball.", "A ZQXV asleep on the sofa."],
    "automobile": ["a photo of a automobile on a road.", "An Automobile parked in a garage.",
                   "the AUTOMOBILE has four wheels."],
    "fire truck": ["a Fire-Truck with a long ladder.", "A fire truck racing down the street.",
                   "firefighters ride the fire_truck to work."],
    "honda accord": ["a honda accord sedan.", "a Honda-Accord in traffic."],
    "teapot": ["a teapot on a table."],
    "violin": ["a violin in a velvet case."],
}
# the same sentences with the frequency scorer's names, written out by hand
SENTENCES_RENAMED = {
    "zqxv": ["a dog chasing a ball.", "A dog asleep on the sofa."],
    "automobile": ["a photo of a car on a road.", "A car parked in a garage.", "the car has four wheels."],  # article follows the name
    "fire truck": ["a fire engine with a long ladder.", "A fire engine racing down the street.",
                   "firefighters ride the fire engine to work."],
    "honda accord": SENTENCES["honda accord"],
    "teapot": SENTENCES["teapot"],
    "violin": SENTENCES["violin"],
}
DESCRIPTORS = {
    "zqxv": ["four legs", "a wagging tail"],
    "automobile": ["four wheels", "a steering wheel"],
    "fire truck": ["a long ladder", "flashing lights"],
    "honda accord": ["a sedan body"],
    "teapot": ["a spout"],
    "violin": ["four strings"],
}
# "{c}, which (is|has) {d}" with the frequency scorer's names, by hand
DESCRIPTORS_RENAMED = {
    "zqxv": ["dog, which has four legs", "dog, which is a wagging tail"],
    "automobile": ["car, which has four wheels", "car, which is a steering wheel"],
    "fire truck": ["fire engine, which is a long ladder", "fire engine, which has flashing lights"],
    "honda accord": ["honda accord, which is a sedan body"],
    "teapot": ["teapot, which is a spout"],
    "violin": ["violin, which has four strings"],
}

# planted signal: made-up official names, real words as synonyms
PLANTED = {"zqxv": "dog", "brmlk": "violin", "tqwop": "teapot", "vxkrn": "sunflower", "plimq": "sailboat",
           "gwzth": "castle", "kfrud": "bicycle", "snoxl": "car"}


# -- independent reference --------------------------------------------------------------------

_REFERENCE: dict[tuple[int, str], torch.Tensor] = {}


def embed(clip, texts: list[str]) -> torch.Tensor:
    """e(t) straight from the model (not through TextEncoder), float64, remembered per text."""
    missing = [t for t in dict.fromkeys(texts) if (id(clip.model), t) not in _REFERENCE]
    if missing:
        with torch.no_grad():
            vectors = F.normalize(clip.model.encode_text(clip.tokenizer(missing)).double(), dim=-1)
        _REFERENCE.update({(id(clip.model), t): v for t, v in zip(missing, vectors)})
    return torch.stack([_REFERENCE[(id(clip.model), t)] for t in texts])


def ref_head(clip, texts_per_class: list[list[str]], renormalise: bool = True) -> torch.Tensor:
    head = torch.stack([embed(clip, texts).mean(dim=0) for texts in texts_per_class], dim=1)
    return F.normalize(head, dim=0) if renormalise else head


def formatted(templates: list[str], names_per_class: list[list[str]]) -> list[list[str]]:
    """Every name of a class in every template, names outer (the order does not change a mean)."""
    return [[t.replace("{c}", name) for name in names for t in templates] for names in names_per_class]


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    return actual.shape == expected.shape and torch.allclose(actual.double(), expected.double(), atol=atol, rtol=0)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_synonyms(store: Store, classes, synonyms: dict[str, list[str]], set_name: str = "synonyms"):
    """A synonyms set as the LLM route writes it: the official names plus kind-synonym records."""
    records = official_name_records(classes, "synonyms")
    for index, name in enumerate(classes.names):
        for position, text in enumerate(synonyms.get(name, [])):
            records.append(make_record(class_index=index, class_name=name, stage="synonyms", kind="synonym",
                                       text=text, template="synonyms", sample_index=0, request_key=None,
                                       model="fake", source="llm", position=position))
    records.sort(key=lambda r: (r["class_index"], r["source"] != "official"))
    manifest = {"stage": "synonyms", "source": "llm", "text_kind": "synonym",
                "classes": {"count": len(classes), "hash": classes.hash}}
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes)


def make_dataset(root: Path, base: Path, dataset: str, names: list[str]):
    class_file = base / f"{dataset}.txt"
    class_file.write_text("\n".join(names) + "\n", encoding="utf-8")
    store = Store(root)
    return store, store.classes(dataset, class_file)


def planted_images(clip, texts_per_class: list[list[str]], per_class: int, noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    means = torch.stack([embed(clip, texts).mean(dim=0) for texts in texts_per_class]).float()
    labels = torch.arange(len(texts_per_class)).repeat_interleave(per_class)
    features = means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=generator)
    return F.normalize(features, dim=-1), labels


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Dataset `realx` with sets `synonyms`, `cupl` (CuPL import), `desc` (DCLIP import)."""
    base = tmp_path_factory.mktemp("real")
    store, classes = make_dataset(base / "root", base, "realx", CLASSES)
    write_synonyms(store, classes, SYNONYMS)
    import_prompt_file(store, classes, write_json(base / "cupl.json", SENTENCES), "cupl", "cupl")
    import_prompt_file(store, classes, write_json(base / "desc.json", DESCRIPTORS), "dclip", "desc")
    return SimpleNamespace(base=base, store=store, classes=classes,
                           synonyms=source_from_set(store, "synonyms", classes),
                           cupl=source_from_set(store, "cupl", classes),
                           desc=source_from_set(store, "desc", classes),
                           simple7=source_from_templates("simple7", classes),
                           templates=load_template_set("simple7")[1])


@pytest.fixture(scope="module")
def encoder(tiny_clip, tmp_path_factory: pytest.TempPathFactory):
    return TextEncoder(tiny_clip, tmp_path_factory.mktemp("real-encoder-cache"))


def build(world, encoder, builder: str, sources: list, **options):
    """Most tests here are about scorers: they keep our `ambiguous` filter on (the real builder's own
    default is REAL's rule alone, see test_real_default_is_reals_rule_alone) and take margin 0, REAL's
    walk as it is (the frequency scorer's default margin: tests/test_counts_sets.py)."""
    if builder == "real":
        options.setdefault("filters", "ambiguous+subset")
        options.setdefault("margin", 0.0)
    return build_head(builder, encoder=encoder, classes=world.classes, sources=sources, **options)


def test_real_default_is_reals_rule_alone(tiny_clip, world, encoder) -> None:
    real = build_head("real", encoder=encoder, classes=world.classes, sources=[world.synonyms, world.simple7],
                      scorer="frequency", margin=0.0)
    assert real.info["details"]["filters"] == ["subset"]
    # "kettle" also names the violin: only our ambiguous filter would keep "teapot"
    assert real.info["details"]["names"]["teapot"] == "kettle"
    assert "honda accord" not in real.info["details"]["names"]  # REAL rejects a subset name


# -- 0. the synonyms set as written is a synonyms set -------------------------------------------

def test_synonyms_set_is_accepted_by_load_candidates_and_sources(world) -> None:
    candidates, info = load_candidates(world.store, "synonyms", world.classes)
    assert info.manifest["text_kind"] == "synonym"
    assert [[c.name for c in per_class] for per_class in candidates] == \
        [[c] + SYNONYMS[c] for c in CLASSES]
    assert world.synonyms.meta["text_kind"] == "synonym" and world.synonyms.kind == "set"
    assert world.synonyms.texts == [[c] + SYNONYMS[c] for c in CLASSES]
    result = choose_names(world.classes, candidates, "frequency")
    assert result.chosen == CHOSEN_FREQUENCY
    assert choose_names(world.classes, candidates, "frequency", filters=()).chosen == CHOSEN_NO_FILTERS
    assert choose_names(world.classes, candidates, "first").chosen == CLASSES


# -- 1. exactness -------------------------------------------------------------------------------

def test_real_with_scorer_first_equals_the_template_head(world, encoder) -> None:
    template = build(world, encoder, "template", [world.simple7])
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="first")
    assert real.weights.shape == (64, 6)
    assert torch.allclose(real.weights, template.weights, atol=1e-6, rtol=0)
    assert real.info["details"]["renamed"] == 0 and real.info["details"]["names"] == {}
    # without another source, the photo template, as the template builder's default
    alone = build(world, encoder, "real", [world.synonyms], scorer="first")
    photo = build(world, encoder, "template", [])
    assert torch.allclose(alone.weights, photo.weights, atol=1e-6, rtol=0)


def test_real_frequency_substitutes_the_chosen_names(tiny_clip, world, encoder) -> None:
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="frequency")
    expected = ref_head(tiny_clip, formatted(world.templates, [[n] for n in CHOSEN_FREQUENCY]))
    assert close(real.weights, expected)
    details = real.info["details"]
    assert details["scorer"] == "frequency" and details["base"] == "template"
    assert details["names"] == {"zqxv": "dog", "automobile": "car", "fire truck": "fire engine"}
    assert details["renamed"] == 3
    # the official name alone is a different head: the test can tell them apart
    official = ref_head(tiny_clip, formatted(world.templates, [[n] for n in CLASSES]))
    assert not close(real.weights, official, atol=1e-3)


def test_real_without_filters_takes_the_rejected_names(tiny_clip, world, encoder) -> None:
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="frequency", filters="none")
    expected = ref_head(tiny_clip, formatted(world.templates, [[n] for n in CHOSEN_NO_FILTERS]))
    assert close(real.weights, expected)
    assert real.info["details"]["names"]["honda accord"] == "honda"


def test_real_margin_keeps_official_names_that_win_by_too_little(tiny_clip, world, encoder) -> None:
    # fire engine beats fire truck by 0.16, car beats automobile by 1.5, dog beats zqxv by 5.1
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="frequency", margin=1.0)
    chosen = ["dog", "car", "fire truck", "honda accord", "teapot", "violin"]
    assert close(real.weights, ref_head(tiny_clip, formatted(world.templates, [[n] for n in chosen])))


def test_real_with_a_rename_file(tiny_clip, world, encoder, tmp_path: Path) -> None:
    chosen = ["hound", "motorcar", "fire truck", "honda", "kettle", "fiddle"]
    rows = [{"class_index": i, "official": c, "chosen": n, "renamed": n != c} for i, (c, n) in
            enumerate(zip(CLASSES, chosen))]
    rename = write_json(tmp_path / "rename.json", {"format": RENAME_FORMAT, "rows": rows})
    real = build(world, encoder, "real", [world.synonyms, world.simple7], rename=str(rename))
    assert close(real.weights, ref_head(tiny_clip, formatted(world.templates, [[n] for n in chosen])))
    assert real.info["details"]["rename_file"] == str(rename)
    assert real.info["details"]["renamed"] == 5


def test_synonym_ensemble_averages_every_kept_name(tiny_clip, world, encoder) -> None:
    head = build(world, encoder, "synonym-ensemble", [world.synonyms, world.simple7])
    expected = ref_head(tiny_clip, formatted(world.templates, KEPT_NAMES))
    assert close(head.weights, expected)
    assert head.info["details"]["names_per_class"] == [len(n) for n in KEPT_NAMES]
    # the rejected "honda" and "kettle" are not in it: with them the head differs
    unfiltered = [n + extra for n, extra in zip(KEPT_NAMES, [[], [], [], ["honda"], ["kettle"], ["kettle"]])]
    assert not close(head.weights, ref_head(tiny_clip, formatted(world.templates, unfiltered)), atol=1e-3)
    everything = build(world, encoder, "synonym-ensemble", [world.synonyms, world.simple7], filters="none")
    assert close(everything.weights, ref_head(tiny_clip, formatted(world.templates, unfiltered)))


def test_synonym_ensemble_of_the_photo_template_by_default(tiny_clip, world, encoder) -> None:
    head = build(world, encoder, "synonym-ensemble", [world.synonyms], filters="subset")
    # subset only: "kettle" stays for teapot and violin, "honda" goes
    names = [n + extra for n, extra in zip(KEPT_NAMES, [[], [], [], [], ["kettle"], ["kettle"]])]
    assert close(head.weights, ref_head(tiny_clip, formatted(["a photo of a {c}."], names)))


# -- 2. description sets ------------------------------------------------------------------------

def test_replace_name_handles_case_hyphen_and_underscore() -> None:
    for official, name in (("automobile", "car"), ("fire truck", "fire engine"), ("zqxv", "dog")):
        for before, after in zip(SENTENCES[official], SENTENCES_RENAMED[official]):
            assert replace_name(before, official, name) == after
    assert replace_name("a firetruck and a fire trucks", "fire truck", "X") == "a firetruck and a fire trucks"


@pytest.mark.parametrize("base", [None, "cupl"])
def test_real_renames_inside_cupl_sentences(tiny_clip, world, encoder, base) -> None:
    assert world.cupl.texts == [SENTENCES[c] for c in CLASSES]
    options = {"base": base} if base else {}
    real = build(world, encoder, "real", [world.cupl, world.synonyms], scorer="frequency", **options)
    expected = ref_head(tiny_clip, [SENTENCES_RENAMED[c] for c in CLASSES])
    assert close(real.weights, expected)
    assert real.info["details"]["base"] == (base or "template")
    replaced = [[replace_name(t, c, n) for t in SENTENCES[c]] for c, n in zip(CLASSES, CHOSEN_FREQUENCY)]
    assert replaced == [SENTENCES_RENAMED[c] for c in CLASSES]


def test_synonym_ensemble_over_cupl_sentences(tiny_clip, world, encoder) -> None:
    head = build(world, encoder, "synonym-ensemble", [world.cupl, world.synonyms], base="cupl")
    texts = [[replace_name(t, c, n) for n in names for t in SENTENCES[c]] for c, names in zip(CLASSES, KEPT_NAMES)]
    assert "a photo of a motorcar on a road." in texts[1] and "a fire engine with a long ladder." in texts[2]
    assert close(head.weights, ref_head(tiny_clip, texts))


def test_real_renames_dclip_descriptor_sentences(tiny_clip, world, encoder) -> None:
    real = build(world, encoder, "real", [world.desc, world.synonyms], scorer="frequency", base="dclip")
    expected = ref_head(tiny_clip, [DESCRIPTORS_RENAMED[c] for c in CLASSES], renormalise=False)
    assert close(real.weights, expected)
    # dclip does not renormalise: the columns are shorter than 1 where descriptors differ
    assert float(real.weights[:, 0].norm()) < 0.999999


def test_real_pooled_base_over_cupl_and_templates(tiny_clip, world, encoder) -> None:
    real = build(world, encoder, "real", [world.cupl, world.synonyms, world.simple7], scorer="frequency",
                 base="pooled", pool="mean")
    sentences = ref_head(tiny_clip, [SENTENCES_RENAMED[c] for c in CLASSES], renormalise=False)
    templates = ref_head(tiny_clip, formatted(world.templates, [[n] for n in CHOSEN_FREQUENCY]), renormalise=False)
    assert close(real.weights, F.normalize(sentences + templates, dim=0))


# -- 3. ZPE as the base -------------------------------------------------------------------------

@pytest.mark.parametrize("zpe_options", [{}, {"zpe_mode": "mad", "zpe_tau": 0.0}])
def test_real_with_zpe_base_equals_zpe_on_the_renamed_templates(tiny_clip, world, encoder, zpe_options) -> None:
    texts = formatted(world.templates, [[n] for n in CHOSEN_FREQUENCY])
    images, _ = planted_images(tiny_clip, [t[:2] for t in texts], per_class=6, noise=0.05, seed=3)
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="frequency", base="zpe",
                 image_features=images, **zpe_options)
    renamed = PromptSource("renamed", "templates", texts,
                           [[f"t{i}" for i in range(len(world.templates))] for _ in CLASSES])
    zpe = build(world, encoder, "zpe", [renamed], image_features=images, **zpe_options)
    assert close(real.weights, zpe.weights)
    assert real.info["details"]["base"] == "zpe" and real.info["details"]["zpe_group"] == "family"
    assert real.info["details"]["weights"] == pytest.approx(zpe.info["details"]["weights"], abs=1e-6)
    # and differs from ZPE on the official names
    official = build(world, encoder, "zpe", [world.simple7], image_features=images, **zpe_options)
    assert not close(real.weights, official.weights, atol=1e-3)


def test_zpe_base_needs_image_features(world, encoder) -> None:
    with pytest.raises(PromptgenError, match="image features"):
        build(world, encoder, "real", [world.synonyms, world.simple7], base="zpe")


# -- 4. planted signal ---------------------------------------------------------------------------

def test_real_recovers_labels_the_official_names_miss(tiny_clip, tmp_path: Path, encoder) -> None:
    store, classes = make_dataset(tmp_path / "root", tmp_path, "planted", list(PLANTED))
    write_synonyms(store, classes, {k: [v] for k, v in PLANTED.items()})
    synonyms = source_from_set(store, "synonyms", classes)
    features, labels = planted_images(tiny_clip, [[f"a photo of a {s}."] for s in PLANTED.values()],
                                      per_class=20, noise=0.03, seed=7)
    real = build_head("real", encoder=encoder, classes=classes, sources=[synonyms], scorer="frequency", margin=0.0)
    official = build_head("template", encoder=encoder, classes=classes, sources=[])
    assert real.info["details"]["names"] == PLANTED
    real_top1, official_top1 = (r["top1"] for r in evaluate_heads(features, labels, [real, official], len(classes)))
    assert real_top1 >= 0.9, real_top1
    assert official_top1 <= 0.5, official_top1
    assert real_top1 - official_top1 >= 0.4


# -- 5. CLI ----------------------------------------------------------------------------------------

@pytest.fixture
def cli_world(root: Path, tmp_path: Path):
    store, classes = make_dataset(root, tmp_path, "realx", CLASSES)
    write_synonyms(store, classes, SYNONYMS)
    import_prompt_file(store, classes, write_json(tmp_path / "cupl.json", SENTENCES), "cupl", "cupl")
    return SimpleNamespace(store=store, classes=classes, base=tmp_path)


def _features_file(tiny_clip, path: Path) -> Path:
    features, labels = planted_images(tiny_clip, [[f"a photo of a {n}."] for n in CHOSEN_FREQUENCY],
                                      per_class=5, noise=0.05, seed=11)
    np.savez(path, features=features.numpy(), labels=labels.numpy())
    return path


def test_cli_head_real_writes_the_renamed_head(tiny_clip, cli, cli_world) -> None:
    out = cli_world.base / "h.pt"
    result = cli("head", "realx", "--builder", "real", "--set", "synonyms", "--templates", "simple7",
                 "--scorer", "frequency", "--filters", "ambiguous+subset", "--margin", "0", *TINY_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    weights = torch.load(out, weights_only=True)
    assert weights.shape == (64, 6)
    templates = load_template_set("simple7")[1]
    assert close(weights, ref_head(tiny_clip, formatted(templates, [[n] for n in CHOSEN_FREQUENCY])))
    sidecar = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["builder"] == "real"
    assert sidecar["details"]["names"] == {"zqxv": "dog", "automobile": "car", "fire truck": "fire engine"}
    assert sidecar["details"]["renamed"] == 3 and sidecar["details"]["scorer"] == "frequency"


def test_cli_eval_real_first_equals_template(tiny_clip, cli, cli_world) -> None:
    features = _features_file(tiny_clip, cli_world.base / "f.npz")
    result = cli("eval", "realx", "--features", features, "--build", "real:synonyms,scorer=first",
                 "--build", "template", "--build", "real:synonyms+simple7,scorer=frequency,base=zpe",
                 *TINY_ARGS, "--json")
    assert result.exit_code == 0, result.output
    heads = json.loads(result.stdout)["heads"]
    assert len(heads) == 3
    assert heads[0]["top1"] == heads[1]["top1"] and heads[0]["top5"] == heads[1]["top5"]
    assert heads[0]["mean_per_class_recall"] == heads[1]["mean_per_class_recall"]
    assert heads[2]["info"]["details"]["base"] == "zpe"
    assert heads[2]["info"]["details"]["names"]["zqxv"] == "dog"


def _assert_usage_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "fix:" in result.output, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output


def test_cli_two_synonyms_sets_merge(cli, cli_world) -> None:
    """A wordnet set and an llm set (say) are used together: each class gets the union of their names."""
    write_synonyms(cli_world.store, cli_world.classes, {"zqxv": ["hound"]}, set_name="syn2")
    result = cli("head", "realx", "--builder", "synonym-ensemble", "--set", "synonyms", "--set", "syn2",
                 "--filters", "none", *TINY_ARGS, "-o", cli_world.base / "h.pt", "--json")
    assert result.exit_code == 0, result.output
    names = json.loads(result.stdout)["details"]["names"]
    zqxv = cli_world.classes.names.index("zqxv")
    assert "hound" in names[zqxv] and len(names[zqxv]) >= 3  # official, the first set's name(s), hound


def test_cli_no_synonyms_set_is_an_error(tiny_clip, cli, cli_world) -> None:
    features = _features_file(tiny_clip, cli_world.base / "f.npz")
    result = cli("eval", "realx", "--features", features, "--build", "real:openai80", *TINY_ARGS)
    _assert_usage_error(result, "real")
    result = cli("head", "realx", "--builder", "real", "--set", "cupl", *TINY_ARGS, "-o", cli_world.base / "h.pt")
    _assert_usage_error(result, "needs a synonyms set")


def test_cli_rename_file_for_another_class_list(cli, cli_world) -> None:
    rows = [{"class_index": i, "official": c, "chosen": c, "renamed": False} for i, c in enumerate(["a", "b"])]
    rename = write_json(cli_world.base / "other.json", {"format": RENAME_FORMAT, "rows": rows})
    result = cli("head", "realx", "--builder", "real", "--set", "synonyms", "--rename", rename, *TINY_ARGS,
                 "-o", cli_world.base / "h.pt")
    _assert_usage_error(result, "not a rename file for realx")


@pytest.mark.parametrize("args, needle", [
    (("--base", "bogus"), "unknown base 'bogus'"),
    (("--scorer", "bogus"), "unknown scorer 'bogus'"),
    (("--filters", "bogus"), "unknown filter"),
])
def test_cli_bad_options_are_clear_errors(cli, cli_world, args, needle) -> None:
    result = cli("head", "realx", "--builder", "real", "--set", "synonyms", *args, *TINY_ARGS,
                 "-o", cli_world.base / "h.pt")
    _assert_usage_error(result, needle)


def test_cli_eval_bad_base_and_scorer(tiny_clip, cli, cli_world) -> None:
    features = _features_file(tiny_clip, cli_world.base / "f.npz")
    for spec, needle in (("real:synonyms,base=bogus", "unknown base"), ("real:synonyms,scorer=bogus", "unknown scorer"),
                         ("synonym-ensemble:synonyms,base=bogus", "unknown base")):
        result = cli("eval", "realx", "--features", features, "--build", spec, *TINY_ARGS)
        _assert_usage_error(result, needle)


def test_cli_rename_file_round_trip_and_zpe_base(tiny_clip, cli, cli_world) -> None:
    names = cli_world.base / "names.json"
    result = cli("rename", "realx", "--scorer", "frequency", "--margin", "0", "-o", names)
    assert result.exit_code == 0, result.output
    assert [row["chosen"] for row in json.loads(names.read_text(encoding="utf-8"))["rows"]] == CHOSEN_FREQUENCY
    out = cli_world.base / "renamed.pt"
    result = cli("head", "realx", "--builder", "real", "--set", "synonyms", "--templates", "simple7", "--rename", names,
                 *TINY_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    templates = load_template_set("simple7")[1]
    texts = formatted(templates, [[n] for n in CHOSEN_FREQUENCY])
    assert close(torch.load(out, weights_only=True), ref_head(tiny_clip, texts))

    features = _features_file(tiny_clip, cli_world.base / "f.npz")
    zpe_out = cli_world.base / "zpe.pt"
    result = cli("head", "realx", "--builder", "real", "--set", "synonyms", "--templates", "simple7", "--rename", names,
                 "--base", "zpe", "--zpe-features", features, *TINY_ARGS, "-o", zpe_out)
    assert result.exit_code == 0, result.output
    images = torch.from_numpy(np.load(features)["features"])
    renamed = PromptSource("renamed", "templates", texts, [[f"t{i}" for i in range(len(templates))] for _ in CLASSES])
    encoder = TextEncoder(tiny_clip)
    expected = build_head("zpe", encoder=encoder, classes=cli_world.classes, sources=[renamed], image_features=images)
    assert close(torch.load(zpe_out, weights_only=True), expected.weights)


def test_real_clip_scorer_picks_the_most_self_consistent_name(tiny_clip, world, encoder) -> None:
    """scorer=clip: margin = cos(e(photo of name), e(photo of own class)) - the best other class's;
    the kept candidate with the largest margin wins when it beats the official name's."""
    photo = "a photo of a {c}."
    official = embed(tiny_clip, [photo.replace("{c}", c) for c in CLASSES])
    rejected = {("honda accord", "honda"), ("teapot", "kettle"), ("violin", "kettle")}
    chosen = []
    for c, name in enumerate(CLASSES):
        def margin(candidate: str) -> float:
            sims = embed(tiny_clip, [photo.replace("{c}", candidate)])[0] @ official.T
            return float(sims[c] - torch.cat([sims[:c], sims[c + 1:]]).max())
        best, best_score = name, margin(name)
        official_score = best_score
        for candidate in SYNONYMS[name]:
            score = margin(candidate)
            if (name, candidate) not in rejected and score > best_score and score > official_score:
                best, best_score = candidate, score
        chosen.append(best)
    real = build(world, encoder, "real", [world.synonyms, world.simple7], scorer="clip")
    assert close(real.weights, ref_head(tiny_clip, formatted(world.templates, [[n] for n in chosen])))
    assert real.info["details"]["names"] == {o: n for o, n in zip(CLASSES, chosen) if o != n}


def test_a_class_the_renamed_texts_lack_is_an_error_or_the_fallback(world, encoder) -> None:
    """The synonyms set names every class, but the texts that get renamed must cover them too:
    no NaN column, and --allow-empty gives the missing class the fallback template."""
    from promptgen.clip.sources import PromptSource
    from promptgen.errors import PromptgenError

    partial = PromptSource("partial", "set", [list(t) for t in world.cupl.texts], [list(f) for f in world.cupl.families],
                           {"text_kind": "sentence"})
    partial.texts[-1], partial.families[-1] = [], []
    for builder in ("real", "synonym-ensemble"):
        with pytest.raises(PromptgenError, match="no text in partial to rename"):
            build(world, encoder, builder, [partial, world.synonyms], scorer="first")
        head = build(world, encoder, builder, [partial, world.synonyms], allow_empty=True)
        assert torch.isfinite(head.weights).all()
        assert head.info["prompt_counts"][-1] >= 1
