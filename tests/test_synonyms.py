"""The synonyms stage (wordnet and llm), the name-list parser and `promptgen rename` (REAL)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from promptgen.classes import ClassList, load_dataset
from promptgen.errors import PromptgenError
from promptgen.names import Candidate
from promptgen.parsing import parse_name_list, parse_ratings
from promptgen.rename import choose_names, filter_candidates, load_rename_file
from promptgen.testing.fake_server import FakeLLMServer
from tests.conftest import TINY_ARGS


def records(root: Path, dataset: str, set_name: str, version: int) -> list[dict]:
    path = root / "prompts" / dataset / set_name / f"v{version}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def manifest(root: Path, dataset: str, set_name: str, version: int) -> dict:
    return json.loads((root / "prompts" / dataset / set_name / f"v{version}.manifest.json").read_text())


def names_of(rows: list[dict], class_name: str, source: str | None = None) -> list[str]:
    return [r["text"] for r in rows if r["class_name"] == class_name and (source is None or r["source"] == source)]


def write_classes(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def cands(official: str, *others: str) -> list[Candidate]:
    return [Candidate(official, ["official"])] + [Candidate(o, ["wordnet"]) for o in others]


# -- 1. parse_name_list on messy answers ----------------------------------------------------------

LIST_CASES = [
    # numbering styles
    ("1. ATM\n2) cash machine\n(3) cashpoint\na. bank machine\nb) hole in the wall",
     ["ATM", "cash machine", "cashpoint", "bank machine", "hole in the wall"], {}),
    # bullets and explanations after " - ", ": ", " ("
    ("- cash machine: a machine that dispenses cash\n* cashpoint - British usage\n• ATM (automated teller machine)",
     ["cash machine", "cashpoint", "ATM"], {}),
    # markdown bold/italic and quotes
    ("1. **Cat**\n2. *Felis catus*\n3. \"kitty\"\n4. 'puss'\n5. __moggy__",
     ["Cat", "Felis catus", "kitty", "puss", "moggy"], {}),
    ("1. Cat\n2. kitty\n3. **Felis catus** - scientific name\n4. house cat",
     ["Cat", "kitty", "Felis catus", "house cat"], {}),
    # a lead-in line is dropped and counted
    ("Here are some common names:\n1. ATM\n2. bank machine", ["ATM", "bank machine"], {"unparsed": 1}),
    ("Sure! Here are some common ways to refer to a cat:\n\n- cat\n- kitty", ["cat", "kitty"], {"unparsed": 1}),
    # comma / semicolon separated one-liners
    ("ATM, cash machine, cashpoint", ["ATM", "cash machine", "cashpoint"], {}),
    ("ATM; cash machine; cashpoint.", ["ATM", "cash machine", "cashpoint"], {}),
    # duplicates differing in case: first spelling kept
    ("1. Cat\n2. cat\n3. CAT\n4. kitty\n5. Kitty", ["Cat", "kitty"], {"duplicate": 3}),
    # empty answers
    ("", [], {"empty": 1}),
    ("  \n\t\n", [], {"empty": 1}),
    # a refusal
    ("I'm sorry, but I can't help with that request.", [], {"refusal": 1}),
    ("As an AI language model, I cannot list names.", [], {"refusal": 1}),
    # only the class name
    ("great white shark", ["great white shark"], {}),
    # overlong: too many characters, too many words
    ("1. " + "x" * 81 + "\n2. ok name", ["ok name"], {"too_long": 1}),
    ("- one two three four five six seven eight nine\n- fine", ["fine"], {"too_long": 1}),
    # items with no letters
    ("- 42\n- ...\n- dog", ["dog"], {"unparsed": 1, "empty": 1}),
    # a scientific-name hint is removed
    ("1. scientific name: Felis catus\n2. cat", ["Felis catus", "cat"], {}),
]


@pytest.mark.parametrize("answer,texts,dropped", LIST_CASES, ids=[f"case{i}" for i in range(len(LIST_CASES))])
def test_parse_name_list_corpus(answer, texts, dropped):
    parsed = parse_name_list(answer)
    assert parsed.texts == texts
    assert {k: v for k, v in parsed.dropped.items() if v} == dropped


def test_parse_name_list_parenthesised_scientific_hint_is_fully_removed():
    # "(Latin: Felis catus)" is a documented form (_SCIENTIFIC_HINT accepts the opening "("):
    # the name is "Felis catus", and it repeats the first item.
    parsed = parse_name_list("1. Felis catus\n2. (Latin: Felis catus)\n3. (scientific name: Felis silvestris)")
    assert parsed.texts == ["Felis catus", "Felis silvestris"]
    assert parsed.dropped["duplicate"] == 1


def test_parse_name_list_max_chars_is_respected():
    parsed = parse_name_list("- abcdefghij\n- abcdefghijk", max_chars=10)
    assert parsed.texts == ["abcdefghij"] and parsed.dropped["too_long"] == 1


def test_parse_ratings_json_lines_and_fences():
    assert parse_ratings('{"kitty": 9, "cat": 3}') == {"kitty": 9.0, "cat": 3.0}
    assert parse_ratings('Sure:\n```json\n{"Kitty": 9, "Cat": 3.5, "x": "high", "y": true}\n```') == \
        {"kitty": 9.0, "cat": 3.5}
    assert parse_ratings("kitty: 7\n- **puss** - 5/10\n1. house cat = 2\nnot a rating") == \
        {"kitty": 7.0, "puss": 5.0, "house cat": 2.0}
    assert parse_ratings("(1) **kitty**: 7\n(2) puss - 5/10\n+ house cat (2)") == \
        {"kitty": 7.0, "puss": 5.0, "house cat": 2.0}
    assert parse_ratings("") == {} and parse_ratings(None) == {}


# -- 2. wordnet synonyms --------------------------------------------------------------------------

def test_wordnet_synonyms_for_imagenet(cli, root):
    result = cli("synonyms", "imagenet")
    assert result.exit_code == 0, result.output
    rows = records(root, "imagenet", "synonyms", 1)
    meta = manifest(root, "imagenet", "synonyms", 1)
    assert meta["text_kind"] == "synonym" and meta["stage"] == "synonyms" and meta["source"] == "wordnet"
    assert len({r["id"] for r in rows}) == len(rows)
    keys = [(r["class_index"], r["text"].casefold(), r["source"]) for r in rows]
    assert len(set(keys)) == len(keys), "one record per (class, name, source)"
    assert meta["counts"]["records"] == len(rows)
    official = [r for r in rows if r["source"] == "official"]
    assert [(r["class_index"], r["text"]) for r in official] == [(r["class_index"], r["class_name"]) for r in official]
    assert sorted(r["class_index"] for r in official) == list(range(1000))
    assert {r["stage"] for r in rows} == {"synonyms"} and {r["kind"] for r in rows} == {"synonym"}
    shark = names_of(rows, "great white shark", "wordnet")
    assert {"great white shark", "white shark", "man-eater", "Carcharodon carcharias"} <= set(shark)
    assert names_of(rows, "great white shark", "official") == ["great white shark"]
    atm = names_of(rows, "automated teller machine")
    assert {"ATM", "cash machine", "automated teller machine"} <= set(atm)
    # records are in class order, the official name first within a class
    order = [r["class_index"] for r in rows]
    assert order == sorted(order)
    firsts = {}
    for r in rows:
        firsts.setdefault(r["class_index"], r)
    assert all(r["source"] == "official" for r in firsts.values())


def test_wordnet_classes_with_other_names_counts_real_synonyms(cli, root):
    # "car wheel" has only its own name as lemma: the official and wordnet records spell the same name.
    assert cli("synonyms", "imagenet").exit_code == 0
    rows = records(root, "imagenet", "synonyms", 1)
    meta = manifest(root, "imagenet", "synonyms", 1)
    distinct = Counter()
    for r in {(r["class_index"], r["text"].casefold()) for r in rows}:
        distinct[r[0]] += 1
    assert distinct[479] == 1 and names_of(rows, "car wheel") == ["car wheel", "car wheel"]
    expected = sum(1 for c in range(1000) if distinct[c] > 1)
    assert meta["counts"]["classes_with_other_names"] == expected


def test_wordnet_user_class_list_with_made_up_name(cli, root, tmp_path):
    classes = write_classes(tmp_path, "great white shark", "flurbinator gizmo", "goldfish")
    result = cli("synonyms", "mine", "--classes", classes)
    assert result.exit_code == 0, result.output
    assert "flurbinator gizmo" in result.stderr and "1 classes matched no WordNet synset" in result.stderr
    rows = records(root, "mine", "synonyms", 1)
    assert [(r["text"], r["source"]) for r in rows if r["class_name"] == "flurbinator gizmo"] == \
        [("flurbinator gizmo", "official")]
    assert "Carassius auratus" in names_of(rows, "goldfish", "wordnet")
    meta = manifest(root, "mine", "synonyms", 1)
    assert meta["counts"]["unmatched"] == 1
    assert meta["classes_without_synonyms"] == [{"class_index": 1, "class_name": "flurbinator gizmo",
                                                 "reason": "no synset"}]


def test_wordnet_dry_run_writes_nothing(cli, root):
    result = cli("synonyms", "imagenet", "--dry-run")
    assert result.exit_code == 0 and "0 requests" in result.output
    assert not (root / "prompts" / "imagenet").exists()


# -- 3. llm synonyms through the fake server ------------------------------------------------------

def scripted(answers: dict[str, str], asked: Counter):
    def answer(messages, index):
        prompt = messages[-1]["content"]
        for key, text in answers.items():
            if f" {key}?" in prompt:
                asked[key] += 1
                return text
        asked["?"] += 1
        return "1. something"
    return answer


def llm_synonyms(cli, url, *extra):
    return cli("synonyms", *extra, "--source", "llm", "--model", "openai/test", "--api-base", url,
               "--no-progress", "--backoff", "0.01")


def test_llm_synonyms_with_scripted_lists(cli, root, tmp_path):
    asked = Counter()
    answers = {"cat": "1. Cat\n2. kitty\n3. **Felis catus** - scientific name\n4. house cat\n5. KITTY",
               "dog": "Here are some common names:\n- doggy\n- hound (a hunting dog)\n- Dog",
               "fox": ""}
    classes = write_classes(tmp_path, "cat", "dog", "fox")
    with FakeLLMServer(answer=scripted(answers, asked)) as server:
        result = llm_synonyms(cli, server.url, "mypets", "--classes", classes)
        assert result.exit_code == 3, result.output
        # the empty answer was re-asked (answer_retries defaults to 2), the others were asked once
        assert asked == Counter({"cat": 1, "dog": 1, "fox": 3})
    rows = records(root, "mypets", "synonyms", 1)
    assert [(r["text"], r["source"]) for r in rows if r["class_name"] == "cat"] == \
        [("cat", "official"), ("Cat", "llm"), ("kitty", "llm"), ("Felis catus", "llm"), ("house cat", "llm")]
    assert [(r["text"], r["source"]) for r in rows if r["class_name"] == "dog"] == \
        [("dog", "official"), ("doggy", "llm"), ("hound", "llm"), ("Dog", "llm")]
    assert [(r["text"], r["source"]) for r in rows if r["class_name"] == "fox"] == [("fox", "official")]
    assert len({r["id"] for r in rows}) == len(rows)
    meta = manifest(root, "mypets", "synonyms", 1)
    assert meta["text_kind"] == "synonym" and meta["stage"] == "synonyms"
    assert [(f["class_name"], f["reason"]) for f in meta["failures"]] == [("fox", "unusable answer")]
    assert meta["dropped"]["duplicate"] >= 1 and meta["dropped"]["unparsed"] == 1 and meta["dropped"]["empty"] == 3
    assert meta["counts"]["unusable_answers"] == 1
    assert "keep their official name" in result.stderr


def test_llm_synonyms_refusal_is_reasked_then_kept_official(cli, root, tmp_path):
    asked = Counter()
    answers = {"cat": "I'm sorry, but I can't help with that request.", "dog": "1. doggy"}
    classes = write_classes(tmp_path, "cat", "dog")
    with FakeLLMServer(answer=scripted(answers, asked)) as server:
        result = llm_synonyms(cli, server.url, "mypets2", "--classes", classes, "--answer-retries", "1")
        assert result.exit_code == 3, result.output
        assert asked == Counter({"cat": 2, "dog": 1})
    rows = records(root, "mypets2", "synonyms", 1)
    assert [(r["text"], r["source"]) for r in rows if r["class_name"] == "cat"] == [("cat", "official")]
    meta = manifest(root, "mypets2", "synonyms", 1)
    assert meta["dropped"]["refusal"] == 2 and meta["failures"][0]["class_name"] == "cat"


def test_llm_synonyms_dry_run_sends_nothing_and_needs_model(cli, root, fake_llm, tmp_path):
    classes = write_classes(tmp_path, "cat", "dog")
    result = cli("synonyms", "mypets3", "--classes", classes, "--source", "llm", "--model", "openai/test",
                 "--api-base", fake_llm.url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing was sent" in result.output and fake_llm.request_count == 0
    assert not (root / "prompts" / "mypets3").exists()
    missing = cli("synonyms", "mypets3", "--classes", classes, "--source", "llm")
    assert missing.exit_code == 2 and "fix:" in missing.stderr


def test_llm_synonyms_sends_the_synonyms_template(cli, root, tmp_path):
    seen = []

    def answer(messages, index):
        seen.append(messages)
        return "1. kitty"
    classes = write_classes(tmp_path, "cat")
    with FakeLLMServer(answer=answer) as server:
        assert llm_synonyms(cli, server.url, "mypets4", "--classes", classes).exit_code == 0
        body = server.state.requests[0]
    assert body["temperature"] == 0 and body["max_tokens"] == 120
    assert seen[0][-1]["content"] == "What are some common ways of referring to a cat? Give me a numbered list only."
    assert seen[0][0]["role"] == "system"


# -- 4. filters -----------------------------------------------------------------------------------

def test_ambiguous_filter_rejects_shared_names_in_every_class_but_never_official():
    classes = ClassList("t", ("jaguar", "sports car", "panther", "cougar"))
    candidates = [cands("jaguar", "Panthera onca", "Jaguar car"),
                  cands("sports car", "JAGUAR", "jaguar car", "roadster"),
                  cands("panther", "big cat", "Puma"),
                  cands("cougar", "puma", "Big Cat", "mountain lion")]
    verdicts = filter_candidates(classes, candidates, ("ambiguous",))
    assert verdicts[0] == [None, None, "ambiguous: also 'sports car'"]
    assert verdicts[1][0] is None
    assert verdicts[1][1] == "ambiguous: also 'jaguar'"  # equal to another class's official name, any case
    assert verdicts[1][2] == "ambiguous: also 'jaguar'"
    assert verdicts[1][3] is None
    assert verdicts[2] == [None, "ambiguous: also 'cougar'", "ambiguous: also 'cougar'"]
    assert verdicts[3] == [None, "ambiguous: also 'panther'", "ambiguous: also 'panther'", None]
    # no filter, no verdict
    assert filter_candidates(classes, candidates, ()) == [[None] * len(c) for c in candidates]


def test_official_name_never_rejected_even_when_another_class_lists_it():
    classes = ClassList("t", ("cock", "rooster"))
    candidates = [cands("cock", "rooster"), cands("rooster", "cock", "chanticleer")]
    verdicts = filter_candidates(classes, candidates, ("ambiguous", "subset"))
    assert verdicts[0][0] is None and verdicts[1][0] is None
    assert verdicts[0][1].startswith("ambiguous") and verdicts[1][1].startswith("ambiguous")
    assert verdicts[1][2] is None


def test_subset_filter():
    classes = ClassList("t", ("honda accord", "great white shark"))
    candidates = [cands("honda accord", "honda", "Accord", "accord coupe", "Honda-Accord", "accord honda"),
                  cands("great white shark", "white shark", "shark", "man-eater")]
    verdicts = filter_candidates(classes, candidates, ("subset",))
    # REAL keeps a name with the official name's words in another order or spelling (laion_parser.py)
    assert verdicts[0] == [None, "subset of 'honda accord'", "subset of 'honda accord'", None, None, None]
    assert verdicts[1] == [None, "subset of 'great white shark'", "subset of 'great white shark'", None]


def test_unknown_filter_is_refused():
    classes = ClassList("t", ("a b", "c d"))
    with pytest.raises(PromptgenError, match="unknown filter"):
        filter_candidates(classes, [cands("a b"), cands("c d")], ("bogus",))


def independent_margins(encoder, classes, candidates):
    official = encoder.encode_normalized([f"a photo of a {c}." for c in classes.names])
    margins = []
    for c, per_class in enumerate(candidates):
        sims = encoder.encode_normalized([f"a photo of a {cand.name}." for cand in per_class]) @ official.T
        row = []
        for k in range(len(per_class)):
            values = [float(v) for v in sims[k]]
            row.append(values[c] - max(v for j, v in enumerate(values) if j != c))
        margins.append(row)
    return margins


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    from promptgen.clip.embed import TextEncoder

    return TextEncoder(tiny_clip, None)


def test_clip_filter_matches_an_independent_margin(encoder):
    classes = ClassList("t", ("cat", "dog", "automobile", "airplane"))
    candidates = [cands("cat", "kitty", "house cat", "feline", "dog-like cat"),
                  cands("dog", "doggy", "hound", "puppy", "canine"),
                  cands("automobile", "car", "motorcar", "auto", "plane"),
                  cands("airplane", "aeroplane", "plane", "jet", "aircraft")]
    margins = independent_margins(encoder, classes, candidates)
    verdicts = filter_candidates(classes, candidates, ("clip",), encoder=encoder)
    for c, per_class in enumerate(candidates):
        assert verdicts[c][0] is None, "the official name is never rejected"
        for k in range(1, len(per_class)):
            if margins[c][k] <= 0:
                assert verdicts[c][k] == f"clip: nearer another class ({margins[c][k]:+.3f})"
            else:
                assert verdicts[c][k] is None
    flat = [m for row in margins for m in row[1:]]
    assert any(m <= 0 for m in flat) and any(m > 0 for m in flat), "the case should have both verdicts"
    with pytest.raises(PromptgenError, match="CLIP"):
        filter_candidates(classes, candidates, ("clip",))


# -- 5. scorers -----------------------------------------------------------------------------------

def test_first_scorer_keeps_official_names():
    classes = ClassList("t", ("automobile", "rooster"))
    candidates = [cands("automobile", "car"), cands("rooster", "cock")]
    result = choose_names(classes, candidates, "first", filters=())
    assert result.chosen == ["automobile", "rooster"] and result.renamed == []
    assert [c["score"] for c in result.rows[0]["candidates"]] == [1.0, 0.0]


def test_frequency_scorer():
    from wordfreq import zipf_frequency

    classes = ClassList("t", ("automobile", "automated teller machine", "cat", "zzqx flurb"))
    candidates = [cands("automobile", "car", "motorcar"),
                  cands("automated teller machine", "atm", "cash dispenser"),
                  cands("cat", "kitty"),
                  cands("zzqx flurb", "qqxz blorf")]
    result = choose_names(classes, candidates, "frequency", filters=())
    assert result.chosen[0] == "car" and result.chosen[1] == "atm"
    assert zipf_frequency("atm", "en") > max(zipf_frequency("cash dispenser", "en"),
                                             zipf_frequency("automated teller machine", "en"))
    assert result.chosen[2] == "cat", "kitty is rarer than cat"
    assert result.chosen[3] == "zzqx flurb", "a tie (both 0) goes to the official name"
    row = result.rows[0]
    assert row["renamed"] and [c["score"] for c in row["candidates"]] == \
        [round(zipf_frequency(n, "en"), 6) for n in ("automobile", "car", "motorcar")]
    assert result.to_json()["renamed"] == 2 and result.to_json()["classes"] == 4
    # margin: car beats automobile by ~1.5, atm beats automated teller machine by ~0.5
    assert choose_names(classes, candidates, "frequency", filters=(), margin=5).chosen == list(classes.names)
    assert choose_names(classes, candidates, "frequency", filters=(), margin=1.0).chosen[:2] == \
        ["car", "automated teller machine"]


def test_frequency_scorer_skips_rejected_candidates():
    classes = ClassList("t", ("honda accord", "car"))
    candidates = [cands("honda accord", "honda", "car"), cands("car", "automobile")]
    result = choose_names(classes, candidates, "frequency")  # default filters ambiguous, subset
    assert result.chosen == ["honda accord", "car"]
    rejected = {c["name"]: c["rejected"] for c in result.rows[0]["candidates"]}
    assert rejected["honda"].startswith("subset") and rejected["car"].startswith("ambiguous")


def test_clip_scorer_picks_the_largest_margin(encoder):
    classes = ClassList("t", ("cat", "dog", "automobile"))
    candidates = [cands("cat", "kitty", "house cat", "feline", "moggy"),
                  cands("dog", "doggy", "hound", "puppy"),
                  cands("automobile", "car", "motorcar", "auto")]
    margins = independent_margins(encoder, classes, candidates)
    result = choose_names(classes, candidates, "clip", filters=(), encoder=encoder)
    for c, per_class in enumerate(candidates):
        best = max(range(len(per_class)), key=lambda k: margins[c][k])
        expected = per_class[best].name if margins[c][best] > margins[c][0] else classes.names[c]
        assert result.chosen[c] == expected
        assert [c_["score"] for c_ in result.rows[c]["candidates"]] == pytest.approx(margins[c], abs=1e-5)


def test_llm_scorer_through_the_fake_server(cli, root, tmp_path):
    asked = []

    def answer(messages, index):
        prompt = messages[-1]["content"]
        asked.append(prompt)
        if "refer to a cat" in prompt:
            return '{"kitty": 9, "cat": 3, "house cat": 5}'
        if "refer to a dog" in prompt:
            return "dog: 7\ndoggy: 8\n- hound - 9/10"
        return "no idea"
    classes = write_classes(tmp_path, "cat", "dog", "newt")
    syn = {"cat": "1. kitty\n2. house cat\n3. moggy", "dog": "1. doggy\n2. hound\n3. pooch", "newt": "1. eft"}
    with FakeLLMServer(answer=scripted(syn, Counter())) as server:
        assert llm_synonyms(cli, server.url, "mypets5", "--classes", classes).exit_code == 0
    with FakeLLMServer(answer=answer) as server:
        result = cli("rename", "mypets5", "--classes", classes, "--scorer", "llm", "--model", "openai/test",
                     "--api-base", server.url, "--no-progress", "--json", "--filters", "none")
        assert result.exit_code == 0, result.output
    # one question per class; the unreadable newt answer is asked twice more (--answer-retries 2)
    assert len(asked) == 5 and sum("refer to a newt" in p for p in asked) == 3
    assert any("- kitty\n- house cat\n- moggy" in p for p in asked)
    report = json.loads(result.stdout)
    assert report["scorer_report"]["classes_unrated"] == ["newt"] and report["scorer_report"]["failed"] == []
    assert report["scorer_report"]["model"] == "openai/test"
    rows = {r["official"]: r for r in report["rows"]}
    assert rows["cat"]["chosen"] == "kitty"
    assert {c["name"]: c["score"] for c in rows["cat"]["candidates"]} == \
        {"cat": 3.0, "kitty": 9.0, "house cat": 5.0, "moggy": 0.0}
    # hound (9) beats doggy (8) and the official dog (7); pooch was not rated
    assert rows["dog"]["chosen"] == "hound"
    assert {c["name"]: c["score"] for c in rows["dog"]["candidates"]}["pooch"] == 0.0
    # nothing parsable: every name scores 0, the official name keeps the tie
    assert rows["newt"]["chosen"] == "newt" and not rows["newt"]["renamed"]


# -- 6. the rename CLI ----------------------------------------------------------------------------

@pytest.fixture
def imagenet_synonyms(cli, root):
    assert cli("synonyms", "imagenet").exit_code == 0
    return root


def test_rename_table_and_json(cli, imagenet_synonyms, tmp_path):
    # margin 0: REAL's walk as it is (the default margin renames no ImageNet class, see the end)
    table = cli("rename", "imagenet", "--limit", "0", "--margin", "0")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    header = lines[0]
    assert header.startswith("imagenet: ") and " of 1000 classes renamed by frequency" in header
    assert "filters: ambiguous, subset" in header and "imagenet/synonyms@v1" in header
    count = int(header.split(": ")[1].split(" of ")[0])
    shown = [line for line in lines[1:] if " -> " in line]
    assert len(shown) == count > 0
    pairs = {line.split(" -> ")[0].strip(): line.split(" -> ")[1].split("  (")[0] for line in shown}
    assert pairs["rooster"] == "cock"
    assert pairs["automated teller machine"] == "cash machine"

    out = tmp_path / "rename.json"
    as_json = cli("rename", "imagenet", "--json", "-o", out, "--margin", "0")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report == json.loads(out.read_text())
    assert report["format"] == "promptgen.rename/1" and report["scorer"] == "frequency"
    assert report["classes"] == 1000 and report["renamed"] == count and report["sets"] == ["imagenet/synonyms@v1"]
    assert len(report["rows"]) == 1000
    for row in report["rows"]:
        assert row["candidates"][0]["name"] == row["official"] and row["candidates"][0]["rejected"] is None
        assert all(set(c) == {"name", "sources", "score", "rejected"} for c in row["candidates"])
        assert row["renamed"] == (row["chosen"] != row["official"])
        if row["renamed"]:
            won = next(c for c in row["candidates"] if c["name"] == row["chosen"])
            assert won["rejected"] is None and won["score"] > row["candidates"][0]["score"]
    rows = {r["official"]: r for r in report["rows"]}
    shark = {c["name"]: c for c in rows["great white shark"]["candidates"]}
    assert shark["white shark"]["rejected"] == "subset of 'great white shark'"
    assert set(shark["great white shark"]["sources"]) == {"official", "wordnet"}
    rooster = {c["name"]: c["score"] for c in rows["rooster"]["candidates"]}
    assert rooster["cock"] > rooster["rooster"]
    # deterministic
    again = json.loads(cli("rename", "imagenet", "--json", "--margin", "0").stdout)
    assert again["rows"] == report["rows"]
    # the default limit of 20 rows and a pointer to the rest
    short = cli("rename", "imagenet", "--margin", "0")
    assert len([line for line in short.output.splitlines() if " -> " in line]) == 20
    assert f"and {count - 20} more" in short.output
    # the default margin (rename.FREQUENCY_MARGIN, measured in benchmarks/README.md) renames no
    # ImageNet class: wordfreq agrees with REAL's LAION names less often than the official names
    none = cli("rename", "imagenet")
    assert none.output.startswith("imagenet: 0 of 1000 classes renamed")
    assert cli("rename", "imagenet", "--margin", "4").output.startswith("imagenet: 1 of 1000 classes renamed")


def test_rename_errors(cli, root, tmp_path):
    assert cli("synonyms", "cifar10").exit_code == 0
    bogus = cli("rename", "cifar10", "--scorer", "bogus")
    assert bogus.exit_code == 2 and "unknown scorer 'bogus'" in bogus.stderr and "fix:" in bogus.stderr
    bad_filter = cli("rename", "cifar10", "--filters", "ambiguous,bogus")
    assert bad_filter.exit_code == 2 and "unknown filter(s) bogus" in bad_filter.stderr and "fix:" in bad_filter.stderr
    no_model = cli("rename", "cifar10", "--scorer", "llm")
    assert no_model.exit_code == 2 and "--model" in no_model.stderr and "fix:" in no_model.stderr
    assert cli("describe", "cifar10", "--source", "wordnet", "--set", "glosses").exit_code == 0
    wrong = cli("rename", "cifar10", "--set", "glosses")
    assert wrong.exit_code == 2 and "is not a synonyms set" in wrong.stderr and "fix:" in wrong.stderr
    none = cli("rename", "cifar10", "--filters", "none", "--scorer", "first")
    assert none.exit_code == 0 and "0 of 10 classes renamed by first (filters: none" in none.output


def test_rename_with_clip_filter_on_tiny_model(cli, root):
    assert cli("synonyms", "cifar10").exit_code == 0
    result = cli("rename", "cifar10", "--filters", "clip", "--scorer", "clip", "--json", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for row in report["rows"]:
        for cand in row["candidates"][1:]:
            assert (cand["rejected"] is not None) == (cand["score"] <= 0)
        best = max(row["candidates"], key=lambda c: c["score"])
        if row["renamed"]:
            assert row["chosen"] == best["name"]


# -- 7. load_rename_file --------------------------------------------------------------------------

def test_load_rename_file_round_trip_and_refusals(cli, root, tmp_path):
    from promptgen.classes import load_dataset

    assert cli("synonyms", "cifar10").exit_code == 0
    out = tmp_path / "r.json"
    assert cli("rename", "cifar10", "-o", out, "--margin", "0").exit_code == 0
    classes = load_dataset("cifar10")
    report = json.loads(out.read_text())
    chosen = load_rename_file(out, classes)
    assert chosen == [r["chosen"] for r in report["rows"]] and len(chosen) == 10
    assert chosen[classes.names.index("automobile")] == "car"
    with pytest.raises(PromptgenError, match="not a rename file for cifar100"):
        load_rename_file(out, load_dataset("cifar100"))
    reordered = ClassList("cifar10", tuple(reversed(classes.names)))
    with pytest.raises(PromptgenError, match="not a rename file"):
        load_rename_file(out, reordered)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PromptgenError, match="cannot read rename file"):
        load_rename_file(bad, classes)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**report, "format": "something/1"}))
    with pytest.raises(PromptgenError, match="not a rename file"):
        load_rename_file(other, classes)
    with pytest.raises(PromptgenError, match="cannot read"):
        load_rename_file(tmp_path / "missing.json", classes)


def test_rename_refuses_a_set_for_another_class_list(cli, root, tmp_path):
    first = write_classes(tmp_path, "cat", "dog")
    assert cli("synonyms", "mypets6", "--classes", first).exit_code == 0
    second = tmp_path / "second.txt"
    second.write_text("cat\nwolf\n")
    result = cli("rename", "mypets6", "--classes", second)
    assert result.exit_code == 2 and "does not match the class list" in result.stderr and "fix:" in result.stderr
    # a set of another dataset named explicitly
    from promptgen.cli.common import store_from
    from promptgen.classes import load_dataset
    from promptgen.stages.synonyms import load_candidates

    assert cli("synonyms", "cifar10").exit_code == 0
    store = store_from(root)
    with pytest.raises(PromptgenError, match="made for another class list than cifar100"):
        load_candidates(store, "cifar10/synonyms", load_dataset("cifar100"))
    candidates, info = load_candidates(store, "cifar10/synonyms@v1", load_dataset("cifar10"))
    assert str(info.ref) == "cifar10/synonyms@v1"
    automobile = candidates[1]
    assert automobile[0].name == "automobile" and automobile[0].sources == ["official", "wordnet"]
    assert "car" in [c.name for c in automobile] and all(len(per) >= 1 for per in candidates)


def test_replace_name_whole_phrase_any_case():
    from promptgen.rename import replace_name

    text = "A photo of a Great-White shark; great white sharks and a great white shark."
    assert replace_name(text, "great white shark", "white shark") == \
        "A photo of a white shark; great white sharks and a white shark."
    assert replace_name("a photo of a cat.", "cat", "cat") == "a photo of a cat."
    assert replace_name("a photo of a tomcat.", "cat", "kitty") == "a photo of a tomcat."


def test_llm_synonyms_from_the_default_fake_server(cli, fake_llm, root):
    """The fake server answers REAL's list question with a numbered list, so the README's LLM-free
    trial works end to end: every class keeps its official name and gains the listed ones."""
    result = cli("synonyms", "cifar10", "--source", "llm", "--model", "openai/test", "--api-base", fake_llm.url,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 10
    path = root / "prompts" / "cifar10" / "synonyms" / "v1.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for index, name in enumerate(load_dataset("cifar10").names):
        mine = [r for r in rows if r["class_index"] == index]
        assert [r["source"] for r in mine if r["text"] == name] == ["official", "llm"]
        assert len({r["text"].casefold() for r in mine}) == 3


def test_llm_scorer_dry_run_sends_nothing_and_failures_exit_3(cli, root, tmp_path):
    classes = write_classes(tmp_path, "cat", "dog")
    syn = {"cat": "1. kitty", "dog": "1. doggy"}
    with FakeLLMServer(answer=scripted(syn, Counter())) as server:
        assert llm_synonyms(cli, server.url, "mypets6", "--classes", classes).exit_code == 0
    with FakeLLMServer(answer=lambda messages, index: '{"kitty": 9}') as server:
        dry = cli("rename", "mypets6", "--classes", classes, "--scorer", "llm", "--model", "openai/test",
                  "--api-base", server.url, "--dry-run", "--price", "1,1")
        assert dry.exit_code == 0 and "2 rating question(s)" in dry.output and server.request_count == 0
        from promptgen.testing.fake_server import Fault
        server.configure(faults=[Fault("500", match="refer to a dog", times=-1)])
        result = cli("rename", "mypets6", "--classes", classes, "--scorer", "llm", "--model", "openai/test",
                     "--api-base", server.url, "--no-progress", "--max-attempts", "1", "--backoff", "0.01")
    assert result.exit_code == 3, result.output
    assert "no usable rating" in result.stderr
    assert "kitty" in result.output  # the classes that were rated are still renamed


def test_an_answer_naming_only_the_class_is_counted(cli, root, tmp_path):
    classes = write_classes(tmp_path, "cat", "dog")
    with FakeLLMServer(answer=scripted({"cat": "1. Cat", "dog": "1. dog\n2. hound"}, Counter())) as server:
        assert llm_synonyms(cli, server.url, "mypets7", "--classes", classes).exit_code == 0
    meta = json.loads((root / "prompts/mypets7/synonyms/v1.manifest.json").read_text())
    assert meta["classes_with_other_names"] == 1
    assert meta["classes_without_synonyms"] == [{"class_index": 0, "class_name": "cat"}]


def test_rename_merges_several_sets_and_treats_hyphenation_as_one_name(cli, root, tmp_path):
    classes = write_classes(tmp_path, "fire truck", "ladder truck")
    with FakeLLMServer(answer=scripted({"fire truck": "1. fire engine", "ladder truck": "1. Fire-Engine"},
                                       Counter())) as server:
        assert llm_synonyms(cli, server.url, "trucks", "--classes", classes).exit_code == 0
        assert llm_synonyms(cli, server.url, "trucks", "--classes", classes, "--set", "more",
                            "--draw", "1").exit_code == 0
    result = cli("rename", "trucks", "--set", "synonyms", "--set", "more", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sets"] == ["trucks/synonyms@v1", "trucks/more@v1"]
    # "fire engine" and "Fire-Engine" are one name shared by both classes: ambiguous in each
    for row in report["rows"]:
        engine = [c for c in row["candidates"] if c["name"].casefold().replace("-", " ") == "fire engine"]
        assert engine and all(c["rejected"].startswith("ambiguous") for c in engine)
        assert not row["renamed"]


def test_describe_refuses_a_template_with_placeholders_it_cannot_fill(cli, fake_llm):
    result = cli("describe", "cifar10", "--style", "name-commonness", "--model", "openai/test",
                 "--api-base", fake_llm.url)
    assert result.exit_code == 2 and "needs {names}" in result.stderr and "fix:" in result.stderr
    assert fake_llm.request_count == 0


def test_templates_lists_each_kind(cli):
    listing = cli("templates").output.splitlines()
    kinds = {line.split()[0]: line.split()[1] for line in listing}
    assert kinds["fudd@v1"] == "pair" and kinds["synonyms@v1"] == "class" and kinds["cupl@v1"] == "class"
