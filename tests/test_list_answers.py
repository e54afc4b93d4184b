"""The list parsers on a corpus of answers written the way models write lists: at least 99% of the
items come back exactly, none is invented, and no markup reaches a kept text.

Two parts: tests/data/list_answers.jsonl, rendered by tests/data/make_list_answers.py from real
DCLIP descriptors and WordNet names, and tests/data/list_answers_handwritten.jsonl, answers
written one by one, without reading the parsers, as GPT-4o, Claude, Llama or GPT-3 lay them out.
`python -m tests.test_list_answers` prints the figures per shape."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from promptgen.classes import load_dataset
from promptgen.testing.fake_server import FakeLLMServer
from promptgen.parsing import parse_answer, parse_name_list, parse_pair_answer

CORPORA = {"rendered": Path(__file__).resolve().parent / "data" / "list_answers.jsonl",
           "handwritten": Path(__file__).resolve().parent / "data" / "list_answers_handwritten.jsonl"}
MARKUP = re.compile(r"\*\*|__|`|^[*_]|[*_]$|^#|^\s*(?:[-•]|\d+[.)])\s")


def load_corpus() -> list[dict]:
    return [{**json.loads(line), "source": source} for source, path in CORPORA.items()
            for line in path.read_text(encoding="utf-8").splitlines()]


def parse(entry: dict) -> tuple[list, object]:
    """What the parser gives back for one corpus answer, in the corpus's terms."""
    if entry["parser"] == "bullets":
        parsed = parse_answer(entry["answer"], "bullets", continues_bullet=entry["continues_bullet"], max_chars=200)
        return parsed.texts, parsed
    if entry["parser"] == "list":
        parsed = parse_name_list(entry["answer"])
        return parsed.texts, parsed
    pair = parse_pair_answer(entry["answer"], *entry["pair"])
    return [[a.attribute, a.first, a.second] for a in pair.attributes], pair


def score(entries: list[dict]) -> dict[tuple[str, str], Counter]:
    """(parser, shape) -> answers, items, recovered (exactly), invented (kept but not an item)."""
    figures: dict[tuple[str, str], Counter] = {}
    for entry in entries:
        got, _ = parse(entry)
        expected = entry["items"] if entry["parser"] != "pair" else entry["attributes"]
        wanted = Counter(json.dumps(item) for item in expected)
        kept = Counter(json.dumps(item) for item in got)
        row = Counter(answers=1, items=sum(wanted.values()), recovered=sum((wanted & kept).values()),
                      invented=sum((kept - wanted).values()))
        for shape in entry["shapes"] + ["all", entry["source"]]:
            figures.setdefault((entry["parser"], shape), Counter()).update(row)
    return figures


def test_the_corpus_covers_every_shape_with_enough_answers():
    entries = load_corpus()
    assert len(entries) >= 200 and Counter(e["source"] for e in entries)["handwritten"] >= 100
    shapes = Counter((entry["parser"], shape) for entry in entries for shape in entry["shapes"])
    for shape in ("dash", "gpt3-continuation", "numbered-dot", "numbered-paren", "numbered-parens", "star",
                  "bullet", "bold", "italic", "code", "lead-in", "heading", "closing", "blank-lines", "label"):
        assert shapes[("bullets", shape)] >= 6, shape
    for shape in ("dash", "numbered-dot", "numbered-paren", "numbered-parens", "star", "bullet", "bold", "italic",
                  "code", "lead-in", "heading", "closing", "blank-lines", "label"):
        assert shapes[("list", shape)] >= 6, shape
    for shape in ("lead-in", "heading", "closing", "blank-lines", "bold", "fenced"):
        assert shapes[("pair", shape)] >= 6, shape


@pytest.mark.parametrize("parser", ["bullets", "list", "pair"])
def test_items_come_back_exactly_and_none_is_invented(parser):
    figures = score([entry for entry in load_corpus() if entry["parser"] == parser])
    total = figures[(parser, "all")]
    assert total["items"] > 0 and total["recovered"] >= 0.99 * total["items"], total
    assert total["invented"] == 0, total
    for (_, shape), row in figures.items():  # and on every shape alone
        assert row["invented"] == 0, (shape, row)
        assert row["recovered"] >= 0.99 * row["items"], (shape, row)


def test_no_markup_reaches_a_kept_text():
    for entry in load_corpus():
        got, _ = parse(entry)
        texts = [t for item in got for t in (item if isinstance(item, list) else [item])]
        assert not [t for t in texts if MARKUP.search(t)], entry["answer"]


def test_an_answer_that_is_all_prose_is_unparsed_with_its_reason():
    prose = [entry for entry in load_corpus() if "all-prose" in entry["shapes"]]
    assert len(prose) >= 10
    for entry in prose:
        texts, parsed = parse(entry)
        assert texts == [] and parsed.dropped["unparsed"] >= 1
        assert parsed.problem and parsed.problem.startswith("the answer holds no list"), entry["answer"]


def test_a_mixed_answer_keeps_the_items_and_counts_the_prose():
    entry = next(e for e in load_corpus() if {"lead-in", "closing", "heading"} <= set(e["shapes"])
                 and e["parser"] == "bullets")
    texts, parsed = parse(entry)
    assert texts == entry["items"]
    assert parsed.dropped["unparsed"] == 3 and parsed.problem is None


def test_describe_stores_clean_texts_from_chat_shaped_answers_over_http(cli, root):
    """The dclip template against a server that answers as chat models do: the stored records are
    the corpus items, the prose around them is counted in the manifest, and a class whose answer
    is all prose is a failure that says so."""
    entries = [e for e in load_corpus() if e["parser"] == "bullets"]
    mixed = [e for e in entries if len(e["shapes"]) >= 3 and "gpt3-continuation" not in e["shapes"]]
    prose = next(e for e in entries if "all-prose" in e["shapes"])
    names = load_dataset("cifar10").names
    answers = dict(zip(names, mixed[:9] + [prose]))

    def answer(messages: list[dict], index: int) -> str:
        question = messages[-1]["content"].rstrip().splitlines()[-2]
        return next(e["answer"] for name, e in answers.items() if f" {name} in a photo" in question)

    with FakeLLMServer(answer=answer) as server:
        result = cli("describe", "cifar10", "--style", "dclip", "--model", "openai/test", "--api-base", server.url,
                     "--no-progress", "--backoff", "0.01")
    assert result.exit_code == 3, result.output
    folder = root / "prompts" / "cifar10" / "dclip"
    rows = [json.loads(line) for line in (folder / "v1.jsonl").read_text().splitlines()]
    meta = json.loads((folder / "v1.manifest.json").read_text())
    for name, entry in list(answers.items())[:9]:
        assert [r["text"] for r in rows if r["class_name"] == name] == entry["items"], entry["answer"]
    assert not [r for r in rows if r["class_name"] == names[9]]
    prose_lines = sum(parse(e)[1].dropped["unparsed"] for e in mixed[:9])
    assert prose_lines >= 9
    attempts = 1 + 2  # the all-prose answer is asked again twice (--answer-retries 2) before it is given up
    assert meta["dropped"]["unparsed"] == prose_lines + attempts * parse(prose)[1].dropped["unparsed"]
    (failure,) = meta["failures"]
    assert failure["class_name"] == names[9] and failure["reason"] == "unusable answer"
    assert "the answer holds no list" in failure["error"]


def main() -> None:
    figures = score(load_corpus())
    print(f"{'parser':8} {'shape':18} {'answers':>7} {'items':>6} {'recovered':>9} {'invented':>8}")
    first = {"all": 0} | {source: rank for rank, source in enumerate(CORPORA, 1)}  # totals before shapes
    for (parser, shape), row in sorted(figures.items(), key=lambda kv: (kv[0][0], first.get(kv[0][1], 9), kv[0][1])):
        share = f"{row['recovered'] / row['items']:.1%}" if row["items"] else "-"
        print(f"{parser:8} {shape:18} {row['answers']:7} {row['items']:6} {row['recovered']:9} {row['invented']:8}"
              f"  {share}")


if __name__ == "__main__":
    main()
