"""Turning LLM answers into clean texts: parse_answer (sentence and bullets) and clean_texts."""

from __future__ import annotations

import pytest

from promptgen.answer_lists import strip_markup
from promptgen.parsing import DROP_REASONS, clean_texts, is_refusal, normalise, parse_answer, parse_name_list


def _dropped(parsed) -> dict:
    return {k: v for k, v in parsed.dropped.items() if v}


# -- sentence parser ----------------------------------------------------------------------------

def test_sentence_appends_period() -> None:
    parsed = parse_answer(" A tench is a greenish freshwater fish", "sentence", append=".")
    assert parsed.texts == ["A tench is a greenish freshwater fish."]
    assert _dropped(parsed) == {}


@pytest.mark.parametrize("ending, text", [(".", "It is a fish."), ("!", "It is a fish!."), ("?", "It is a fish?.")])
def test_sentence_appends_after_every_answer_as_cupl(ending: str, text: str) -> None:
    """CuPL appends "." to every answer (generate_image_prompts.py:42), after "?" and "!" too; an
    answer already ending with "." (a provider that ignored the stop sequence) keeps one."""
    parsed = parse_answer(f"It is a fish{ending}", "sentence", append=".")
    assert parsed.texts == [text]


def test_sentence_without_append_is_unchanged() -> None:
    assert parse_answer("It is a fish", "sentence").texts == ["It is a fish"]


def test_sentence_collapses_newlines_and_whitespace() -> None:
    parsed = parse_answer("  A tench\n\nis  a\tgreen\r\nfish  ", "sentence", append=".")
    assert parsed.texts == ["A tench is a green fish."]


def test_sentence_removes_invisible_characters() -> None:
    parsed = parse_answer("A\u200btench\u00adfish", "sentence")
    assert parsed.texts == ["A tench fish"]


@pytest.mark.parametrize("quoted", ['"A green fish"', "\u201cA green fish\u201d", "'A green fish'",
                                    '  "A green fish"  '])
def test_sentence_strips_surrounding_quotes(quoted: str) -> None:
    assert parse_answer(quoted, "sentence", append=".").texts == ["A green fish."]


def test_sentence_keeps_inner_quotes() -> None:
    assert parse_answer('It is called a "tench".', "sentence").texts == ['It is called a "tench".']


@pytest.mark.parametrize("answer", ["", "   ", "\n\n", None, '""'])
def test_sentence_empty(answer) -> None:
    parsed = parse_answer(answer, "sentence", append=".")
    assert parsed.texts == []
    assert _dropped(parsed) == {"empty": 1}


@pytest.mark.parametrize("answer", [
    "I'm sorry, but I can't help with that.",
    "I am sorry, I cannot describe this",
    "As an AI language model, I cannot see images.",
    "A tench, as an AI language model would say, is a fish.",
    "I cannot answer that.",
])
def test_sentence_refusal(answer: str) -> None:
    parsed = parse_answer(answer, "sentence", append=".")
    assert parsed.texts == []
    assert _dropped(parsed) == {"refusal": 1}


@pytest.mark.parametrize("answer", ["\x00 }{ ]]", "123 456", "- -"])
def test_sentence_unparsed(answer: str) -> None:
    parsed = parse_answer(answer, "sentence", append=".")
    assert parsed.texts == []
    assert _dropped(parsed) == {"unparsed": 1}


def test_sentence_too_long() -> None:
    parsed = parse_answer("word " * 100, "sentence", append=".", max_chars=50)
    assert parsed.texts == []
    assert _dropped(parsed) == {"too_long": 1}


def test_sentence_at_max_chars_is_kept() -> None:
    text = "x" * 49 + "."
    assert parse_answer(text, "sentence", append=".", max_chars=50).texts == [text]
    assert parse_answer(text + "y", "sentence", append=".", max_chars=50).dropped["too_long"] == 1


def test_unknown_parser_raises() -> None:
    with pytest.raises(ValueError):
        parse_answer("text", "yaml")


# -- bullets parser -----------------------------------------------------------------------------

def test_bullets_keep_repeats() -> None:
    # DCLIP counts every descriptor of the list, a repeat as often as it occurs
    parsed = parse_answer("- long tail\n- fur\n- long tail", "bullets")
    assert parsed.texts == ["long tail", "fur", "long tail"]
    assert _dropped(parsed) == {}


def test_bullets_normalise_each_line() -> None:
    parsed = parse_answer("-   long  tail \n-  \"large eyes\"\n", "bullets")
    assert parsed.texts == ["long tail", "large eyes"]


def test_bullets_preamble_line_is_unparsed() -> None:
    parsed = parse_answer("Here are some features:\n- long tail\n- large eyes", "bullets")
    assert parsed.texts == ["long tail", "large eyes"]
    assert _dropped(parsed) == {"unparsed": 1}


def test_bullets_stop_at_next_question() -> None:
    answer = ("- long tail\n- large eyes\n\nQ: What are useful features for distinguishing a cat?\n"
              "A: There are several useful visual features:\n- whiskers\n- pointed ears")
    parsed = parse_answer(answer, "bullets")
    assert parsed.texts == ["long tail", "large eyes"]
    assert _dropped(parsed) == {}


def test_bullets_continues_bullet_takes_unmarked_first_line() -> None:
    answer = " long tail\n- large eyes"
    assert parse_answer(answer, "bullets", continues_bullet=True).texts == ["long tail", "large eyes"]
    without = parse_answer(answer, "bullets")
    assert without.texts == ["large eyes"]
    assert _dropped(without) == {"unparsed": 1}


def test_bullets_continues_bullet_only_for_first_line() -> None:
    parsed = parse_answer("long tail\nlarge eyes\n- fur", "bullets", continues_bullet=True)
    assert parsed.texts == ["long tail", "fur"]
    assert _dropped(parsed) == {"unparsed": 1}


def test_bullets_other_markers() -> None:
    parsed = parse_answer("* x-shaped tail\n1. yellow eyes\n2) zebra stripes\n\u2022 dotted fur", "bullets")
    assert parsed.texts == ["x-shaped tail", "yellow eyes", "zebra stripes", "dotted fur"]
    assert _dropped(parsed) == {}


def test_bullets_all_refusal() -> None:
    parsed = parse_answer("I'm sorry, but I can't help with that.\n- no\n- really", "bullets")
    assert parsed.texts == []
    assert _dropped(parsed) == {"refusal": 1}


def test_bullets_refusal_bullets_dropped_individually() -> None:
    parsed = parse_answer("- long tail\n- As an AI language model, I can't see", "bullets")
    assert parsed.texts == ["long tail"]
    assert _dropped(parsed) == {"refusal": 1}


@pytest.mark.parametrize("answer", ["", "\n \n", None])
def test_bullets_empty(answer) -> None:
    parsed = parse_answer(answer, "bullets")
    assert parsed.texts == []
    assert _dropped(parsed) == {"empty": 1}


def test_bullets_too_long_and_unparsed_items() -> None:
    parsed = parse_answer("- " + "y" * 30 + "\n- ??\n- ok fur", "bullets", max_chars=20)
    assert parsed.texts == ["ok fur"]
    assert _dropped(parsed) == {"too_long": 1, "unparsed": 1}


# -- clean_texts and helpers --------------------------------------------------------------------

def test_clean_texts_keeps_published_texts_as_published() -> None:
    """An imported file is the authors' data: repeats, near-empty texts and even refusals are kept
    (their heads count them); only empty strings and over-long texts go, and repeats on request."""
    texts = ["  A  fish. ", "", "A fish.", "I'm sorry, I can't", "}{", ".", "z" * 20, "Another\nfish."]
    parsed = clean_texts(texts, max_chars=18)
    assert parsed.texts == ["A fish.", "A fish.", "I'm sorry, I can't", "}{", ".", "Another fish."]
    assert _dropped(parsed) == {"empty": 1, "too_long": 1}
    deduped = clean_texts(texts, max_chars=18, dedupe=True)
    assert deduped.texts == ["A fish.", "I'm sorry, I can't", "}{", ".", "Another fish."]
    assert _dropped(deduped) == {"empty": 1, "too_long": 1, "duplicate": 1}
    assert set(parsed.dropped) <= set(DROP_REASONS)


def test_clean_texts_does_not_append() -> None:
    assert clean_texts(["a fish"]).texts == ["a fish"]


def test_normalise_and_is_refusal() -> None:
    assert normalise('  "a\n b"  ') == "a b"
    assert normalise('"') == '"'
    assert is_refusal("Sorry, I can't.")
    assert not is_refusal("A sorry-looking fish.")
    assert not is_refusal("Its tail is icy blue.")


@pytest.mark.parametrize("preamble", [
    "There are several useful visual features to tell there is a cat in a photo:",
    "Sure! Here are the features:",
    "Here are some features",
    "Visual features of a cat:",
])
def test_a_chat_preamble_is_not_taken_as_the_continued_first_bullet(preamble):
    parsed = parse_answer(f"{preamble}\n- whiskers\n- pointed ears", "bullets", continues_bullet=True)
    assert parsed.texts == ["whiskers", "pointed ears"]
    assert parsed.dropped["unparsed"] == 1


# -- chat-shaped lists (answer_lists.split_list) -----------------------------------------------------

def test_a_group_label_over_a_sublist_is_not_an_item() -> None:
    answer = "1. **Body:**\n   - long tail\n   - furry coat\n2. **Head**\n   - large eyes"
    parsed = parse_answer(answer, "bullets", continues_bullet=True)
    assert parsed.texts == ["long tail", "furry coat", "large eyes"]
    assert _dropped(parsed) == {"unparsed": 2}


def test_a_label_with_its_explanation_on_the_next_line_is_one_item() -> None:
    answer = "1. **Long tail**\n   ringed black and white\n2. **Eyes:**\n   large and orange\n3. **Fur**: grey"
    assert parse_answer(answer, "bullets").texts == ["Long tail: ringed black and white", "Eyes: large and orange",
                                                     "Fur: grey"]


def test_a_wrapped_item_is_joined_and_a_blank_line_ends_it() -> None:
    answer = "- a long tail that\n  curls at the end\n\n  Note the eyes.\n- large eyes"
    parsed = parse_answer(answer, "bullets")
    assert parsed.texts == ["a long tail that curls at the end", "large eyes"]
    assert _dropped(parsed) == {"unparsed": 1}


def test_the_continued_first_line_is_an_item_unless_the_answer_is_all_prose() -> None:
    assert parse_answer(" four-limbed primate", "bullets", continues_bullet=True).texts == ["four-limbed primate"]
    prose = parse_answer("A lemur is a primate with a long tail.", "bullets", continues_bullet=True)
    assert prose.texts == [] and _dropped(prose) == {"unparsed": 1}
    assert prose.problem == "the answer holds no list (1 line of prose)"
    heading = parse_answer("**Lemur**\n- long tail", "bullets", continues_bullet=True)
    assert heading.texts == ["long tail"] and _dropped(heading) == {"unparsed": 1}


def test_fences_rules_and_lone_markers() -> None:
    parsed = parse_answer("```\n- long tail\n---\n- large eyes\n-\n```", "bullets")
    assert parsed.texts == ["long tail", "large eyes"]
    assert _dropped(parsed) == {"empty": 1}


def test_markup_is_removed_from_sentences_but_lone_stars_and_snake_case_stay() -> None:
    assert parse_answer("**A lemur** has a *long*, `ringed` tail", "sentence", append=".").texts == \
        ["A lemur has a long, ringed tail."]
    assert strip_markup("5 * 3 * 2 great_white_shark") == "5 * 3 * 2 great_white_shark"
    assert strip_markup("***bold italic*** and [a link](https://example.com) and **unclosed") == \
        "bold italic and a link and unclosed"


def test_an_explanation_with_commas_adds_no_names() -> None:
    parsed = parse_name_list("1. cash machine: a machine that dispenses cash, usually at banks\n"
                             "2. **ATM** - automated teller machine, in the US\n3. Informal: hole in the wall, cashpoint")
    assert parsed.texts == ["cash machine", "ATM", "hole in the wall", "cashpoint"]


def test_a_dash_right_against_the_word_is_a_marker_but_a_star_is_italic() -> None:
    parsed = parse_answer("- long tail\n-Stripes unique to each animal\n*large eyes*", "bullets")
    assert parsed.texts == ["long tail", "Stripes unique to each animal"]
    assert _dropped(parsed) == {"unparsed": 1}


@pytest.mark.parametrize("prose", [
    "Koalas are sometimes called koala bears, although they are not bears at all.",
    "It's also known as a trolley bus, trolley coach, or trackless trolley.",
    "A duvet is also called a comforter in American English, or simply a quilt.",
])
def test_a_names_answer_that_is_prose_gives_no_names(prose) -> None:
    parsed = parse_name_list(prose)
    assert parsed.texts == [] and _dropped(parsed) == {"unparsed": 1}
    assert parsed.problem == "the answer holds no list (1 line of prose)"
    assert parse_name_list("ATM; cash machine; cashpoint.").texts == ["ATM", "cash machine", "cashpoint"]


@pytest.mark.parametrize("answer,texts", [
    ("T. rex\nTyrannosaurus rex", ["T. rex", "Tyrannosaurus rex"]),           # initials are not letter markers
    ("Apis mellifera\nA. mellifera\nhoney bee", ["Apis mellifera", "A. mellifera", "honey bee"]),
    ("a. ATM\nb) cash machine\n(c) cashpoint", ["ATM", "cash machine", "cashpoint"]),   # a, b, c is a list
    ("Other names for the koala: koala bear, native bear", ["koala bear", "native bear"]),
    ("The koala is also called: koala bear, native bear", ["koala bear", "native bear"]),
    ("US: trash can; UK: rubbish bin", ["trash can", "rubbish bin"]),
])
def test_name_lists_with_initials_and_labels(answer, texts) -> None:
    assert parse_name_list(answer).texts == texts


@pytest.mark.parametrize("answer,texts", [
    ("E. coli-shaped body\n- rod-shaped", ["E. coli-shaped body", "rod-shaped"]),
    (" a black bill.\n\nQ: What are useful features for distinguishing a duck?\nA: ...\n- orange", ["a black bill."]),
    (" a medium-sized bird.", ["a medium-sized bird."]),                     # a GPT-3 item may end with "."
    (" there are often stools or chairs\n- a counter", ["there are often stools or chairs", "a counter"]),
    ("Long ringed tail.\n- Big eyes.\n- Grey fur.", ["Long ringed tail.", "Big eyes.", "Grey fur."]),
    ("A lemur is a small primate.\n- long tail\n- big eyes", ["long tail", "big eyes"]),
    ("- Wings: two pairs, veined\n  - forewings larger", ["Wings: two pairs, veined", "forewings larger"]),
    ("1. Fur\n   - grey\n2. Tail\n   - ringed", ["Fur", "grey", "Tail", "ringed"]),  # only labels head sub-lists
    ("- long tail\r\n\t- big eyes\r\n", ["long tail", "big eyes"]),
    ("- *Lemur*s have tails\n- ~~big~~ eyes\n- [ ] grey fur", ["Lemurs have tails", "big eyes", "grey fur"]),
])
def test_bullets_edge_cases(answer, texts) -> None:
    assert parse_answer(answer, "bullets", continues_bullet=True).texts == texts


@pytest.mark.parametrize("answer", ["```\n```", "---", "Q: What are useful features?"])
def test_an_answer_of_only_markup_is_unparsed_with_its_reason(answer) -> None:
    parsed = parse_answer(answer, "bullets", continues_bullet=True)
    assert parsed.texts == [] and _dropped(parsed) == {"unparsed": 1}
    assert parsed.problem.startswith("the answer holds no list")


def test_a_refusal_in_markup_is_still_a_refusal() -> None:
    from promptgen.parsing import parse_pair_answer

    assert parse_pair_answer("**I'm sorry**, I can't compare these.", "pug", "boxer").rejected == {"refusal": 1}
    assert _dropped(parse_name_list("**I'm sorry**, I can't help.")) == {"refusal": 1}
    assert _dropped(parse_answer("*I'm sorry*, I can't.\n- long tail", "bullets")) == {"refusal": 1}
