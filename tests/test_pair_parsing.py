"""parse_pair_answer on realistic, messy LLM answers about one class pair, and class_name_matcher."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from promptgen.classes import ClassList, load_dataset
from promptgen.parsing import PAIR_REJECT_REASONS, PairAttribute, parse_pair_answer
from promptgen.stages.differentiate import class_name_matcher

PUG, TERRIER = "pug", "scottish terrier"


def parse(answer, first=PUG, second=TERRIER, **kwargs):
    return parse_pair_answer(answer, first, second, **kwargs)


def diffs(*triples) -> str:
    return json.dumps({"differences": [{"attribute": a, "object_1": x, "object_2": y} for a, x, y in triples]})


EARS = ("ears", "a pug has small folded ears", "a scottish terrier has pricked, pointed ears")
FACE = ("face", "a flat, wrinkled face", "a long muzzle with a beard")
COAT = ("coat", "a short smooth fawn coat", "a wiry black coat")
EXPECTED = [PairAttribute(*EARS), PairAttribute(*FACE), PairAttribute(*COAT)]


def assert_clean(parsed, expected=EXPECTED):
    assert parsed.attributes == expected
    assert parsed.rejected == Counter()
    assert parsed.complete is True
    assert parsed.usable is True
    assert parsed.error is None


# -- accepted shapes ----------------------------------------------------------------------------


def test_canonical_differences_form():
    assert_clean(parse(diffs(EARS, FACE, COAT)))


def test_fudd_prompt_pairs_form():
    answer = json.dumps({"prompt_pairs": [{"attr_type": a, "prompt_pair": [x, y]} for a, x, y in (EARS, FACE, COAT)]})
    assert_clean(parse(answer))


def test_fudd_form_with_classes():
    answer = json.dumps({"classes": [3, 7],
                         "prompt_pairs": [{"attr_type": a, "prompt_pair": [x, y]} for a, x, y in (EARS, FACE, COAT)]})
    assert_clean(parse(answer))


def test_fudd_form_nested_under_pair_key():
    items = [{"attr_type": a, "prompt_pair": [x, y]} for a, x, y in (EARS, FACE)]
    answer = json.dumps({"3_7": {"prompt_pairs": items}})
    assert_clean(parse(answer), EXPECTED[:2])


def test_fudd_prompt_pair_with_one_element_is_one_sided():
    answer = json.dumps({"prompt_pairs": [{"attr_type": "ears", "prompt_pair": ["folded ears"]},
                                          {"attr_type": "coat", "prompt_pair": [COAT[1], COAT[2]]}]})
    parsed = parse(answer)
    assert parsed.attributes == [PairAttribute(*COAT)]
    assert parsed.rejected == Counter(one_sided=1)
    assert parsed.complete and parsed.usable and parsed.error is None


def test_bare_list():
    answer = json.dumps([{"attribute": a, "object_1": x, "object_2": y} for a, x, y in (EARS, FACE, COAT)])
    assert_clean(parse(answer))


def test_keys_named_after_the_classes_in_a_list():
    items = [{"attribute": a, "Scottish Terrier": y, "pug": x} for a, x, y in (EARS, FACE)]
    answer = json.dumps({"differences": items})
    assert_clean(parse(answer), EXPECTED[:2])


def test_single_object_with_keys_named_after_the_classes():
    # the exact shape _sides supports ({"attribute": ..., "pug": ..., "scottish terrier": ...}), as the whole answer
    answer = json.dumps({"attribute": "ears", "pug": EARS[1], "scottish terrier": EARS[2]})
    assert_clean(parse(answer), [PairAttribute(*EARS)])


@pytest.mark.parametrize("keys", [("class_1", "class_2"), ("first", "second"), ("object1", "object2"),
                                  ("class1", "class2"), ("a", "b"), ("1", "2")])
def test_alternative_side_keys(keys):
    answer = json.dumps({"differences": [{"attribute": a, keys[0]: x, keys[1]: y} for a, x, y in (EARS, FACE, COAT)]})
    assert_clean(parse(answer))


@pytest.mark.parametrize("key", ["attr_type", "attr", "aspect", "feature", "name"])
def test_alternative_attribute_keys(key):
    answer = json.dumps({"differences": [{key: "ears", "object_1": EARS[1], "object_2": EARS[2]}]})
    assert_clean(parse(answer), [PairAttribute(*EARS)])


def test_capitalised_keys_keep_the_attribute_name():
    # side keys are matched case-insensitively, so the attribute key should be too
    answer = json.dumps({"differences": [{"Attribute": "ears", "Object_1": EARS[1], "Object_2": EARS[2]}]})
    assert_clean(parse(answer), [PairAttribute(*EARS)])


@pytest.mark.parametrize("item", [
    {"attribute": "ears", "object_1": EARS[1], "object_2": EARS[2]},
    {"attr_type": "ears", "prompt_pair": [EARS[1], EARS[2]]},
    {"attribute": "ears", "class_1": EARS[1], "class_2": EARS[2]},
])
def test_single_attribute_object(item):
    assert_clean(parse(json.dumps(item)), [PairAttribute(*EARS)])


def test_side_text_is_normalised():
    answer = json.dumps({"differences": [{"attribute": "  ears\n", "object_1": '"a pug has\tsmall folded ears"',
                                          "object_2": " a scottish terrier has  pricked, pointed ears \u200b"}]})
    assert_clean(parse(answer), [PairAttribute(*EARS)])


def test_missing_attribute_name_gets_its_position():
    answer = json.dumps({"differences": [
        {"object_1": EARS[1], "object_2": EARS[2]},
        {"attribute": "   ", "object_1": FACE[1], "object_2": FACE[2]},
        {"attribute": 5, "object_1": COAT[1], "object_2": COAT[2]},
    ]})
    assert_clean(parse(answer), [PairAttribute("attribute 1", EARS[1], EARS[2]),
                                 PairAttribute("attribute 2", FACE[1], FACE[2]),
                                 PairAttribute("attribute 3", COAT[1], COAT[2])])


def test_default_attribute_name_counts_rejected_items():
    answer = json.dumps({"differences": [
        {"attribute": "ears", "object_1": "same", "object_2": "Same."},
        {"object_1": FACE[1], "object_2": FACE[2]},
    ]})
    parsed = parse(answer)
    assert parsed.attributes == [PairAttribute("attribute 2", FACE[1], FACE[2])]
    assert parsed.rejected == Counter(identical=1)


# -- wrapping -----------------------------------------------------------------------------------


def test_json_code_fence_with_prose():
    answer = ("Here are the differences between a pug and a scottish terrier:\n\n```json\n"
              + diffs(EARS, FACE, COAT) + "\n```\n\nLet me know if you need {more} details!")
    assert_clean(parse(answer))


def test_plain_code_fence():
    assert_clean(parse("```\n" + diffs(EARS, FACE, COAT) + "\n```"))


def test_prose_before_and_after_without_fence():
    answer = "Sure! Here is the JSON:\n" + diffs(EARS, FACE, COAT) + "\nI hope this helps. [1] Source: AKC."
    assert_clean(parse(answer))


def test_trailing_commas():
    answer = """{
      "differences": [
        {"attribute": "ears", "object_1": "a pug has small folded ears",
         "object_2": "a scottish terrier has pricked, pointed ears",},
        {"attribute": "face", "object_1": "a flat, wrinkled face", "object_2": "a long muzzle with a beard"},
        {"attribute": "coat", "object_1": "a short smooth fawn coat", "object_2": "a wiry black coat"},
      ],
    }"""
    assert_clean(parse(answer))


def test_curly_quotes_and_trailing_commas_in_a_fence():
    answer = ("Sure! Here is the JSON:\n```json\n{“differences”: [{“attribute”: “ears”, “object_1”: "
              "“a pug has small folded ears”, “object_2”: "
              "“a scottish terrier has pricked, pointed ears”},],}\n```")
    assert_clean(parse(answer), [PairAttribute(*EARS)])


def test_apostrophes_survive():
    answer = diffs(("tail", "a pug’s tail curls over its back", "a terrier's tail stands straight up"))
    assert_clean(parse(answer), [PairAttribute("tail", "a pug’s tail curls over its back",
                                               "a terrier's tail stands straight up")])


# -- truncated, garbage, empty, refusal ---------------------------------------------------------


@pytest.mark.parametrize("cut", [
    'a short smooth fa',                      # mid-string
    'a short smooth fawn coat", "object_2"',  # mid-object
    'a short smooth fawn coat", "object_2": "a wiry black coat"',  # object not closed
])
def test_truncated_json_salvages_complete_objects(cut):
    full = diffs(EARS, FACE, COAT)
    answer = "```json\n" + full[:full.index(COAT[1])] + cut
    parsed = parse(answer)
    assert parsed.complete is False
    assert parsed.usable is False
    assert parsed.error.startswith("invalid JSON")
    assert parsed.attributes == EXPECTED[:2]
    assert parsed.rejected == Counter()


def test_truncated_fudd_form_salvages_complete_objects():
    answer = ('{"classes": [3, 7], "prompt_pairs": [{"attr_type": "ears", "prompt_pair": ["%s", "%s"]}, '
              '{"attr_type": "face", "prompt_pair": ["%s", "%s"]}, {"attr_type": "coat", "prompt_pair": ["a sh'
              % (EARS[1], EARS[2], FACE[1], FACE[2]))
    parsed = parse(answer)
    assert (parsed.complete, parsed.usable) == (False, False)
    assert "invalid JSON" in parsed.error
    assert parsed.attributes == EXPECTED[:2]


def test_truncated_salvage_still_checks_attributes():
    full = diffs(EARS, ("ears again", "folded", "FOLDED!"), FACE, COAT)
    parsed = parse(full[:full.index(COAT[1]) + 5])
    assert parsed.attributes == EXPECTED[:2]
    assert parsed.rejected == Counter(identical=1)
    assert parsed.complete is False and "invalid JSON" in parsed.error


def test_truncated_before_any_object_is_complete():
    parsed = parse('{"differences": [{"attribute": "ears", "object_1": "a pug has')
    assert parsed.attributes == []
    assert (parsed.complete, parsed.usable) == (False, False)
    assert "invalid JSON" in parsed.error


@pytest.mark.parametrize("answer", [
    "A pug has a flat face while a scottish terrier has a long muzzle.",
    "Here you go:\n- ears: folded vs pricked\n- coat: smooth vs wiry",
])
def test_garbage_without_json(answer):
    parsed = parse(answer)
    assert parsed.attributes == []
    assert parsed.rejected == Counter()
    assert (parsed.complete, parsed.usable) == (False, False)
    assert "holds no JSON" in parsed.error


@pytest.mark.parametrize("answer", [None, "", "   \n\t "])
def test_empty_answer(answer):
    parsed = parse(answer)
    assert parsed.attributes == []
    assert parsed.rejected == Counter()
    assert (parsed.complete, parsed.usable) == (False, False)
    assert parsed.error == "the answer is empty"


@pytest.mark.parametrize("answer", [
    "I'm sorry, but I can't help with comparing these two breeds.",
    "I’m sorry, I cannot provide that.",
    "As an AI language model, I cannot see images.",
])
def test_refusal_answer(answer):
    parsed = parse(answer)
    assert parsed.attributes == []
    assert parsed.rejected == Counter(refusal=1)
    assert (parsed.complete, parsed.usable) == (False, False)
    assert "refusal" in parsed.error


def test_refusal_inside_a_side():
    answer = diffs(EARS, ("face", "I'm sorry, I can't describe faces", "a long muzzle"))
    parsed = parse(answer)
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.rejected == Counter(refusal=1)
    assert parsed.usable


# -- JSON of the wrong shape ---------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    '{"answer": "pugs have folded ears"}',
    '{"verdict": "different", "confidence": 0.9}',
    '{"a": [1, 2], "b": [3]}',
    '{"x": {"y": 1}, "z": {"w": 2}}',
])
def test_json_without_a_list_of_differences(answer):
    parsed = parse(answer)
    assert parsed.attributes == []
    assert (parsed.complete, parsed.usable) == (False, False)
    assert parsed.error == "the JSON has no list of differences"


def test_empty_list_of_differences():
    parsed = parse('{"differences": []}')
    assert parsed.complete is True
    assert parsed.usable is False
    assert parsed.error == "the list of differences is empty"


def test_all_rejected_lists_the_reasons():
    answer = diffs(("ears", "pointed ears", "Pointed ears."),
                   ("face", "a scottish terrier has a beard", "a pug has a flat face"),
                   ("coat", "", "a wiry coat"),
                   ("tail", "curled", "curled"))
    parsed = parse(answer)
    assert parsed.attributes == []
    assert parsed.rejected == Counter(identical=2, swapped=1, one_sided=1)
    assert parsed.complete is True
    assert parsed.usable is False
    assert parsed.error == "no attribute survived the checks (2 identical, 1 swapped, 1 one_sided)"


# -- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [
    {"attribute": "ears", "object_1": "folded ears"},
    {"attribute": "ears", "object_2": "pricked ears"},
    {"attribute": "ears", "object_1": "", "object_2": "pricked ears"},
    {"attribute": "ears", "object_1": "folded ears", "object_2": "   "},
    {"attribute": "ears", "object_1": "folded ears", "object_2": None},
    {"attribute": "ears", "object_1": 3, "object_2": "pricked ears"},
    {"attribute": "ears", "object_1": ["folded"], "object_2": "pricked ears"},
    {"attribute": "ears", "object_1": "folded ears", "object_2": {"text": "pricked ears"}},
    {"attribute": "ears", "object_1": "folded ears", "object_2": "\u200b"},
])
def test_one_sided(item):
    coat = {"attribute": COAT[0], "object_1": COAT[1], "object_2": COAT[2]}
    parsed = parse(json.dumps({"differences": [item, coat]}))
    assert parsed.attributes == [PairAttribute(*COAT)]
    assert parsed.rejected == Counter(one_sided=1)
    assert parsed.usable


def test_items_that_are_not_objects_are_one_sided():
    parsed = parse(json.dumps({"differences": ["ears: folded vs pricked", 3, None, list(EARS[1:]),
                                              {"attribute": "ears", "object_1": EARS[1], "object_2": EARS[2]}]}))
    assert parsed.attributes == [PairAttribute("ears", EARS[1], EARS[2])]
    assert parsed.rejected == Counter(one_sided=4)


@pytest.mark.parametrize("sides", [
    ("pointed ears", "pointed ears"),
    ("Pointed ears", "pointed ears."),
    ("a flat-face", "A flat face!"),
    ("“short” coat", "short coat"),
    ("SHORT   coat", "short coat"),
])
def test_identical(sides):
    parsed = parse(diffs(("x",) + sides, EARS))
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.rejected == Counter(identical=1)


@pytest.mark.parametrize("sides", [
    ("a scottish terrier has a long beard", "a pug has a flat face"),
    ("Scottish-Terrier: wiry coat", "PUG: smooth coat"),
    ("like a scottish_terrier, it has a long muzzle", "like a pug, it has a short muzzle"),
])
def test_swapped(sides):
    parsed = parse(diffs(("x",) + sides, EARS))
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.rejected == Counter(swapped=1)


@pytest.mark.parametrize("sides", [
    ("a pug has a short coat", "unlike a pug, a scottish terrier has a wiry coat"),
    ("unlike a scottish terrier, a pug has a curled tail", "a straight tail"),
    ("smaller than a Scottish-Terrier", "a scottish terrier is longer"),
    ("a pug is small", "bigger than a Pug"),
    ("a compact body", "taller than the pug and stockier"),
    ("a scottish terrier has a beard and a pug does not", "a pug has a flat face"),  # first names both
])
def test_names_other_class(sides):
    parsed = parse(diffs(("x",) + sides, EARS))
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.rejected == Counter(names_other_class=1)


@pytest.mark.parametrize("sides", [
    ("pugnacious look", "a scottish terrier's territory"),  # "pug" inside a longer word is no mention
    ("a pug's face", "a terrier-like scottish coat"),      # the words of a name, but not the phrase
    ("scottish fold ears", "pugs? no, terriers"),          # plurals are other words
])
def test_class_names_inside_words_are_not_mentions(sides):
    parsed = parse(diffs(("x",) + sides))
    assert parsed.attributes == [PairAttribute("x", *sides)]
    assert parsed.rejected == Counter()


def test_name_containment_own_name_holds_the_other():
    # "cat" inside "wild cat" is the wild cat side naming itself, not the cat
    answer = diffs(("coat", "a wild cat with stripes", "a cat, plain"),
                   ("size", "a Wild-Cat is larger", "a house cat is smaller"))
    parsed = parse(answer, "wild cat", "cat")
    assert parsed.attributes == [PairAttribute("coat", "a wild cat with stripes", "a cat, plain"),
                                 PairAttribute("size", "a Wild-Cat is larger", "a house cat is smaller")]
    assert parsed.rejected == Counter()
    # the same with the classes the other way round
    parsed = parse(diffs(("coat", "a cat, plain", "a wild cat with stripes")), "cat", "wild cat")
    assert parsed.attributes == [PairAttribute("coat", "a cat, plain", "a wild cat with stripes")]


def test_name_containment_longer_side_naming_the_shorter_class():
    # the wild cat side naming the cat on its own is caught
    parsed = parse(diffs(("temper", "a wild cat, unlike a cat, is shy", "a cat is tame")), "wild cat", "cat")
    assert parsed.attributes == []
    assert parsed.rejected == Counter(names_other_class=1)


def test_name_containment_shorter_side_naming_the_longer_class():
    # the cat side naming "wild cat" names the other class, even though "cat" is inside "wild cat"
    parsed = parse(diffs(("temper", "a cat, unlike a wild cat, is tame", "a wild cat is shy")), "cat", "wild cat")
    assert parsed.attributes == []
    assert parsed.rejected == Counter(names_other_class=1)


def test_name_containment_swapped():
    # wild cat side talks about the cat, cat side about the wild cat: swapped, as for any other pair
    parsed = parse(diffs(("coat", "a cat with plain fur", "a wild cat with stripes")), "wild cat", "cat")
    assert parsed.rejected == Counter(swapped=1)


def test_too_long():
    long_text = "a pug has " + "very " * 20 + "small ears"
    answer = diffs(EARS, ("ears", long_text, "pricked ears"), ("tail", "curled", "straight " * 10))
    parsed = parse(answer, max_chars=60)
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.rejected == Counter(too_long=2)
    assert len(EARS[2]) <= 60 < len(long_text)
    # at the limit is fine
    parsed = parse(diffs(("ears", "x" * 59 + "y", "pricked")), max_chars=60)
    assert parsed.rejected == Counter() and len(parsed.attributes) == 1


def test_duplicate():
    answer = diffs(EARS, ("ear shape", EARS[1].upper(), EARS[2] + "."), FACE,
                   ("ears again", EARS[1], EARS[2]), ("reversed", EARS[2].replace("scottish terrier", "dog"), EARS[1]
                                                      .replace("pug", "dog")))
    parsed = parse(answer)
    assert parsed.attributes == [PairAttribute(*EARS), PairAttribute(*FACE),
                                 PairAttribute("reversed", EARS[2].replace("scottish terrier", "dog"),
                                               EARS[1].replace("pug", "dog"))]
    assert parsed.rejected == Counter(duplicate=2)


def test_same_side_text_in_two_attributes_is_not_duplicate():
    parsed = parse(diffs(("ears", "small", "large"), ("body", "small", "tall")))
    assert [a.attribute for a in parsed.attributes] == ["ears", "body"]
    assert parsed.rejected == Counter()


def test_about_other_class():
    # the callback decides: here, a side is about a zebra when it mentions one and not the pug
    def zebra(text):
        return "zebra" in text and "pug" not in text

    answer = diffs(
        ("stripes", "zebra-like stripes", "a plain coat"),           # side names neither pair class: rejected
        ("legs", "short legs", "a zebra's long legs"),              # same on the second side
        ("coat", "a pug has no zebra stripes", "a wiry coat"),      # names its own class: kept
        EARS,
    )
    parsed = parse(answer, third_class=zebra)
    assert parsed.attributes == [PairAttribute("coat", "a pug has no zebra stripes", "a wiry coat"),
                                 PairAttribute(*EARS)]
    assert parsed.rejected == Counter(about_other_class=2)
    # without a third-class check, all four are kept
    assert len(parse(answer).attributes) == 4


def test_reasons_are_all_known():
    answer = diffs(("a", "x", ""), ("b", "same", "same"), ("c", "a scottish terrier", "a pug"),
                   ("d", "fine", "unlike a pug"), ("e", "zebra", "fine"), ("f", "I'm sorry, no", "fine"),
                   ("g", "y" * 400, "fine"), EARS, EARS)
    parsed = parse(answer, third_class=lambda text: "zebra" in text)
    assert parsed.rejected == Counter({reason: 1 for reason in PAIR_REJECT_REASONS})
    assert set(parsed.rejected) == set(PAIR_REJECT_REASONS)
    assert parsed.attributes == [PairAttribute(*EARS)]
    assert parsed.usable


# -- class_name_matcher -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def breeds():
    classes = ClassList(dataset="breeds", names=("cat", "wild cat", "scottish terrier", "pug", "Great Dane",
                                                 "jack-o'-lantern", "red_fox"))
    return class_name_matcher(classes)


@pytest.mark.parametrize("text, expected", [
    ("a pug", {3}),
    ("A PUG next to a Scottish-Terrier", {2, 3}),
    ("a scottish_terrier", {2}),
    ("scottish   terrier", {2}),
    ("a scottish breed, a terrier", set()),
    ("a catalog of pugnacious dogs", set()),
    ("cats and pugs", set()),
    ("a wild cat", {1}),      # the longest name wins where names overlap
    ("a wild-cat", {1}),
    ("a great dane", {4}),
    ("a Jack-O'-Lantern glows", {5}),
    ("a red fox", {6}),
    ("a red-fox", {6}),
    ("", set()),
    ("cat.", {0}),
    ("(pug)", {3}),
])
def test_class_name_matcher(breeds, text, expected):
    assert breeds(text) == expected


def test_class_name_matcher_exclude():
    classes = ClassList(dataset="breeds", names=("cat", "wild cat", "pug"))
    named = class_name_matcher(classes, exclude=(0, 2))
    assert named("a wild cat and a cat and a pug") == {1}


def test_class_name_matcher_cifar10():
    classes = load_dataset("cifar10")
    named = class_name_matcher(classes)
    index = classes.index_of()
    assert named("a dog chasing a cat") == {index["dog"], index["cat"]}
    assert named("a Truck-like automobile") == {index["truck"], index["automobile"]}
    assert named("a catalog of dogs, frogs and shipping") == set()
    assert named("an AIRPLANE over a ship, a bird, a deer and a horse") == {
        index[n] for n in ("airplane", "ship", "bird", "deer", "horse")}
    # usable as a third_class check in parse_pair_answer
    parsed = parse_pair_answer(diffs(("ears", "pointed ears like a deer", "floppy ears")), "cat", "dog",
                               third_class=lambda text: bool(named(text) - {index["cat"], index["dog"]}))
    assert parsed.rejected == Counter(about_other_class=1)


# -- review fixes -------------------------------------------------------------------------------------------------

def test_sides_that_differ_only_in_the_class_name_are_identical():
    answer = diffs(("ears", "a photo of a pug, with floppy ears.", "a photo of a scottish terrier, with floppy ears."),
                   EARS)
    parsed = parse(answer)
    assert parsed.attributes == [PairAttribute(*EARS)] and parsed.rejected == Counter(identical=1)


def test_brackets_in_the_prose_before_the_json():
    body = json.loads(diffs(EARS))
    parsed = parse("Here is the answer [JSON] {as asked}: " + json.dumps(body) + " [end]")
    assert parsed.usable and parsed.attributes == [PairAttribute(*EARS)] and not parsed.rejected


def test_curly_quotes_inside_strings_with_a_trailing_comma():
    answer = ('{"differences": [{"attribute": "ears", "object_1": "a pug’s “button” ears", '
              '"object_2": "a scottish terrier’s pricked ears"},]}')
    parsed = parse(answer)
    assert parsed.usable and parsed.attributes[0].first == "a pug’s “button” ears"


def test_a_cut_off_list_is_not_mistaken_for_a_whole_answer():
    whole = diffs(EARS, ("tail", "a pug with a curled tail", "a scottish terrier with an upright tail"))
    parsed = parse(whole[: whole.index("upright")])
    assert not parsed.complete and parsed.attributes == [PairAttribute(*EARS)]


@pytest.mark.slow
def test_deep_nesting_is_an_error_not_a_crash():
    parsed = parse("[" * 50_000)
    assert not parsed.complete and not parsed.attributes and "nested too deeply" in parsed.error


def test_class_named_keys_with_underscores():
    answer = json.dumps([{"attribute": "ears", "pug": EARS[1], "scottish_terrier": EARS[2]}])
    assert parse(answer).attributes == [PairAttribute(*EARS)]
