"""Messages quote texts cut at a word boundary, with "…" where they were cut."""

from __future__ import annotations

import re

import pytest

from promptgen.messages import shorten

GLOSS = "warm-blooded egg-laying vertebrates characterized by feathers and forelimbs modified as wings"


@pytest.mark.parametrize("limit", range(5, len(GLOSS) + 2))
def test_a_cut_text_ends_on_a_whole_word_and_is_marked(limit):
    cut = shorten(GLOSS, limit)
    assert len(cut) <= limit
    if len(GLOSS) <= limit:
        assert cut == GLOSS
        return
    assert cut.endswith("…")
    kept = cut[:-1].split()
    if len(GLOSS.split()[0]) >= limit:  # not even the first word fits: it is cut inside
        assert len(kept) == 1 and GLOSS.startswith(kept[0])
    else:
        assert kept and kept == GLOSS.split()[:len(kept)]  # whole words, in order, none cut
        assert len(" ".join(GLOSS.split()[:len(kept) + 1])) + 1 > limit  # and as many as fit


def test_short_texts_stay_whole_on_one_line():
    assert shorten("a  cat\n sat", 20) == "a cat sat"
    assert shorten("", 5) == ""


def test_a_single_word_longer_than_the_limit_is_cut_inside_it():
    assert shorten("x" * 30, 10) == "x" * 9 + "…"


def test_a_cut_after_punctuation_drops_the_dangling_mark():
    assert shorten("apples, pears and plums", 10) == "apples…"


def test_the_wordnet_warning_quotes_glosses_without_half_words(cli):
    result = cli("describe", "cifar10", "--source", "wordnet")
    assert result.exit_code == 0
    quoted = re.findall(r"-> '([^']*)'", result.stderr)
    assert "'bird' -> 'warm-blooded egg-laying vertebrates characterized by…'" in result.stderr
    for gloss in quoted:
        words = gloss.removesuffix("…").split()
        assert all(re.fullmatch(r"[\w(),.-]+", w) for w in words), gloss


def test_a_logged_command_keeps_its_own_whitespace():
    command = "promptgen describe cifar10  --classes 'my\n classes.txt' " + "x " * 300
    cut = shorten(command, 60, one_line=False)
    assert cut.startswith("promptgen describe cifar10  --classes 'my\n classes.txt'") and cut.endswith("x…")
    assert len(cut) <= 60
