"""Each head builder against an independent reference written from the authors' own code
(tests/reference_methods.py), on the tiny random CLIP model: CuPL, DCLIP, WaffleCLIP (and its
+GPT variant), FuDD (per image and static), ZPE (softmax, MAD selection), and REAL's
most-common-name rule. Tolerance: 1e-6 on the (D, C) weights, compared in float64.

Some tests pin a single behaviour in which promptgen used to differ from the published code:
(1) CuPL counts repeated sentences; (2) DCLIP's prefix rule; (3) DCLIP's loader (ImageNet ".",
empty lists, underscores); (4) WaffleCLIP's generator, seeds 0..6; (5) WaffleCLIP+GPT; (6) ZPE's
MAD selection keeps the softmax weights; (7) FuDD's template for missing pairs, de-duplication and
capitalisation; (8) FuDD import refuses a file made for other classes; (9) REAL's naming rule;
(10) CuPL's "." after "?" and "!" answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from promptgen.clip.embed import TextEncoder
from promptgen.clip.heads import build_head
from promptgen.clip.sources import source_from_set, source_from_templates
from promptgen.clip.waffle import waffle_gpt_texts, waffle_setup, waffle_texts
from promptgen.errors import PromptgenError
from promptgen.formats import import_fudd_file, import_prompt_file
from promptgen.store import Store
from tests.reference_methods import (
    FUDD_TEMPLATE,
    make_embed,
    ref_cupl_answer,
    ref_cupl_head,
    ref_dclip_head,
    ref_dclip_texts,
    ref_descriptor_sentence,
    ref_fudd_embeddings,
    ref_fudd_prompts,
    ref_fudd_rerank,
    ref_fudd_single_template,
    ref_fudd_static_head,
    ref_fudd_static_prompts,
    ref_real_most_common_name,
    ref_waffle_head,
    ref_waffle_texts,
    ref_waffle_words,
    ref_zpe_head,
    ref_zpe_mad_select,
    ref_zpe_prompt_embeddings,
    ref_zpe_scores,
)

HERE = Path(__file__).resolve().parent
WAFFLE_DATA = HERE / "data" / "waffle"          # WaffleCLIP's descriptor files (MIT), as published
REPO = HERE.parent
ATOL = 1e-6

# sha256 of "\n".join(entries) of WaffleCLIP's word_list.pkl (4330 entries, the first one "")
WAFFLE_WORDS_SHA256 = "931f6c15ba3c9eee10990c0715b76817d7216c838f42bdb3f7958fd720c361a3"


# -- helpers ----------------------------------------------------------------------------------

def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL) -> None:
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"{what}: largest |difference| {diff:.3g} > {atol:g}"


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def published(dataset: str) -> dict[str, list[str]]:
    """WaffleCLIP's descriptors_<dataset>.json, key order kept (the label order)."""
    return json.loads((WAFFLE_DATA / f"descriptors_{dataset}.json").read_text(encoding="utf-8"))


def direction(weights: torch.Tensor) -> torch.Tensor:
    weights = weights.double()
    return weights / weights.norm()


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embed(tiny_clip):
    """The reference's e(t), straight from the open_clip model (memoised for the module)."""
    return make_embed(tiny_clip)


@pytest.fixture(scope="module")
def encoder(tiny_clip, tmp_path_factory: pytest.TempPathFactory):
    return TextEncoder(tiny_clip, tmp_path_factory.mktemp("faithful-encoder-cache"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("faithful")
    return SimpleNamespace(base=base, store=Store(base / "root"))


def user_classes(world, dataset: str, names: list[str]):
    path = world.base / f"{dataset}.txt"
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return world.store.classes(dataset, path)


def imported(world, classes, data: dict, fmt: str, set_name: str, match: str = "name"):
    """Import `data` (a published-format JSON object) as set `set_name` and return its source."""
    path = write_json(world.base / f"{classes.dataset}-{set_name}.json", data)
    import_prompt_file(world.store, classes, path, fmt, set_name, match=match)
    return source_from_set(world.store, set_name, classes)


# -- CuPL -------------------------------------------------------------------------------------

CUPL = {
    "red fox": ["A red fox is a small wild canine with rusty fur.",
                "A red fox is a small wild canine with rusty fur.",
                "Its bushy tail has a white tip.",
                "."],
    "violin": ["A violin has four strings.",
               "Is it a violin or a viola?.",
               "A violin has four strings.",
               "What a shiny violin!.",
               "A violin has four strings."],
    "teapot": ["A teapot is a vessel for brewing tea.",
               "What does a teapot look like?",
               "Steam rises from its spout!"],
}


@pytest.fixture(scope="module")
def cupl(world):
    classes = user_classes(world, "cupltoy", list(CUPL))
    return SimpleNamespace(classes=classes, source=imported(world, classes, CUPL, "cupl", "published"))


def test_cupl_counts_every_published_sentence(cupl, embed, encoder) -> None:
    """(1) classify_imagenet.py:55-61: every listed sentence is embedded, repeats and "." included."""
    head = build_head("cupl", encoder=encoder, classes=cupl.classes, sources=[cupl.source])
    assert_close(head.weights, ref_cupl_head(embed, cupl.classes.names, CUPL), "cupl head")


def test_cupl_dedupe_option_drops_repeats(cupl, embed, encoder) -> None:
    head = build_head("cupl", encoder=encoder, classes=cupl.classes, sources=[cupl.source], dedupe=True)
    unique = {c: list(dict.fromkeys(texts)) for c, texts in CUPL.items()}
    assert_close(head.weights, ref_cupl_head(embed, cupl.classes.names, unique), "cupl head, dedupe")


@pytest.mark.parametrize("template", ["cupl.v1.json", "cupl-base.v1.json"])
@pytest.mark.parametrize("answer", ["What is it?", "What a fox!", "A fox in the snow"])
def test_cupl_answers_always_get_a_period(template: str, answer: str) -> None:
    """(10) generate_image_prompts.py:42: answer + "." whatever the answer ends with."""
    from promptgen.parsing import parse_answer

    append = json.loads((REPO / "prompts" / "templates" / template).read_text(encoding="utf-8"))["append"]
    assert parse_answer(answer, "sentence", append=append).texts == [ref_cupl_answer(answer)]


# -- DCLIP ------------------------------------------------------------------------------------

DCLIP = {
    "red deer": ["antlers", "an auburn coat", "a white rump", "hasty movements", "has a short tail",
                 "often seen in herds", "typically found in forests", "may have spots", "canine teeth",
                 "used for hunting", "Antlers with many tines", "long legs"],
    "sea gull": ["white and grey feathers", "a hooked yellow beak", "annoying calls", "maybe webbed feet"],
    "hot air balloon": ["a basket", "an envelope of fabric", "colourful panels", "burners"],
}


def test_dclip_prefix_rule_is_the_authors() -> None:
    """(2) descriptor_strings.py make_descriptor_sentence: prefix tests, not words."""
    assert ref_descriptor_sentence("antlers") == "which is antlers"
    assert ref_descriptor_sentence("hasty") == "which hasty"
    assert ref_descriptor_sentence("canine teeth") == "which canine teeth"
    assert ref_descriptor_sentence("used for hunting") == "which is used for hunting"
    assert ref_descriptor_sentence("Antlers") == "which has Antlers"
    assert ref_descriptor_sentence("") == "which has "


def test_dclip_head_follows_the_prefix_rule(world, embed, encoder) -> None:
    """(2) the builder's sentences are wordify(c) + ", " + make_descriptor_sentence(d), mean not renormalised."""
    classes = user_classes(world, "dcliptoy", list(DCLIP))
    source = imported(world, classes, DCLIP, "dclip", "desc")
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    assert_close(head.weights, ref_dclip_head(embed, DCLIP, classes.dataset), "dclip head")
    assert head.info["prompt_counts"] == [len(v) for v in DCLIP.values()]


def test_dclip_an_empty_list_gives_which_has(world, embed, encoder) -> None:
    """(3) loading_helpers.py: an empty descriptor list becomes [''] -> "{c}, which has "."""
    data = {"red deer": ["antlers", "a white rump"], "sea gull": [], "hot air balloon": ["a basket"]}
    classes = user_classes(world, "dclipempty", list(data))
    source = imported(world, classes, data, "dclip", "desc")
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    assert ref_dclip_texts(data, classes.dataset)["sea gull"] == ["sea gull, which has "]
    assert_close(head.weights, ref_dclip_head(embed, data, classes.dataset), "dclip head with an empty list")
    assert head.info["sources"][0]["empty_descriptor_lists"] == ["sea gull"]
    # a class the file lacks (or a describe request that failed) is not an empty list: still an error
    missing = imported(world, classes, {k: v for k, v in data.items() if k != "sea gull"}, "dclip", "partial")
    with pytest.raises(PromptgenError, match="1 of 3 classes have no prompt.*'sea gull'"):
        build_head("dclip", encoder=encoder, classes=classes, sources=[missing])


def test_dclip_underscores_become_spaces(world, embed, encoder) -> None:
    """(3) wordify: the sentence names "sea lion" for the key "sea_lion"."""
    data = {"sea_lion": ["a sleek body", "flippers"], "fire_truck": ["ladders", "a siren"],
            "violin": ["four strings"]}
    classes = user_classes(world, "dclipunder", list(data))
    source = imported(world, classes, data, "dclip", "desc")
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    assert ref_dclip_texts(data, classes.dataset)["sea_lion"][0] == "sea lion, which is a sleek body"
    assert_close(head.weights, ref_dclip_head(embed, data, classes.dataset), "dclip head, underscores")


@pytest.fixture(scope="module")
def imagenet_dclip(world, encoder):
    """DCLIP's ImageNet descriptors cut to the first one per class (1000 texts, to stay fast),
    imported onto the built-in ImageNet class list, and the head built from them."""
    classes = world.store.classes("imagenet")
    data = {key: items[:1] for key, items in published("imagenet").items()}
    source = imported(world, classes, data, "dclip", "first", match="order")  # DCLIP's keys are in label order
    head = build_head("dclip", encoder=encoder, classes=classes, sources=[source])
    return SimpleNamespace(classes=classes, data=data, head=head)


@pytest.mark.slow
def test_dclip_imagenet_sentences_end_with_a_period(imagenet_dclip, embed) -> None:
    """(3) load.py:101: after_text = "." when the dataset is 'imagenet'. All classes whose
    promptgen name is the DCLIP key (998 of 1000)."""
    keys = list(imagenet_dclip.data)
    same = [i for i, (key, name) in enumerate(zip(keys, imagenet_dclip.classes.names)) if key == name]
    assert len(same) == 998
    assert ref_dclip_texts({"tench": ["a fish"]}, "imagenet")["tench"] == ["tench, which is a fish."]
    expected = ref_dclip_head(embed, imagenet_dclip.data, "imagenet")
    assert_close(imagenet_dclip.head.weights[:, same], expected[:, same], "dclip imagenet head")


@pytest.mark.slow
def test_dclip_imagenet_sentences_name_the_authors_keys(imagenet_dclip, embed) -> None:
    """The authors' sentences use the JSON key as the class's name: classes 27 and 638 are "eft"
    and "maillot" in DCLIP's file (promptgen's list says "newt" and "tights")."""
    keys = list(imagenet_dclip.data)
    other = [i for i, (key, name) in enumerate(zip(keys, imagenet_dclip.classes.names)) if key != name]
    assert [keys[i] for i in other] == ["eft", "maillot"]
    expected = ref_dclip_head(embed, imagenet_dclip.data, "imagenet")
    assert_close(imagenet_dclip.head.weights[:, other], expected[:, other], "dclip imagenet head, eft/maillot")


# -- WaffleCLIP -------------------------------------------------------------------------------

def test_waffle_word_list_is_the_authors() -> None:
    words = ref_waffle_words()
    assert len(words) == 4330 and words[0] == ""
    assert hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest() == WAFFLE_WORDS_SHA256


@pytest.mark.slow
def test_waffle_matches_the_authors_check_values_on_imagenet(world) -> None:
    """WaffleCLIP's own waffle_tools.py, run at seed 0 on descriptors_imagenet.json with
    word_list.pkl, gave these first texts for "tench" (docs/methods.md, waffle): the shipped set
    and promptgen's generator give the same, draw for draw over 1000 classes."""
    classes = world.store.classes("imagenet")
    source = source_from_set(world.store, "dclip-published", classes)
    setup = waffle_setup(source.label_names, [d for per_class in source.descriptors for d in per_class])
    assert (setup.words_per_descriptor, setup.word_length, len(setup.characters)) == (2, 6, 66)
    assert waffle_texts(source.label_names, setup, 15, 0)[0][:2] == [
        "A photo of a tench, which has slots indivi.", "A photo of a tench, which has OEi1', j3r2P."]
    assert waffle_gpt_texts(source.label_names, setup, source.descriptors, 15, 0)[0][0] == \
        "A photo of a tench, which has NhhD4, hv)mF."


@pytest.fixture(scope="module")
def waffle_sets(world):
    """The published descriptors of dtd and eurosat imported onto the built-in class lists."""
    out = {}
    for dataset in ("dtd", "eurosat"):
        classes = world.store.classes(dataset)
        data = published(dataset)
        assert list(data) == list(classes.names)
        out[dataset] = SimpleNamespace(classes=classes, data=data,
                                       source=imported(world, classes, data, "dclip", "waffle-desc"))
    return out


@pytest.mark.parametrize("dataset", ["eurosat", pytest.param("dtd", marks=pytest.mark.slow)])
@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in range(1, 7))])
def test_waffle_is_the_authors_generator(waffle_sets, embed, encoder, dataset: str, seed: int) -> None:
    """(4) base_main.py: seed_everything(rep) for rep in range(7), mode 'waffle', waffle_count 15."""
    ws = waffle_sets[dataset]
    head = build_head("waffle", encoder=encoder, classes=ws.classes, sources=[ws.source], seed=seed,
                      waffle_count=15)
    expected = ref_waffle_head(embed, ws.data, seed=seed, waffle_count=15, mode="waffle")
    assert_close(head.weights, expected, f"waffle head, {dataset} seed {seed}")
    assert head.info["prompt_counts"] == [30] * len(ws.classes)


def test_waffle_defaults_are_seed_0_and_15_pairs(waffle_sets, embed, encoder) -> None:
    ws = waffle_sets["eurosat"]
    head = build_head("waffle", encoder=encoder, classes=ws.classes, sources=[ws.source])
    assert_close(head.weights, ref_waffle_head(embed, ws.data, seed=0), "waffle head with default options")


def test_waffle_without_a_set_uses_the_shipped_descriptors(waffle_sets, embed, encoder) -> None:
    """Without a descriptor set, the dataset's shipped dclip-published set gives the character pool."""
    ws = waffle_sets["eurosat"]
    head = build_head("waffle", encoder=encoder, classes=ws.classes, sources=[], seed=3)
    assert_close(head.weights, ref_waffle_head(embed, ws.data, seed=3), "waffle head from the shipped set")


@pytest.mark.parametrize("dataset, seed", [("eurosat", 0)] + [pytest.param(*case, marks=pytest.mark.slow) for case in
                                          [("eurosat", s) for s in range(1, 7)] + [("dtd", 0), ("dtd", 6)]])
def test_waffle_gpt_is_the_authors_generator(waffle_sets, embed, encoder, dataset: str, seed: int) -> None:
    """(5) mode 'waffle_and_gpt': 10 random pairs shared by all classes, 2 GPT descriptors per pair,
    30 of the 40 kept per class."""
    ws = waffle_sets[dataset]
    head = build_head("waffle+gpt", encoder=encoder, classes=ws.classes, sources=[ws.source], seed=seed,
                      waffle_count=15)
    expected = ref_waffle_head(embed, ws.data, seed=seed, waffle_count=15, mode="waffle_and_gpt")
    assert_close(head.weights, expected, f"waffle+gpt head, {dataset} seed {seed}")


@pytest.mark.parametrize("builder, mode", [("waffle", "waffle"), ("waffle+gpt", "waffle_and_gpt")])
@pytest.mark.parametrize("seed", [0, 1])
def test_waffle_with_an_empty_descriptor_list(world, embed, encoder, builder: str, mode: str, seed: int) -> None:
    """An empty list becomes [''] (waffle_tools.py:232): it adds no character, and in waffle+gpt
    its GPT sentence is "A photo of a {c}, which has ."."""
    data = dict(published("eurosat"))
    data["river"] = []
    data["forest"] = []
    classes = user_classes(world, "eurosatempty", list(data))
    source = imported(world, classes, data, "dclip", "desc")
    texts = ref_waffle_texts(data, seed=seed, waffle_count=15, mode=mode)
    if mode == "waffle_and_gpt":
        assert any(t == "A photo of a river, which has ." for t in texts["river"])
    head = build_head(builder, encoder=encoder, classes=classes, sources=[source], seed=seed, waffle_count=15)
    expected = ref_waffle_head(embed, data, seed=seed, waffle_count=15, mode=mode)
    assert_close(head.weights, expected, f"{builder} head with empty lists, seed {seed}")


# -- FuDD -------------------------------------------------------------------------------------

FUDD_CLASSES = ["red fox", "Boston Terrier", "violin", "sea lion", "teapot", "sailboat"]


def _pair(attr: str, first: str, second: str) -> dict:
    return {"attr_type": attr, "prompt_pair": [first, second]}


# Pairs 0_3, 0_5, 1_4, 1_5, 2_4, 2_5, 3_5, 4_5 are missing; class 5 has no pair at all. Class 0's
# "bushy tail" sentence comes from 0_1 and, differing only in case, from 0_2; class 2's "scroll"
# sentence comes from 0_2 and again, identical, from 2_3. "1_2" lists its classes as [2, 1].
FUDD_PAIRS = {
    "0_1": {"classes": [0, 1], "prompt_pairs": [
        _pair("fur", "a photo of a red fox, with rusty orange fur.", "a photo of a Boston Terrier, with a black and white coat."),
        _pair("tail", "a photo of a red fox, with a bushy tail.", "a photo of a Boston Terrier, with a short stubby tail."),
    ]},
    "0_2": {"classes": [0, 2], "prompt_pairs": [
        _pair("shape", "a photo of a red fox, with a slender furry body.", "a photo of a violin, with an hourglass wooden body."),
        _pair("details", "a photo of a Red Fox, with a bushy tail.", "a photo of a violin, with a scroll at the end."),
    ]},
    "1_2": {"classes": [2, 1], "prompt_pairs": [
        _pair("material", "a photo of a violin, made of carved spruce.", "a photo of a Boston Terrier, covered in short fur."),
    ]},
    "2_3": {"classes": [2, 3], "prompt_pairs": [
        _pair("setting", "a photo of a violin, in a concert hall.", "a photo of a sea lion, on a rocky beach."),
        _pair("details", "a photo of a violin, with a scroll at the end.", "a photo of a sea lion, with long whiskers."),
    ]},
    "3_4": {"classes": [3, 4], "prompt_pairs": [
        _pair("surface", "a photo of a sea lion, with wet shiny skin.", "a photo of a teapot, with a glazed ceramic surface."),
    ]},
    "0_4": {"classes": [0, 4], "prompt_pairs": [
        _pair("shape", "a photo of a red fox, with pointed ears.", "a photo of a teapot, with a curved spout."),
    ]},
    "1_3": {"classes": [1, 3], "prompt_pairs": [
        _pair("habitat", "a photo of a Boston Terrier, on a city sidewalk.", "a photo of a sea lion, in the ocean surf."),
    ]},
}


@pytest.fixture(scope="module")
def fudd(world):
    classes = user_classes(world, "fuddtoy", FUDD_CLASSES)
    path = write_json(world.base / "fudd-pairs.json", FUDD_PAIRS)
    import_fudd_file(world.store, classes, path, "pairs")
    return SimpleNamespace(classes=classes, source=source_from_set(world.store, "pairs", classes))


def test_fudd_reference_prompts_cover_the_rules() -> None:
    """The constructed file exercises each rule of prompt_factory.py."""
    static = ref_fudd_static_prompts(FUDD_PAIRS, FUDD_CLASSES)
    assert static[5] == ["A photo of a sailboat."]
    assert static[0].count("A photo of a red fox, with a bushy tail.") == 2       # case-only twins both stay
    assert static[2].count("A photo of a violin, with a scroll at the end.") == 1  # exact repeats once
    assert "A photo of a boston terrier, with a black and white coat." in static[1]  # capitalize lowers the rest
    per_image = ref_fudd_prompts(FUDD_PAIRS, FUDD_CLASSES, [0, 3, 2])
    assert "A photo of a red fox." in per_image[0] and "A photo of a sea lion." in per_image[1]
    assert ref_fudd_single_template(FUDD_CLASSES)[1] == ["A photo of a boston terrier."]
    assert FUDD_TEMPLATE == "a photo of a {}."


def test_fudd_static_is_the_authors(fudd, embed, encoder) -> None:
    """(7) get_all_classes_prompts('gpt'): template for a class without pairs, set de-dup,
    capitalize; fudd_model.get_text_embeddings: mean, renormalised."""
    head = build_head("fudd-static", encoder=encoder, classes=fudd.classes, sources=[fudd.source])
    assert_close(head.weights, ref_fudd_static_head(embed, FUDD_PAIRS, FUDD_CLASSES), "fudd-static head")


@pytest.fixture(scope="module")
def fudd_images(tiny_clip, embed):
    """Images around each class's initial column and a few random ones, so that top-3 sets with
    and without missing pairs occur."""
    generator = torch.Generator().manual_seed(5)
    initial = ref_fudd_embeddings(embed, ref_fudd_single_template(FUDD_CLASSES)).float()  # (D, C)
    near = initial.T.repeat_interleave(8, dim=0) + 0.15 * torch.randn(8 * len(FUDD_CLASSES), initial.shape[0],
                                                                      generator=generator)
    return torch.cat([near, torch.randn(24, initial.shape[0], generator=generator)])


def test_fudd_per_image_is_the_authors(fudd, fudd_images, embed, encoder) -> None:
    """(7) fudd_model.py forward with follow_up, k=3: for each image its top-3 classes (by the
    capitalised "A photo of a {c}." head) get 100 x image . column from get_prompts; the others
    keep 100 x their initial cosine - 1e4."""
    k = 3
    head = build_head("fudd", encoder=encoder, classes=fudd.classes, sources=[fudd.source], k=k)
    initial, top, new = ref_fudd_rerank(embed, FUDD_PAIRS, FUDD_CLASSES, fudd_images, k)
    # the images reach both kinds of top-3 set
    missing = [any(f"{min(a, b)}_{max(a, b)}" not in FUDD_PAIRS for a in t for b in t if a != b) for t in top.tolist()]
    assert any(missing) and not all(missing)
    logits = head.logits(fudd_images).double()
    assert logits.shape == (len(fudd_images), len(FUDD_CLASSES))
    assert_close(logits.gather(1, top) / 100, new, "fudd re-ranked cosines of the top-3 classes")
    outside = torch.ones_like(logits, dtype=torch.bool).scatter_(1, top, False)
    assert_close(logits[outside], (100 * initial - 1e4)[outside], "fudd logits outside the top-3", atol=1e-2)
    predicted = top.gather(1, new.argmax(dim=1, keepdim=True)).squeeze(1)
    assert torch.equal(logits.argmax(dim=1), predicted)


FUDD_FOUR = ["red fox", "violin", "teapot", "sailboat"]
FUDD_FOUR_PAIRS = {
    "0_1": {"classes": [0, 1], "prompt_pairs": [
        _pair("kind", "a photo of a red fox, a wild animal.", "a photo of a violin, a musical instrument.")]},
    "0_3": {"classes": [0, 3], "prompt_pairs": [
        _pair("place", "a photo of a red fox, in a forest.", "a photo of a sailboat, on the water.")]},
    "1_2": {"classes": [1, 2], "prompt_pairs": [
        _pair("use", "a photo of a violin, played with a bow.", "a photo of a teapot, used to brew tea.")]},
    "2_3": {"classes": [2, 3], "prompt_pairs": [
        _pair("size", "a photo of a teapot, small enough to hold.", "a photo of a sailboat, large enough to ride.")]},
}


@pytest.mark.parametrize("names, pairs", [
    (FUDD_FOUR[:3], FUDD_FOUR_PAIRS),                                               # index 3 exceeds the list
    (["cello", "kettle", "canoe"], FUDD_FOUR_PAIRS),                                # another list, and index 3
    (["cello", "kettle", "canoe"], {k: v for k, v in FUDD_FOUR_PAIRS.items() if "3" not in k}),  # names only
], ids=["indices-exceed", "other-list", "other-names"])
def test_fudd_import_refuses_a_file_for_other_classes(world, names, pairs) -> None:
    """(8) a pairs file made for another class list is an error, not a partial import."""
    dataset = "fuddwrong" + hashlib.sha256("|".join(names).encode("utf-8")).hexdigest()[:8]
    classes = user_classes(world, dataset, names)
    path = write_json(world.base / f"{dataset}-{len(pairs)}.json", pairs)
    with pytest.raises(PromptgenError):
        import_fudd_file(world.store, classes, path, "wrong")


def test_fudd_import_accepts_its_own_files_with_other_spellings(world, embed, encoder) -> None:
    """FuDD's own names may be spelled otherwise (cars put the year first, ImageNet says "eft" for
    "newt"): the file still fits, and FuDD's templates use FuDD's names, as prompt_factory.py does."""
    ours = ["Acura RL Sedan 2012", "Audi R8 Coupe 2012", "BMW X5 SUV 2007"]
    theirs = ["2012 Acura RL Sedan", "2012 Audi R8 Coupe", "bmw_x5_suv_2007"]
    pairs = {"0_1": {"classes": [0, 1], "prompt_pairs": [
        _pair("grille", f"a photo of a {theirs[0]}, with a chrome grille.", f"a photo of a {theirs[1]}, with a wide grille.")]}}
    classes = user_classes(world, "fuddcars", ours)
    path = write_json(world.base / "fuddcars.json", pairs)
    names_file = write_json(world.base / "fuddcars_class_names.json", theirs)
    info, _ = import_fudd_file(world.store, classes, path, "fudd", class_names=names_file)
    assert info.manifest["import"]["class_names"] == ["2012 Acura RL Sedan", "2012 Audi R8 Coupe", "bmw x5 suv 2007"]
    assert info.manifest["import"]["class_names_differ"] == []  # the same words, in another order
    head = build_head("fudd", encoder=encoder, classes=classes, sources=[source_from_set(world.store, "fudd", classes)],
                      k=2)
    initial = torch.cat([embed([f"a photo of a {name}.".capitalize()]) for name in info.manifest["import"]["class_names"]]).T
    assert_close(head.weights, initial, "fudd initial head from FuDD's own names")
    with pytest.raises(PromptgenError, match="lists 2 classes"):  # another count: refused
        import_fudd_file(world.store, classes, path, "fudd", class_names=write_json(world.base / "two.json", theirs[:2]))
    with pytest.raises(PromptgenError, match="differ by position"):  # most names differ: refused
        import_fudd_file(world.store, classes, path, "fudd",
                         class_names=write_json(world.base / "other.json", ["Boeing 707-320", "A300B4", "BMW X5 SUV 2007"]))


# -- ZPE --------------------------------------------------------------------------------------

ZPE_CLASSES = ["red fox", "fire truck", "violin", "sunflower", "sailboat", "teapot"]
ZPE_TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "itap of a {}.", "a blurry photo of a {}.",
                 "a {} in a video game.", "art of the {}.", "a close-up photo of the {}."]


@pytest.fixture(scope="module")
def zpe(world):
    classes = user_classes(world, "zpetoy", ZPE_CLASSES)
    path = write_json(world.base / "zpe-templates.json", {"templates": [t.replace("{}", "{c}") for t in ZPE_TEMPLATES]})
    generator = torch.Generator().manual_seed(11)
    images = 3 * torch.randn(48, 64, generator=generator)   # not normalised: both sides normalise
    pool = torch.randn(32, 64, generator=generator) + 0.5
    return SimpleNamespace(classes=classes, source=source_from_templates(str(path), classes), images=images, pool=pool)


def _three_kept_tau(embed, zpe, pool) -> float:
    scores = ref_zpe_scores(ref_zpe_prompt_embeddings(embed, ZPE_CLASSES, ZPE_TEMPLATES), zpe.images, pool).numpy()
    median = np.median(scores)
    z = np.sort((scores - median) / np.median(np.abs(scores - median)))[::-1]
    tau = float((z[2] + z[3]) / 2)
    assert len(ref_zpe_mad_select(scores, tau)) == 3
    return tau


@pytest.mark.parametrize("with_pool", [False, True])
def test_zpe_softmax_is_the_authors(zpe, embed, encoder, with_pool: bool) -> None:
    """Cells 13-15, 24 (softmax_scores, 'NA'): logits = mean over prompts of w_p x logit_p."""
    pool = zpe.pool if with_pool else None
    head = build_head("zpe", encoder=encoder, classes=zpe.classes, sources=[zpe.source], image_features=zpe.images,
                      pool_features=pool, zpe_mode="softmax")
    expected, _ = ref_zpe_head(embed, ZPE_CLASSES, ZPE_TEMPLATES, zpe.images, pool, mode="softmax")
    assert_close(head.weights, expected, f"zpe softmax head, pool={with_pool}")


@pytest.mark.parametrize("mode", ["mad", "mad-equal"])
@pytest.mark.parametrize("with_pool", [False, True])
def test_zpe_mad_is_the_authors(zpe, embed, encoder, mode: str, with_pool: bool) -> None:
    """Cell 16 mad_method and cell 24: the kept prompts' logits averaged with their softmax
    weights ('mad') or equally ('mad-equal')."""
    pool = zpe.pool if with_pool else None
    tau = _three_kept_tau(embed, zpe, pool)
    head = build_head("zpe", encoder=encoder, classes=zpe.classes, sources=[zpe.source], image_features=zpe.images,
                      pool_features=pool, zpe_mode=mode, zpe_tau=tau)
    expected, _ = ref_zpe_head(embed, ZPE_CLASSES, ZPE_TEMPLATES, zpe.images, pool, mode=mode, tau=tau)
    assert_close(head.weights, expected, f"zpe {mode} head, pool={with_pool}")


def test_zpe_mad_keeps_the_softmax_weights(zpe, embed, encoder) -> None:
    """(6) 'ZPE (prompt selection)' weights the kept prompts by their softmax weights (not equally);
    compared up to a positive scale, so only the weighting matters here."""
    tau = _three_kept_tau(embed, zpe, None)
    head = build_head("zpe", encoder=encoder, classes=zpe.classes, sources=[zpe.source], image_features=zpe.images,
                      zpe_mode="mad", zpe_tau=tau)
    softmax, _ = ref_zpe_head(embed, ZPE_CLASSES, ZPE_TEMPLATES, zpe.images, None, mode="mad", tau=tau)
    equal, _ = ref_zpe_head(embed, ZPE_CLASSES, ZPE_TEMPLATES, zpe.images, None, mode="mad-equal", tau=tau)
    assert (direction(softmax) - direction(equal)).abs().max() > 1e-3  # the data tell the two apart
    assert_close(direction(head.weights), direction(softmax), "zpe mad head direction")


# -- REAL -------------------------------------------------------------------------------------

@pytest.mark.parametrize("official, alternates, expected", [
    ("honda accord", {"honda accord": 10}, "honda accord"),
    ("honda accord", {"honda accord": 10, "accord honda": 50}, "accord honda"),           # same words
    ("honda accord", {"honda accord": 10, "honda civic": 20}, "honda civic"),             # not a subset
    ("honda accord", {"honda accord": 10, "honda": 500}, "honda accord"),                 # a subset: never chosen
    ("honda accord", {"honda accord": 10, "honda": 500, "accord coupe": 100}, "honda accord"),  # ... and it blocks
    ("honda accord", {"honda accord": 10, "accord coupe": 100, "honda": 50}, "accord coupe"),
    ("Red-Eft", {"red eft": 5, "newt": 9}, "newt"),                                       # cleaned lookup
    ("spider web", {"spider web": 7, "cobweb": 9, "gossamer": 9}, "cobweb"),              # ties keep file order
    ("O'Brien's Rose", {"obriens rose": 3, "Obriens-Rose": 8}, "Obriens-Rose"),           # punctuation, case
])
def test_real_most_common_name_rule(official: str, alternates: dict, expected: str) -> None:
    """laion_parser.py find_most_common_name, RELAXED (constructed cases, the reference alone)."""
    assert ref_real_most_common_name(official, alternates) == expected


REAL_CLASSES = ["honda accord", "spider web", "automobile", "eft"]
REAL_COUNTS = {  # REAL's metrics-*.json layout, keys in label order
    "0": {"name": "honda accord", "alternates": {"honda accord": 10, "honda": 500, "accord coupe": 100}},
    "1": {"name": "spider web", "alternates": {"spider web": 7, "cobweb": 9, "gossamer": 9}},
    "2": {"name": "automobile", "alternates": {"automobile": 40, "car": 900, "auto": 90}},
    "3": {"name": "eft", "alternates": {"eft": 12, "red eft": 30, "eft red": 31}},
}


def test_real_builder_is_the_authors_rule(world, embed, encoder) -> None:
    """(9) The real builder with REAL's counts picks find_most_common_name's name for every class
    and formats the template with it as it is ("a photo of a auto..." stays as REAL writes it)."""
    classes = user_classes(world, "realcounts", REAL_CLASSES)
    path = write_json(world.base / "metrics-realcounts.json", REAL_COUNTS)
    head = build_head("real", encoder=encoder, classes=classes, sources=[], counts=str(path))
    chosen = [ref_real_most_common_name(m["name"], m["alternates"]) for m in REAL_COUNTS.values()]
    assert chosen == ["honda accord", "cobweb", "car", "eft red"]
    expected = torch.stack([embed([f"a photo of a {name}."])[0] for name in chosen], dim=1)
    assert_close(head.weights, expected, "real head over the photo template")
    assert head.info["details"]["names"] == {"spider web": "cobweb", "automobile": "car", "eft": "eft red"}
    # REAL's rule starts from the file's official name: a file naming a class otherwise is refused
    other = {**REAL_COUNTS, "3": {"name": "red eft", "alternates": {"red eft": 5, "eft": 50}}}
    with pytest.raises(PromptgenError, match="names 1 classes otherwise.*'red eft' vs 'eft'"):
        build_head("real", encoder=encoder, classes=classes, sources=[],
                   counts=str(write_json(world.base / "metrics-other.json", other)))
