"""`promptgen count-names`: REAL's matching rule, the caption files it reads, bad input, and the
counts set it writes. The engines, --resume and the relevance check are in test_count_engines.py."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

import promptgen.counting.corpus as corpus
from promptgen.classes import ClassList
from promptgen.counting.corpus import Unreadable, plan_parts, read_part, resolve_inputs
from promptgen.counting.matching import BatchHits, NameMatcher
from promptgen.errors import PromptgenError
from promptgen.name_counts import load_counts_set
from promptgen.records import parse_records
from promptgen.store import Store
from tests.count_helpers import (DATASET, NAMES, corrupt_row_group, count_names, counts, manifest, random_captions,
                                 records, records_bytes, reference_counts, reference_tokens, set_dir, write_captions, write_names)

ALL_NAMES = [name for class_name, others in NAMES.items() for name in [class_name, *others]]


def engine_count(name: str, captions: list[str | None]) -> int:
    matcher = NameMatcher([name])
    return matcher.name_counts(matcher.scan(captions).counts)[0]


# -- 1. the rule ------------------------------------------------------------------------------------

RULE_CASES = [
    # quotes are removed, not separators: "dog's" is the token "dogs"
    ("dogs", "my dog's bed", 1), ("dog", "my dog's bed", 0), ("dog's", "two dogs", 1), ("cat", "cat's toy", 0),
    # "-" and "_" separate words like spaces
    ("t shirt", "a T-Shirt sale", 1), ("t-shirt", "a t shirt", 1), ("T_Shirt", "t-shirt", 1), ("t-shirt", "tshirt", 0),
    ("cat", "cat_walk", 1),
    # case and diacritics, composed or not
    ("Dog", "DOG", 1), ("café", "Cafe au lait", 1), ("cafe", "CAFÉ", 1), ("cafe", "cafe\u0301 noir", 1),
    ("naïve cat", "naive cat", 1), ("naive cat", "NAÏVE CAT", 1),
    # whole tokens only
    ("cat", "a catalog", 0), ("cat", "concatenate", 0), ("cat", "a cat.", 1), ("cat", "(cat)", 1), ("cat", "cats", 0),
    ("catalog", "cat alog", 0),
    # the name's words consecutive and in order; punctuation between them does not matter
    ("red cat", "cat red", 0), ("red cat", "red big cat", 0), ("red cat", "red, cat!", 1), ("red cat", "red\ncat", 1),
    # names with characters that mean something to regexes or to FTS5: the same rule, nothing special
    ("c++", "I write C++", 1), ("c++", "c", 1), ("c++", "cpp", 0), ("(x)", "x", 1), ("(x)", "box", 0),
    ("a.b", "a b", 1), ("a.b", "ab", 0), ("a.b", "axb", 0), ("a/b", "a.b", 1), ("st. bernard", "St Bernard dog", 1),
    ("st. bernard", "bernard st", 0), ("NEAR", "near the sea", 1), ("NEAR", "nearly", 0), ("AND", "cats and dogs", 1),
    ("AND", "android", 0), ('"quoted"', "a quoted word", 1), ('"quoted"', '"quoted"', 1), ("a*", "a b", 1),
    ("[x]", "x", 1), ("x|y", "x y", 1), ("x|y", "x", 0), ("東京", "東京 tower", 1),
    # names with no letter or digit count nothing, even in captions holding exactly them
    ("*", "* * *", 0), ("--", "-- x --", 0), ("", "anything", 0), ("()", "()", 0),
    # None and empty captions count nothing
    ("dog", None, 0), ("dog", "", 0),
]


@pytest.mark.parametrize("name,caption,expected", RULE_CASES, ids=[f"{n!r}-in-{c!r}" for n, c, _ in RULE_CASES])
def test_rule_cases(name, caption, expected):
    assert engine_count(name, [caption]) == expected
    assert reference_counts([caption], [name])[name] == expected, "the reference disagrees with the case itself"


def test_a_caption_counts_once_per_name_and_overlapping_names_each():
    matcher = NameMatcher(["dog", "hot dog", "dog dog"])
    hits = matcher.scan(["dog dog dog", "hot dog", "a hot-dog stand", "dog"])
    assert matcher.name_counts(hits.counts) == [4, 2, 1]


def test_names_that_normalise_alike_share_one_pattern_and_one_count():
    matcher = NameMatcher(["T-shirt", "t shirt", "T_Shirt", "*", "t-shirts"])
    assert matcher.patterns == ["t shirt", "t shirts"]
    assert matcher.pattern_of[3] is None
    hits = matcher.scan(["a T-SHIRT", "t_shirt!", "tshirt", "t shirts"])
    assert matcher.name_counts(hits.counts) == [2, 2, 2, 0, 1]


def test_a_matcher_with_no_pattern_and_empty_batches_count_nothing():
    empty = NameMatcher(["*", "", "..."])
    assert empty.patterns == [] and empty.scan(["* ... *", "a"]).counts == {}
    matcher = NameMatcher(["dog"])
    assert matcher.scan([]).counts == {} and matcher.scan([None, None, ""]).counts == {}


def scan_in_batches(matcher: NameMatcher, captions: list, size: int, keep: int = 0) -> BatchHits:
    import pyarrow as pa

    total = BatchHits()
    for start in range(0, len(captions), size):
        total.merge(matcher.scan(pa.array(captions[start:start + size], pa.string()), keep), keep)
    return total


def test_planted_names_in_random_captions_match_the_reference():
    captions = random_captions(4000, seed=7, nulls=True)
    expected = reference_counts(captions, ALL_NAMES)
    assert all(expected[name] > 0 for name in ALL_NAMES), "every planted name must be found for the test to mean much"
    assert len(set(expected.values())) > 10
    matcher = NameMatcher(ALL_NAMES)
    for size in (4000, 333):
        found = dict(zip(ALL_NAMES, matcher.name_counts(scan_in_batches(matcher, captions, size).counts)))
        assert found == expected, f"batches of {size}"
    for size, few in ((7, captions[:700]), (1, captions[:100])):  # (a batch costs a few ms whatever its size)
        assert matcher.name_counts(scan_in_batches(matcher, few, size).counts) == \
            list(reference_counts(few, ALL_NAMES).values()), f"batches of {size}"
    # each caption alone, through the one-name matcher: the same
    assert {name: engine_count(name, captions) for name in ["dog", "red cat", "c++", "st. bernard"]} == \
        {name: expected[name] for name in ["dog", "red cat", "c++", "st. bernard"]}


def test_planted_names_are_counted_as_sqlite_fts5_counts_them():
    """REAL's own method: captions with quotes removed and "-"/"_" as spaces in an FTS5 table
    (unicode61 tokenizer), each name a phrase of its words."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE captions USING fts5(caption)")
    except sqlite3.OperationalError as exc:  # pragma: no cover - Python's sqlite is built with FTS5
        pytest.skip(f"this sqlite has no FTS5: {exc}")

    def clean(text: str) -> str:
        return text.replace("'", "").replace('"', "").replace("-", " ").replace("_", " ")

    captions = random_captions(3000, seed=19, nulls=True)
    db.executemany("INSERT INTO captions VALUES (?)", [(clean(c),) for c in captions if c])
    matcher = NameMatcher(ALL_NAMES)
    found = matcher.name_counts(matcher.scan(captions).counts)
    for name, count in zip(ALL_NAMES, found):
        phrase = " + ".join('"' + word + '"' for word in clean(name).split())
        assert db.execute("SELECT count(*) FROM captions WHERE captions MATCH ?", (phrase,)).fetchone()[0] == count, name


def test_sampled_captions_match_and_do_not_depend_on_batches_or_order():
    captions = random_captions(3000, seed=11)
    matcher = NameMatcher(ALL_NAMES)
    drawn = scan_in_batches(matcher, captions, 3000, keep=5).samples
    shuffled = list(captions)
    random.Random(3).shuffle(shuffled)
    assert scan_in_batches(matcher, shuffled, 97, keep=5).samples == drawn
    for name in ALL_NAMES:
        pattern = matcher.pattern_of[ALL_NAMES.index(name)]
        distinct = {c for c in captions if c and reference_counts([c], [name])[name]}
        texts = [text for _, text in drawn.get(pattern, [])]
        assert len(texts) == len(set(texts)) == min(5, len(distinct)), name
        assert set(texts) <= distinct, f"{name}: a sample that does not mention it"


# -- 2. caption files --------------------------------------------------------------------------------

@pytest.fixture
def named(root, tmp_path):
    write_names(root, tmp_path)
    return root


def plain_captions(n: int = 300, seed: int = 5) -> list[str]:
    """Random captions every format can hold (no line breaks: text files are one caption a line)."""
    return [c.replace("\t", " ") for c in random_captions(n, seed)]


def test_every_format_gives_the_same_counts(cli, named, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PART_ROWS", 50)
    captions = plain_captions()
    expected = reference_counts(captions, ALL_NAMES)
    files = ["c.parquet", "c.csv", "c.tsv", "c.jsonl", "c.txt", "c.txt.gz", "c.csv.gz", "c.jsonl.gz"]
    for version, name in enumerate(files, 1):
        path = write_captions(tmp_path / name, captions, row_group_size=20)
        result = count_names(cli, path, extra=("--workers", "1"))
        assert result.exit_code == 0, result.output
        meta = manifest(named, version)
        assert meta["corpus"]["rows_scanned"] == 300 and meta["corpus"]["rows_unreadable"] == 0, name
        assert counts(named, version) == expected, name
    assert manifest(named, 1)["counting"]["parts"] == 5, "15 row groups of 20 rows, gathered in parts of 60"
    assert {manifest(named, v)["corpus"]["files"][0]["format"] for v in range(1, 9)} == \
        {"parquet", "csv", "tsv", "jsonl", "text"}


def test_globs_folders_and_urls_name_the_same_files(cli, named, tmp_path):
    import fsspec

    captions = plain_captions(240)
    expected = reference_counts(captions, ALL_NAMES)
    folder = tmp_path / "corpus"
    (folder / "deeper").mkdir(parents=True)
    write_captions(folder / "a.txt", captions[:80])
    write_captions(folder / "b.jsonl", captions[80:160])
    write_captions(folder / "deeper" / "c.parquet", captions[160:])
    (folder / "notes.md").write_text("dog dog dog\n")  # not a caption file: a folder leaves it out
    memory = fsspec.filesystem("memory")
    for name in ("a.txt", "b.jsonl", "deeper/c.parquet"):
        memory.pipe(f"/wttests-corpus/{name}", (folder / name).read_bytes())
    try:
        inputs = [[folder], [folder / "*.txt", folder / "*.jsonl", folder / "deeper" / "*.parquet"],
                  [f"file://{folder}"], [folder / "a.txt", folder, f"{folder}/*.txt"],  # each file once
                  ["memory://wttests-corpus"]]
        for version, given in enumerate(inputs, 1):
            result = count_names(cli, *given, extra=("--workers", "1"))
            assert result.exit_code == 0, (given, result.output)
            meta = manifest(named, version)
            assert meta["corpus"]["rows_scanned"] == 240 and len(meta["corpus"]["files"]) == 3, given
            assert counts(named, version) == expected, given
        assert all(f["path"].startswith("memory://") for f in manifest(named, 5)["corpus"]["files"])
    finally:
        memory.rm("/wttests-corpus", recursive=True)


def test_batches_are_bounded_and_do_not_change_the_counts(cli, named, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PART_ROWS", 40)
    captions = plain_captions(200)
    for name in ("c.parquet", "c.csv", "c.tsv", "c.jsonl", "c.txt.gz"):
        file, = resolve_inputs([str(write_captions(tmp_path / name, captions, row_group_size=20))])
        sizes = [len(batch) for part in plan_parts(file, "TEXT") for batch in read_part(part, "TEXT", 7, Unreadable())]
        assert sum(sizes) == 200 and max(sizes) == 7, name
    path = tmp_path / "c.parquet"
    assert count_names(cli, path, extra=("--workers", "1")).exit_code == 0
    assert count_names(cli, path, extra=("--workers", "1", "--batch-rows", "7")).exit_code == 0
    assert records_bytes(named, 1) == records_bytes(named, 2)
    assert counts(named, 1) == reference_counts(captions, ALL_NAMES)


def test_parquet_caption_columns_of_any_text_type_are_read(cli, named, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["a hot dog", None, "red cat", "a hot dog"]
    columns = {"categorical.parquet": pa.array(texts).dictionary_encode(),
               "large.parquet": pa.array(texts, pa.large_string()),
               "binary.parquet": pa.array([t and t.encode() for t in texts], pa.binary()),
               "nulls.parquet": pa.array([None] * 4, pa.null())}
    for name, column in columns.items():
        pq.write_table(pa.table({"TEXT": column}), tmp_path / name)
    result = count_names(cli, *(tmp_path / name for name in columns), extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    assert meta["corpus"]["rows_scanned"] == 16 and meta["corpus"]["files_unreadable"] == 0
    assert counts(named)["hot dog"] == 6 and counts(named)["red cat"] == 3
    # a column that holds no text: the file is reported, not a crash
    pq.write_table(pa.table({"TEXT": pa.array([1, 2, 3])}), tmp_path / "numbers.parquet")
    result = count_names(cli, tmp_path / "numbers.parquet", tmp_path / "large.parquet", extra=("--workers", "1"))
    assert result.exit_code == 3, result.output  # partial: --resume would read it again
    assert "numbers.parquet: column 'TEXT' holds int64, not text" in result.stderr
    meta = manifest(named, 2)
    assert meta["corpus"]["files_unreadable"] == 1 and meta["corpus"]["rows_unreadable"] == 3
    assert counts(named, 2)["hot dog"] == 2


def test_a_named_format_reads_files_of_any_name(cli, named, tmp_path):
    path = tmp_path / "captions.dat"
    path.write_text("a hot dog\nnaive cat\n")
    result = count_names(cli, path)
    assert result.exit_code == 2 and "--format" in result.stderr and "captions.dat" in result.stderr
    assert not set_dir(named).exists()
    assert count_names(cli, path, extra=("--format", "text")).exit_code == 0
    assert counts(named)["hot dog"] == 1 and counts(named)["naïve cat"] == 1


# -- 3. bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["c.parquet", "c.csv", "c.jsonl"])
def test_a_missing_column_is_an_error_listing_the_columns(cli, named, tmp_path, name):
    path = write_captions(tmp_path / name, ["a dog", "a cat"], column="caption")
    result = count_names(cli, path)
    assert result.exit_code == 2
    assert "no column 'TEXT'" in result.stderr and "'URL'" in result.stderr and "'caption'" in result.stderr
    assert "--column" in result.stderr
    assert not set_dir(named).exists()
    assert count_names(cli, path, extra=("--column", "caption")).exit_code == 0
    assert counts(named)["dog"] == 1


def test_unreadable_files_are_skipped_reported_and_counted(cli, named, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PART_ROWS", 10)
    good = write_captions(tmp_path / "good.txt", ["a dog", "a red cat", "dog"])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is no parquet file")
    broken = write_captions(tmp_path / "broken.parquet", [f"dog number {i}" for i in range(40)], row_group_size=10)
    corrupt_row_group(broken, 3)  # its footer reads: only the last part fails, when it is scanned
    result = count_names(cli, good, garbage, broken, extra=("--workers", "1"))
    assert result.exit_code == 3, result.output
    assert "2 file(s) unreadable, 10 row(s) skipped" in result.stderr and "--resume" in result.stderr
    assert "garbage.parquet: not a readable parquet file" in result.stderr and "broken.parquet" in result.stderr
    meta = manifest(named)
    assert meta["status"] == "partial"
    files = {os.path.basename(f["path"]): f for f in meta["corpus"]["files"]}
    assert meta["corpus"]["files_unreadable"] == 2
    assert "parquet" in files["garbage.parquet"]["error"] and files["garbage.parquet"]["parts"] == 0
    assert files["broken.parquet"]["error"] and files["broken.parquet"]["rows_unreadable"] == 10
    assert files["broken.parquet"]["rows"] == 30 and "error" not in files["good.txt"]
    assert meta["corpus"]["rows_scanned"] == 33 and meta["corpus"]["rows_unreadable"] == 10
    assert counts(named)["dog"] == 2 + 30 and counts(named)["red cat"] == 1


def test_strict_fails_on_an_unreadable_file_with_a_clear_error(cli, named, tmp_path):
    good = write_captions(tmp_path / "good.txt", ["a dog"])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is no parquet file")
    result = count_names(cli, good, garbage, extra=("--strict",))
    assert result.exit_code == 2
    assert f"cannot read {garbage}" in result.stderr and "not a readable parquet file" in result.stderr
    assert "--strict" in result.stderr and "Traceback" not in result.output
    assert not set_dir(named).exists(), "a file that cannot be opened is refused before anything is written"


def test_rows_that_cannot_be_read_are_skipped_and_counted(cli, named, tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"TEXT": "a dog"}\nnot json at all\n{"TEXT": "hot dog"\n[1, 2]\n\n{"TEXT": null}\n'
                     '{"URL": "x"}\n{"TEXT": "dog"}\n', encoding="utf-8")
    table = tmp_path / "c.csv"
    table.write_text('TEXT,URL\na dog,u\none,too,many\n"hot dog, again",u\nshort\ndog,u\n', encoding="utf-8")
    assert count_names(cli, jsonl, extra=("--workers", "1")).exit_code == 0
    meta = manifest(named, 1)
    assert meta["corpus"]["rows_unreadable"] == 3 and meta["corpus"]["files_unreadable"] == 0
    assert meta["corpus"]["rows_scanned"] == 4 and counts(named, 1)["dog"] == 2
    result = count_names(cli, table, extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    meta = manifest(named, 2)
    assert meta["corpus"]["rows_unreadable"] == 2 and meta["corpus"]["files_unreadable"] == 0
    assert meta["corpus"]["rows_scanned"] == 3 and counts(named, 2)["dog"] == 3 and counts(named, 2)["hot dog"] == 1
    assert "0 file(s) unreadable, 2 row(s) skipped" in result.stderr


def test_a_csv_header_is_read_as_its_rows_are(cli, named, tmp_path):
    """The header is checked apart from the rows: a byte-order mark, CRLF line ends and a quoted
    caption over two lines must not make the two disagree."""
    table = tmp_path / "excel.csv"
    table.write_bytes('\ufeffTEXT,URL\r\na dog,u\r\n"a hot\ndog",u\r\n"red, cat",u\r\n'.encode("utf-8"))
    result = count_names(cli, table, extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    assert meta["corpus"]["rows_scanned"] == 3 and meta["corpus"]["rows_unreadable"] == 0
    assert (counts(named)["dog"], counts(named)["hot dog"], counts(named)["red cat"]) == (2, 1, 1)


def test_inputs_that_name_no_file_are_errors(cli, named, tmp_path):
    result = count_names(cli, tmp_path / "nothing-*.parquet")
    assert result.exit_code == 2 and "matches no caption file" in result.stderr and "nothing-*.parquet" in result.stderr
    result = count_names(cli, tmp_path / "missing.txt")
    assert result.exit_code == 2 and f"{tmp_path / 'missing.txt'} does not exist" in result.stderr
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "empty-folder" / "readme.md").write_text("dog")
    result = count_names(cli, tmp_path / "empty-folder")
    assert result.exit_code == 2 and "matches no caption file" in result.stderr
    assert not set_dir(named).exists()


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl", "header-only.csv", "no-rows.parquet"])
def test_an_empty_file_makes_a_complete_set_of_zeros_with_a_warning(cli, named, tmp_path, name):
    path = write_captions(tmp_path / name, [])
    result = count_names(cli, path)
    assert result.exit_code == 0, result.output
    assert "no caption was read: every count is 0" in result.stderr
    meta = manifest(named)
    assert meta["status"] == "complete" and meta["corpus"]["rows_scanned"] == 0
    assert meta["corpus"]["files_unreadable"] == 0
    assert len(records(named)) == len(ALL_NAMES) and set(counts(named).values()) == {0}


def test_relevance_needs_a_model(cli, named, tmp_path):
    path = write_captions(tmp_path / "c.txt", ["a dog"])
    result = count_names(cli, path, extra=("--relevance", "3"))
    assert result.exit_code == 2 and "--relevance needs --model" in result.stderr
    assert not set_dir(named).exists()


# -- 7. the counts set --------------------------------------------------------------------------------

def test_the_counts_set_describes_its_corpus_and_reads_back(cli, named, tmp_path):
    first = write_captions(tmp_path / "a.txt", ["a dog", "hot dog stand", "a t-shirt"])
    second = write_captions(tmp_path / "b.jsonl", ["dogs", "a T_Shirt", "c++ and c"])
    twin = tmp_path / "twin.txt"
    twin.write_bytes(first.read_bytes())
    result = count_names(cli, first, second, twin, extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    files = meta["corpus"]["files"]
    assert [f["path"] for f in files] == [str(first), str(second), str(twin)]
    assert [f["size"] for f in files] == [os.path.getsize(p) for p in (first, second, twin)]
    assert [f["format"] for f in files] == ["text", "jsonl", "text"] and [f["rows"] for f in files] == [3, 3, 3]
    assert all(len(f["fingerprint"]) == 64 for f in files)
    assert files[0]["fingerprint"] == files[2]["fingerprint"] != files[1]["fingerprint"]
    assert meta["corpus"]["rows_scanned"] == 9 and meta["corpus"]["rows_unreadable"] == 0
    assert meta["corpus"]["inputs"] == [str(first), str(second), str(twin)] and meta["corpus"]["column"] == "TEXT"
    counting = meta["counting"]
    assert counting["engine"] == "embedded" and counting["rule"] == "real-fts5/1" and "quotes" in counting["rule_description"]
    assert counting["names"] == len(ALL_NAMES)
    assert counting["patterns"] == len({" ".join(reference_tokens(n)) for n in ALL_NAMES}) == len(ALL_NAMES) - 5
    assert counting["seconds"] >= 0 and counting["seconds_this_run"] >= 0 and counting["workers"] == 1
    assert meta["text_kind"] == "name-count" and meta["stage"] == "count-names" and not meta["network"]
    assert meta["counts"] == {"records": len(ALL_NAMES), "classes": len(NAMES)}
    text = records_bytes(named).decode()
    parsed = parse_records(text, "v1.jsonl")
    assert meta["records_sha256"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert [(r["class_name"], r["text"]) for r in parsed] == [(c, n) for c, o in NAMES.items() for n in [c, *o]]
    assert {r["source"] for r in parsed if r["text"] == r["class_name"]} == {"official"}
    found = counts(named)
    assert (found["dog"], found["hot dog"], found["dogs"], found["t-shirt"], found["T_Shirt"], found["c++"]) == \
        (4, 2, 1, 3, 3, 1)
    # the set reads back as the counts of the dataset's classes, in record order
    store = Store(named)
    classes = store.classes(DATASET)
    per_class, info = load_counts_set(store, "counts", classes)
    assert info.version == 1
    assert per_class[0] == [(n, float(found[n])) for n in ["dog", *NAMES["dog"]]]
    assert [len(c) for c in per_class] == [1 + len(o) for o in NAMES.values()]
    other = ClassList(dataset=DATASET, names=("dog", "cat"), ids=None, source="test", title=DATASET)
    with pytest.raises(PromptgenError, match="another class list"):
        load_counts_set(store, "counts", other)


def test_json_output_names_the_set(cli, named, tmp_path):
    path = write_captions(tmp_path / "a.txt", ["a dog"])
    result = count_names(cli, path, extra=("--json",))
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["ref"] == f"{DATASET}/counts@v1" and shown["manifest"]["corpus"]["rows_scanned"] == 1
    assert shown["records"] == str(set_dir(named) / "v1.jsonl")


def test_a_raw_tsv_caption_that_opens_a_quote_is_one_caption(cli, named, tmp_path):
    """TSV has no quoting: a caption starting with a quote that never closes must not swallow the
    lines after it (as a CSV reader would)."""
    path = tmp_path / "raw.tsv"
    path.write_text('URL\tTEXT\nu1\t"a dog on grass\nu2\tmy red cat\nu3\tthe "dog" here\n', encoding="utf-8")
    result = count_names(cli, path)
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    assert (meta["corpus"]["rows_scanned"], meta["corpus"]["rows_unreadable"]) == (3, 0)
    assert counts(named)["dog"] == 2 and counts(named)["red cat"] == 1


# -- found in review: secrets, broken files, bytes that are not UTF-8, archives we cannot read -------

def test_credentials_in_a_caption_url_reach_no_manifest_or_journal(cli, named, tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "web").mkdir()
    write_captions(tmp_path / "web" / "caps.txt", ["a dog", "red cat"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "web"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = (f"http://someone:hunter2pw@127.0.0.1:{server.server_address[1]}/caps.txt"
               f"?X-Amz-Signature=SECRETSIG123&token=tok999")
        result = count_names(cli, url, extra=("--format", "text", "--workers", "1"))
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert counts(named)["dog"] == 1 and counts(named)["red cat"] == 1
    for path in set_dir(named).iterdir():
        text = path.read_text(encoding="utf-8")
        assert not any(secret in text for secret in ("hunter2pw", "SECRETSIG123", "tok999")), path.name
    assert manifest(named)["corpus"]["files"][0]["path"].startswith(f"http://127.0.0.1:{server.server_address[1]}/")


def test_a_broken_link_among_the_files_is_reported_not_a_crash(cli, named, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_captions(shards / "a.txt", ["a dog"])
    (shards / "b.txt").symlink_to(tmp_path / "gone.txt")
    for given in (shards, f"{shards}/*.txt"):
        result = count_names(cli, given, extra=("--workers", "1"))
        assert result.exit_code == 3, result.output  # partial: the file may come back (--resume)
        assert "b.txt" in result.stderr and "FileNotFoundError" in result.stderr
    files = {os.path.basename(f["path"]): f for f in manifest(named, 2)["corpus"]["files"]}
    assert files["b.txt"]["error"] and "error" not in files["a.txt"] and counts(named, 2)["dog"] == 1


def test_a_csv_caption_that_is_not_utf8_is_one_unreadable_row(cli, named, tmp_path):
    path = tmp_path / "c.csv"
    rows = [b"URL,TEXT"] + [b"u,a dog %d" % i for i in range(2000)] + [b"u,caf\xe9 dog"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    result = count_names(cli, path, extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    assert (meta["corpus"]["rows_scanned"], meta["corpus"]["rows_unreadable"]) == (2000, 1)
    assert counts(named)["dog"] == 2000


def test_a_json_array_file_is_refused_with_the_fix(cli, named, tmp_path):
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([{"TEXT": "a dog"}, {"TEXT": "red cat"}], indent=1), encoding="utf-8")
    result = count_names(cli, path)
    assert result.exit_code == 2
    assert "JSON array" in result.stderr and "jq -c" in result.stderr


def test_a_compressed_file_is_read_or_refused_never_counted_as_garbage(cli, named, tmp_path):
    from fsspec.utils import infer_compression

    path = tmp_path / "caps.txt.zst"
    if infer_compression(str(path)) is None:  # no zstandard here: refused, naming the package
        path.write_bytes(b"(\xb5/\xfd not really zstd")
        result = count_names(cli, path)
        assert result.exit_code == 2 and "zstandard" in result.stderr
    else:
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(b"a dog\nred cat\n"))
        assert count_names(cli, path).exit_code == 0 and counts(named)["dog"] == 1
