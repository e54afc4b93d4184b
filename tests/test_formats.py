"""Import and export of CuPL, DCLIP and CLIP_benchmark files, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptgen.classes import load_dataset
from promptgen.errors import PromptgenError
from promptgen.fileio import sha256_file
from promptgen.formats import dclip_sentence, export_version, import_prompt_file, list_formats
from promptgen.store import SetRef, Store

CIFAR10 = list(load_dataset("cifar10").names)

# airplane..truck minus 'truck', which is missing; 'zebra' names no class; 'bird' has an empty list;
# 'cat' appears twice (json.dumps could not write that, so the text is written by hand).
MESSY_CUPL = """{
  "airplane": ["A photo of an airplane in the sky.", "An airplane has two wings."],
  "automobile": ["A car on a road.", "  A car on a road.  ", ""],
  "bird": [],
  "cat": ["A cat with whiskers.", "A small furry animal."],
  "deer": ["A deer in a forest."],
  "zebra": ["A striped horse."],
  "dog": ["A dog with a wagging tail."],
  "cat": ["A duplicated cat key."],
  "frog": ["A green frog."],
  "horse": ["A horse in a field."],
  "ship": ["A ship at sea."]
}
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _texts_by_class(store: Store, ref: str) -> dict[str, list[str]]:
    info = store.resolve(SetRef.parse(ref))
    result: dict[str, list[str]] = {}
    for record in store.read_records(info):
        result.setdefault(record["class_name"], []).append(record["text"])
    return result


def _full_cifar10(kind: str = "sentence") -> dict[str, list[str]]:
    if kind == "sentence":
        return {name: [f"A photo of a {name}.", f"The {name} is shown clearly."] for name in CIFAR10}
    return {name: [f"{name}-shaped outline", "a metal body"] for name in CIFAR10}


def test_formats_are_registered() -> None:
    formats = list_formats()
    assert formats["import"] == ["cupl", "dclip", "fudd", "real-metrics"]  # real-metrics: import only (a counts set)
    assert formats["export"] == ["clip-benchmark", "cupl", "dclip", "fudd"]


# -- import: the report ---------------------------------------------------------------------------

def test_import_reports_every_problem(root: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "cupl.json", MESSY_CUPL)
    store = Store(root)
    info, report = import_prompt_file(store, store.classes("cifar10"), path, "cupl", "cupl")
    assert report.unmatched_keys == ["zebra"]
    assert report.missing_classes == ["truck"]
    assert report.empty_keys == ["bird"]
    assert report.duplicated_keys == ["cat"]
    assert report.matched == 9  # airplane..ship, each once; bird counts as matched with no texts
    assert report.renamed == []
    assert len(report.problems) == 4
    problems = "\n".join(report.problems)
    for name in ("zebra", "truck", "bird", "cat"):
        assert f"'{name}'" in problems
    # CuPL's head counts a repeated sentence as often as it occurs: the import keeps it
    assert report.dropped["duplicate"] == 0 and report.dropped["empty"] == 1

    texts = _texts_by_class(store, "cifar10/cupl@v1")
    assert texts["cat"] == ["A cat with whiskers.", "A small furry animal."]  # first key kept
    assert texts["automobile"] == ["A car on a road.", "A car on a road."]
    assert "bird" not in texts and "truck" not in texts
    assert all(name in CIFAR10 for name in texts)

    records = store.read_records(info)
    assert len(records) == 2 + 2 + 2 + 1 + 1 + 1 + 1 + 1 == 11
    assert len({r["id"] for r in records}) == 11  # a repeat has an id of its own
    assert info.manifest["counts"]["records"] == 11
    assert info.manifest["counts"]["classes"] == 10
    assert info.manifest["counts"]["classes_without_texts"] == 2
    assert {c["class_name"] for c in info.manifest["classes_without_texts"]} == {"bird", "truck"}
    assert all(r["kind"] == "sentence" and r["stage"] == "import" for r in records)
    assert [r["class_index"] for r in records] == sorted(r["class_index"] for r in records)
    assert records[0]["class_name"] == CIFAR10[records[0]["class_index"]]

    imported = info.manifest["import"]
    assert imported["format"] == "cupl"
    assert imported["sha256"] == sha256_file(path)
    assert imported["match"] == "name"
    assert imported["unmatched_keys"] == ["zebra"]
    assert imported["missing_classes"] == ["truck"]
    assert imported["empty_keys"] == ["bird"]
    assert imported["duplicated_keys"] == ["cat"]
    assert imported["matched_keys"] == 9 and imported["dedupe"] is False
    assert info.manifest["dropped"]["duplicate"] == 0
    assert info.manifest["classes"]["hash"] == load_dataset("cifar10").hash


def test_import_cli_reports_problems(cli, tmp_path: Path, root: Path) -> None:
    path = _write(tmp_path / "cupl.json", MESSY_CUPL)
    result = cli("import", "cifar10", str(path), "--format", "cupl")
    assert result.exit_code == 0, result.output
    assert "11 texts for 8/10 classes" in result.stdout
    for name in ("zebra", "truck", "bird", "cat"):
        assert f"'{name}'" in result.stderr
    assert (root / "prompts" / "cifar10" / "cupl" / "v1.jsonl").is_file()


def test_import_cli_json(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "cupl.json", MESSY_CUPL)
    result = cli("import", "cifar10", str(path), "--format", "cupl", "--set", "mine", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["set"] == "mine"
    assert manifest["import"]["duplicated_keys"] == ["cat"]


@pytest.mark.parametrize("problem,content,needle", [
    ("unmatched", {**_full_cifar10(), "zebra": ["A zebra."]}, "'zebra'"),
    ("missing", {k: v for k, v in _full_cifar10().items() if k != "truck"}, "'truck'"),
    ("empty", {**_full_cifar10(), "bird": []}, "'bird'"),
])
def test_import_strict_fails_on_each_problem(cli, tmp_path: Path, root: Path, problem: str, content: dict,
                                             needle: str) -> None:
    path = _write(tmp_path / f"{problem}.json", json.dumps(content))
    result = cli("import", "cifar10", str(path), "--format", "cupl", "--strict")
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert needle in result.stderr
    assert not list((root / "prompts").glob("cifar10/*/v*.jsonl"))


def test_import_strict_fails_on_duplicate_key(cli, tmp_path: Path, root: Path) -> None:
    body = ",\n".join(f'"{name}": ["A photo of a {name}."]' for name in CIFAR10)
    path = _write(tmp_path / "dup.json", "{" + body + ',\n"dog": ["Another dog."]}')
    result = cli("import", "cifar10", str(path), "--format", "cupl", "--strict")
    assert result.exit_code == 2
    assert "more than once" in result.stderr and "'dog'" in result.stderr
    assert Store(root).list_versions("cifar10", "cupl") == []


def test_import_strict_library_error(root: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "cupl.json", MESSY_CUPL)
    store = Store(root)
    with pytest.raises(PromptgenError) as info:
        import_prompt_file(store, store.classes("cifar10"), path, "cupl", "cupl", strict=True)
    for name in ("zebra", "truck", "bird", "cat"):
        assert f"'{name}'" in str(info.value)
    assert store.list_versions("cifar10", "cupl") == []


def test_import_strict_accepts_exact_file(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.json", json.dumps(_full_cifar10()))
    result = cli("import", "cifar10", str(path), "--format", "cupl", "--strict")
    assert result.exit_code == 0, result.output
    assert "20 texts for 10/10 classes" in result.stdout


def test_import_errors(root: Path, tmp_path: Path) -> None:
    store = Store(root)
    classes = store.classes("cifar10")
    with pytest.raises(PromptgenError, match="no key matches"):
        import_prompt_file(store, classes, _write(tmp_path / "a.json", '{"zebra": ["z z"]}'), "cupl", "x")
    with pytest.raises(PromptgenError, match="not a list of strings"):
        import_prompt_file(store, classes, _write(tmp_path / "b.json", '{"cat": "a cat"}'), "cupl", "x")
    with pytest.raises(PromptgenError, match="not a JSON object"):
        import_prompt_file(store, classes, _write(tmp_path / "c.json", '["cat"]'), "cupl", "x")
    with pytest.raises(PromptgenError, match="not valid JSON"):
        import_prompt_file(store, classes, _write(tmp_path / "d.json", '{"cat": ['), "cupl", "x")
    with pytest.raises(PromptgenError, match="unknown import format"):
        import_prompt_file(store, classes, tmp_path / "a.json", "yaml", "x")


# -- import: match by order ---------------------------------------------------------------------

def test_import_match_order_records_renamed_keys(cli, tmp_path: Path, root: Path) -> None:
    other_names = ["aeroplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "boat", "lorry"]
    content = {key: [f"Texts for {key}."] for key in other_names}
    path = _write(tmp_path / "order.json", json.dumps(content))
    result = cli("import", "cifar10", str(path), "--format", "dclip", "--match", "order", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    renamed = manifest["import"]["matched_with_other_name"]
    assert renamed == [
        {"class_index": 0, "key": "aeroplane", "class_name": "airplane"},
        {"class_index": 8, "key": "boat", "class_name": "ship"},
        {"class_index": 9, "key": "lorry", "class_name": "truck"},
    ]
    assert manifest["import"]["match"] == "order"
    assert manifest["import"]["unmatched_keys"] == [] and manifest["import"]["missing_classes"] == []
    store = Store(root)
    records = store.read_records(store.resolve(SetRef.parse("cifar10/dclip")))
    by_index = {r["class_index"]: r for r in records}
    assert by_index[0]["class_name"] == "airplane" and by_index[0]["text"] == "Texts for aeroplane."
    assert by_index[0]["source_key"] == "aeroplane"
    assert by_index[9]["class_name"] == "truck" and by_index[9]["source_key"] == "lorry"
    assert "source_key" not in by_index[3]
    assert all(r["kind"] == "descriptor" for r in records)


def test_import_match_order_extra_keys_are_unmatched(root: Path, tmp_path: Path) -> None:
    content = {f"k{i}": [f"text number {i}"] for i in range(12)}
    store = Store(root)
    _, report = import_prompt_file(store, store.classes("cifar10"), _write(tmp_path / "o.json", json.dumps(content)),
                                   "cupl", "x", match="order")
    assert report.unmatched_keys == ["k10", "k11"]
    assert report.matched == 10 and len(report.renamed) == 10


def test_import_match_name_does_not_rename(root: Path, tmp_path: Path) -> None:
    content = {"aeroplane": ["A plane."], **{k: v for k, v in _full_cifar10().items() if k != "airplane"}}
    store = Store(root)
    _, report = import_prompt_file(store, store.classes("cifar10"), _write(tmp_path / "n.json", json.dumps(content)),
                                   "cupl", "x")
    assert report.unmatched_keys == ["aeroplane"]
    assert report.missing_classes == ["airplane"]
    assert report.renamed == []


# -- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["cupl", "dclip"])
def test_round_trip(cli, tmp_path: Path, root: Path, fmt: str) -> None:
    original = _full_cifar10("sentence" if fmt == "cupl" else "descriptor")
    original["frog"] = ["A frog \u2014 green, with \u201cwebbed\u201d feet.", "Caf\u00e9-coloured skin."]
    path = _write(tmp_path / "in.json", json.dumps(original, ensure_ascii=False))
    assert cli("import", "cifar10", str(path), "--format", fmt).exit_code == 0
    out = tmp_path / f"out.{fmt}.json"
    result = cli("export", f"cifar10/{fmt}@v1", "--format", fmt, "-o", str(out))
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert list(exported) == CIFAR10  # key order = label order
    assert exported == original
    result = cli("import", "cifar10", str(out), "--format", fmt, "--set", "again", "--strict")
    assert result.exit_code == 0, result.output
    store = Store(root)
    assert _texts_by_class(store, "cifar10/again") == _texts_by_class(store, f"cifar10/{fmt}") == original


def test_round_trip_cupl_to_dclip_with_missing_class(cli, tmp_path: Path, root: Path) -> None:
    path = _write(tmp_path / "in.json", MESSY_CUPL)
    assert cli("import", "cifar10", str(path), "--format", "cupl").exit_code == 0
    out = tmp_path / "out.json"
    assert cli("export", "cifar10/cupl", "--format", "dclip", "-o", str(out)).exit_code == 0
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert list(exported) == CIFAR10
    assert exported["truck"] == [] and exported["bird"] == []
    assert cli("import", "cifar10", str(out), "--format", "cupl", "--set", "again").exit_code == 0
    store = Store(root)
    assert _texts_by_class(store, "cifar10/again") == _texts_by_class(store, "cifar10/cupl")


# -- clip-benchmark export ------------------------------------------------------------------------

def test_export_clip_benchmark_from_descriptors(cli, tmp_path: Path) -> None:
    descriptors = {name: [f"{name} shape"] for name in CIFAR10}
    descriptors["airplane"] = ["a pair of wings", "an engine", "has a tail fin", "often white",
                               "typically silver", "may have windows", "can fly",
                               "apple-shaped nose", "another feature", "is metal", "used for travel"]
    descriptors["cat"] = ["An upright tail", "Has whiskers", "Usually small"]
    path = _write(tmp_path / "d.json", json.dumps(descriptors))
    assert cli("import", "cifar10", str(path), "--format", "dclip").exit_code == 0
    out = tmp_path / "bench.json"
    result = cli("export", "cifar10/dclip", "--format", "clip-benchmark", "-o", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert list(data) == ["cifar10"]
    prompts = data["cifar10"]
    assert list(prompts) == CIFAR10
    assert prompts["airplane"] == [
        "airplane, which is a pair of wings",
        "airplane, which is an engine",
        "airplane, which has a tail fin",
        "airplane, which often white",
        "airplane, which typically silver",
        "airplane, which may have windows",
        "airplane, which can fly",
        "airplane, which is apple-shaped nose",  # DCLIP's rule tests the letter a
        "airplane, which is another feature",
        "airplane, which has is metal",
        "airplane, which is used for travel",
    ]
    assert prompts["cat"] == ["cat, which has An upright tail", "cat, which has Has whiskers",  # case-sensitive
                              "cat, which has Usually small"]
    assert prompts["dog"] == ["dog, which has dog shape"]
    names_file = tmp_path / "bench.classnames.json"
    assert names_file.is_file()
    assert json.loads(names_file.read_text(encoding="utf-8")) == {"cifar10": CIFAR10}
    assert str(names_file) in result.stdout


def test_export_clip_benchmark_sentences_verbatim(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", json.dumps(_full_cifar10()))
    assert cli("import", "cifar10", str(path), "--format", "cupl").exit_code == 0
    out = tmp_path / "bench.json"
    assert cli("export", "cifar10/cupl", "--format", "clip-benchmark", "-o", str(out),
               "--benchmark-key", "my_key").exit_code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data == {"my_key": _full_cifar10()}
    assert json.loads((tmp_path / "bench.classnames.json").read_text(encoding="utf-8")) == {"my_key": CIFAR10}


def test_export_clip_benchmark_empty_class_needs_fill_empty(cli, tmp_path: Path) -> None:
    descriptors = {name: [f"{name} shape"] for name in CIFAR10 if name not in ("airplane", "truck")}
    path = _write(tmp_path / "d.json", json.dumps(descriptors))
    assert cli("import", "cifar10", str(path), "--format", "dclip").exit_code == 0
    out = tmp_path / "bench.json"
    result = cli("export", "cifar10/dclip", "--format", "clip-benchmark", "-o", str(out))
    assert result.exit_code == 2
    assert "2 classes have no prompts" in result.stderr
    assert "'airplane'" in result.stderr and "'truck'" in result.stderr
    assert "--fill-empty" in result.stderr
    assert not out.exists()
    result = cli("export", "cifar10/dclip", "--format", "clip-benchmark", "-o", str(out), "--fill-empty")
    assert result.exit_code == 0, result.output
    prompts = json.loads(out.read_text(encoding="utf-8"))["cifar10"]
    assert prompts["airplane"] == ["a photo of an airplane."]
    assert prompts["truck"] == ["a photo of a truck."]
    assert prompts["dog"] == ["dog, which has dog shape"]


def test_export_unknown_format_and_set(root: Path, tmp_path: Path) -> None:
    store = Store(root)
    info, _ = import_prompt_file(store, store.classes("cifar10"),
                                 _write(tmp_path / "s.json", json.dumps(_full_cifar10())), "cupl", "cupl")
    with pytest.raises(PromptgenError, match="unknown export format"):
        export_version(store, info, "csv", tmp_path / "x.csv")
    with pytest.raises(PromptgenError, match="no prompt set"):
        store.resolve(SetRef.parse("cifar10/nosuch"))


# -- dclip_sentence -------------------------------------------------------------------------------

@pytest.mark.parametrize("descriptor,authors,grammatical", [
    # DCLIP's make_descriptor_sentence tests string prefixes, case-sensitively: the letter "a", and
    # "has"/"can" inside "hasty"/"canine"; the grammatical rule (our option) tests the first word
    ("apple-shaped", "is", "has"),
    ("a long body", "is", "is"),
    ("an olive colour", "is", "is"),
    ("A long body", "has", "is"),
    ("ash grey", "is", "has"),
    ("animal-like fins", "is", "has"),
    ("antlers", "is", "has"),
    ("has red eyes", "", ""),
    ("often found in ponds", "", ""),
    ("typically green", "", ""),
    ("may be golden", "", ""),
    ("can be large", "", ""),
    ("hasty fins", "", "has"),
    ("canine teeth", "", "has"),
    ("used for fishing", "is", "is"),
    ("Used for fishing", "has", "is"),
    ("A-shaped tail", "has", "has"),
    ("a-frame fin", "is", "has"),
    ("small scales", "has", "has"),
])
def test_dclip_sentence(descriptor: str, authors: str, grammatical: str) -> None:
    def sentence(verb: str) -> str:
        return f"tench, which {verb + ' ' if verb else ''}{descriptor}"
    assert dclip_sentence("tench", descriptor) == sentence(authors)
    assert dclip_sentence("tench", descriptor, "authors") == sentence(authors)
    assert dclip_sentence("tench", descriptor, "grammatical") == sentence(grammatical)
    with pytest.raises(PromptgenError, match="sentence rule"):
        dclip_sentence("tench", descriptor, "other")
