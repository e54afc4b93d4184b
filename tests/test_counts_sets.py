"""Counts sets from REAL's metrics file (`import --format real-metrics`) and their readers:
`rename --counts` and the real head's counts=SET (docs/methods.md, real). The files here are small
synthetic ones in REAL's layout (REAL's own files carry no licence)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from promptgen.clip.api import collect_sources
from promptgen.clip.embed import TextEncoder
from promptgen.clip.heads import build_head
from promptgen.errors import PromptgenError
from promptgen.formats.real_metrics import import_real_metrics
from promptgen.name_counts import load_counts_set
from promptgen.rename import load_counts_file
from promptgen.store import Store
from tests.conftest import TINY_ARGS
from tests.reference_methods import ref_real_clean_text, ref_real_most_common_name

CLASSES = ["honda accord", "spider web", "automobile", "Red-Eft", "jay", "fire truck"]
# REAL's layout, keys deliberately out of label order (REAL's own files are: "32", "995", ...)
METRICS = {
    "2": {"name": "automobile", "freq": 1030, "alternates": {"automobile": 40, "car": 900, "auto": 90},
          "most_common_name": "car", "actual_freq": 40},
    "0": {"name": "honda accord", "alternates": {"honda accord": 10, "honda": 500, "accord coupe": 100},
          "most_common_name": "honda accord"},                       # a subset name ("honda") blocks the others
    "1": {"name": "spider web", "alternates": {"spider web": 7, "cobweb": 9, "gossamer": 9},
          "most_common_name": "cobweb"},                             # a tie keeps the file's order
    "3": {"name": "Red-Eft", "alternates": {"red eft": 5, "newt": 9},
          "most_common_name": "newt"},                               # the official name found cleaned
    "4": {"name": "jay", "alternates": {"blue jay": 300, "scrub jay": 40},
          "most_common_name": "blue jay"},                           # the official name absent: 0 captions
    "5": {"name": "fire truck", "alternates": {"fire truck": 50, "fire engine": 80},
          "most_common_name": "Fire Truck"},                         # published otherwise than the rule gives
}
EXPECTED = ["honda accord", "cobweb", "car", "newt", "blue jay", "fire engine"]


def reference_choice(entry: dict) -> str:
    """REAL's find_most_common_name (tests/reference_methods.py); where the official name is missing
    REAL raises KeyError, which we read as a count of 0: the same as listing it with 0."""
    alternates = dict(entry["alternates"])
    if entry["name"] not in alternates and ref_real_clean_text(entry["name"]) not in alternates:
        alternates[entry["name"]] = 0
    return ref_real_most_common_name(entry["name"], alternates)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def counted(root: Path, tmp_path: Path):
    """Dataset `counted` (CLASSES) with the metrics file imported as counts@v1."""
    class_file = tmp_path / "counted.txt"
    class_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    store = Store(root)
    classes = store.classes("counted", class_file)
    path = write_json(tmp_path / "metrics-LAION400M.json", METRICS)
    info, section = import_real_metrics(store, classes, path)
    return store, classes, path, info, section


def test_the_reference_rule_gives_the_expected_names() -> None:
    assert [reference_choice(METRICS[str(c)]) for c in range(len(CLASSES))] == EXPECTED


# -- import ------------------------------------------------------------------------------------------

def test_import_writes_one_record_per_name_in_label_order(counted) -> None:
    store, classes, path, info, _ = counted
    assert (info.set, info.version, info.manifest["text_kind"]) == ("counts", 1, "name-count")
    records = store.read_records(info)
    rows = [(r["class_index"], r["text"], r["source"], r["count"]) for r in records]
    assert rows == [
        (0, "honda accord", "official", 10), (0, "honda", "real", 500), (0, "accord coupe", "real", 100),
        (1, "spider web", "official", 7), (1, "cobweb", "real", 9), (1, "gossamer", "real", 9),
        (2, "automobile", "official", 40), (2, "car", "real", 900), (2, "auto", "real", 90),
        # REAL looks the official name up as written, else cleaned: "Red-Eft" counts as "red eft"
        (3, "Red-Eft", "official", 5), (3, "red eft", "real", 5), (3, "newt", "real", 9),
        # absent from alternates: still a record, with no captions
        (4, "jay", "official", 0), (4, "blue jay", "real", 300), (4, "scrub jay", "real", 40),
        (5, "fire truck", "official", 50), (5, "fire engine", "real", 80)]
    assert all(r["class_name"] == CLASSES[r["class_index"]] and r["stage"] == "import" for r in records)
    assert len({r["id"] for r in records}) == len(records)
    # the counts set reads back as the same names and counts load_counts_file gives from the file
    loaded, _ = load_counts_set(store, "counts", classes)
    assert loaded == load_counts_file(path, classes)


def test_import_manifest_records_the_file_and_reals_rule(counted) -> None:
    _, _, path, info, section = counted
    imported = info.manifest["import"]
    assert imported == section
    assert imported["format"] == "real-metrics" and imported["file"] == "metrics-LAION400M.json"
    assert imported["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert imported["official_names_absent"] == [{"class_index": 4, "class_name": "jay",
                                                  "reason": "official name not in alternates"}]
    check = imported["real_rule"]
    # "Fire Truck" is published where the rule gives "fire engine"; case alone is no difference
    assert (check["checked"], check["reproduced"]) == (6, 5)
    assert check["differs"] == [{"class_index": 5, "class_name": "fire truck", "published": "Fire Truck",
                                 "rule": "fire engine"}]
    assert info.manifest["counts"]["records"] == 17


def test_import_cli_reports_reals_rule_and_lists_the_format(cli, tmp_path: Path) -> None:
    class_file = tmp_path / "counted.txt"
    class_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    path = write_json(tmp_path / "metrics.json", METRICS)
    result = cli("import", "counted", path, "--format", "real-metrics", "--classes", class_file)
    assert result.exit_code == 0, result.output
    assert "17 names with caption counts for 6 classes" in result.output
    assert "most_common_name for 5 of 6 classes" in result.output
    assert "'fire truck': the rule gives 'fire engine', the file says 'Fire Truck'" in result.output
    assert "1 official name(s) are not among the file's names" in result.output and "'jay'" in result.output
    again = cli("import", "counted", path, "--format", "real-metrics", "--set", "laion400m", "--json")
    manifest = json.loads(again.stdout)
    assert manifest["set"] == "laion400m" and manifest["import"]["real_rule"]["reproduced"] == 5
    assert "real-metrics" in cli("import", "--help").output
    order = cli("import", "counted", path, "--format", "real-metrics", "--match", "order")
    assert order.exit_code == 2 and "--match order does not apply to real-metrics" in order.output


def _broken(data: dict, key: str, **changes: object) -> dict:
    return {**data, key: {**data[key], **changes}}


@pytest.mark.parametrize("content, message", [
    ("{\"0\": {\"name\": \"honda accord\", ", "is not valid JSON"),
    ("[1, 2]", "is not a REAL metrics file"),
    (json.dumps({k: v for k, v in METRICS.items() if k != "4"}), "has counts for 5 classes, counted has 6"),
    (json.dumps({**{k: v for k, v in METRICS.items() if k != "4"}, "9": METRICS["4"]}),
     "not the label indices 0-5 once each (missing: 4)"),
    (json.dumps({**METRICS, "x": METRICS["4"]}), "the keys 'x' are not label indices"),
    (json.dumps(_broken(METRICS, "2", alternates={"car": 9.5})), "class 2 counts 'car' as 9.5"),
    (json.dumps(_broken(METRICS, "2", alternates=None)), 'class 2 has no "alternates"'),
    # a file for another dataset with as many classes: its official names are not ours
    (json.dumps(_broken(_broken(METRICS, "0", name="tench"), "1", name="goldfish")),
     "names 2 classes otherwise than counted: 0: 'tench' vs 'honda accord'"),
])
def test_import_refuses_what_is_not_this_datasets_metrics_file(counted, tmp_path: Path, content: str,
                                                                message: str) -> None:
    store, classes, *_ = counted
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptgenError) as caught:
        import_real_metrics(store, classes, path)
    assert message in caught.value.message and caught.value.hint
    assert [v.version for v in store.list_versions("counted", "counts")] == [1]  # nothing written


def test_import_cli_refusal_is_a_clear_error(cli, tmp_path: Path) -> None:
    path = write_json(tmp_path / "metrics-cub.json", {str(i): {"name": f"bird {i}", "alternates": {}}
                                                      for i in range(200)})
    result = cli("import", "cifar10", path, "--format", "real-metrics")
    assert result.exit_code == 2
    assert "has counts for 200 classes, cifar10 has 10" in result.output and "fix:" in result.output
    assert "Traceback" not in result.output


# -- rename --counts -----------------------------------------------------------------------------

def test_rename_counts_picks_by_reals_rule(counted, cli) -> None:
    result = cli("rename", "counted", "--counts", "counts", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["chosen"] for row in report["rows"]] == EXPECTED
    # REAL's defaults with --counts, margin 0 among them: "cobweb" wins by 2 captions
    assert report["scorer"] == "counts" and report["filters"] == ["subset"]
    assert report["counts"] == "counted/counts@v1" and report["sets"] == ["counted/counts@v1"]
    honda = {c["name"]: c for c in report["rows"][0]["candidates"]}
    assert honda["honda"]["rejected"] == "subset of 'honda accord'" and honda["honda"]["score"] == 500
    assert honda["accord coupe"]["rejected"] is None  # not a subset, but after "honda" in REAL's walk
    table = cli("rename", "counted", "--counts", "counts@v1")
    assert "5 of 6 classes renamed by counts (filters: subset" in table.output


def test_rename_counts_with_a_synonyms_set_and_other_scorers(counted, cli) -> None:
    store, classes, *_ = counted
    from tests.test_real_heads import write_synonyms

    write_synonyms(store, classes, {"honda accord": ["accord"], "jay": ["jaybird"]})
    report = json.loads(cli("rename", "counted", "--counts", "counts", "--set", "synonyms", "--json").stdout)
    # a name only the synonyms set has counts 0 captions: it never wins by counts
    assert [row["chosen"] for row in report["rows"]] == EXPECTED
    jay = [c["name"] for c in report["rows"][4]["candidates"]]
    assert jay == ["jay", "blue jay", "scrub jay", "jaybird"]
    assert report["sets"] == ["counted/counts@v1", "counted/synonyms@v1"]
    # another scorer rates the counted names: wordfreq's Zipf frequency, not the counts
    from wordfreq import zipf_frequency

    frequency = json.loads(cli("rename", "counted", "--counts", "counts", "--scorer", "frequency", "--json").stdout)
    assert frequency["scorer"] == "frequency" and frequency["filters"] == ["subset"]
    car = {c["name"]: c["score"] for c in frequency["rows"][2]["candidates"]}
    assert car == {name: round(zipf_frequency(name, "en"), 6) for name in ("automobile", "car", "auto")}


def test_rename_counts_errors(counted, cli) -> None:
    no_counts = cli("rename", "counted", "--scorer", "counts")
    assert no_counts.exit_code == 2 and "no --counts given" in no_counts.output and "real-metrics" in no_counts.output
    from tests.test_real_heads import write_synonyms

    store, classes, *_ = counted
    write_synonyms(store, classes, {})
    not_counts = cli("rename", "counted", "--counts", "synonyms")
    assert not_counts.exit_code == 2 and "is not a counts set" in not_counts.output


# -- the real head ---------------------------------------------------------------------------------

def test_real_head_counts_set_equals_counts_file(counted, tiny_clip) -> None:
    store, classes, path, *_ = counted
    encoder = TextEncoder(tiny_clip)
    from_file = build_head("real", encoder=encoder, classes=classes, sources=[], counts=str(path))
    from_set = build_head("real", encoder=encoder, classes=classes, sources=[], counts="counts@v1", store=store)
    assert torch.equal(from_file.weights, from_set.weights)
    renamed = {c: n for c, n in zip(CLASSES, EXPECTED) if c != n}
    assert from_file.info["details"]["names"] == from_set.info["details"]["names"] == renamed
    assert from_set.info["details"]["counts"] == "counted/counts@v1"
    assert from_file.info["details"]["counts"] == str(path)
    # and it is not the official names' head: the data can tell them apart
    official = build_head("template", encoder=encoder, classes=classes, sources=[])
    assert not torch.allclose(from_set.weights, official.weights, atol=1e-3)


def test_real_head_counts_refusals(counted, tiny_clip, tmp_path: Path) -> None:
    store, classes, *_ = counted
    encoder = TextEncoder(tiny_clip)
    with pytest.raises(PromptgenError, match="counts file .*missing.json does not exist"):
        build_head("real", encoder=encoder, classes=classes, sources=[], counts=str(tmp_path / "missing.json"))
    with pytest.raises(PromptgenError, match="no prompt store was given"):
        build_head("real", encoder=encoder, classes=classes, sources=[], counts="counts")


def test_cli_head_with_a_counts_set(counted, cli, tmp_path: Path) -> None:
    out = tmp_path / "h.pt"
    result = cli("head", "counted", "--builder", "real", "--counts", "counts", *TINY_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["details"]["scorer"] == "counts" and sidecar["details"]["counts"] == "counted/counts@v1"
    assert sidecar["details"]["names"] == {c: n for c, n in zip(CLASSES, EXPECTED) if c != n}


# -- the frequency scorer's default margin -------------------------------------------------------

def test_default_margin_renames_only_when_wordfreq_is_far_apart(cli, root: Path, tmp_path: Path, tiny_clip) -> None:
    """rename and the real head without --margin: the frequency scorer must beat the official name by
    more than FREQUENCY_MARGIN (measured, benchmarks/README.md); "dog" beats "zqxv" by that much,
    "car" beats "automobile" by less. Other scorers keep margin 0 (counts: REAL's rule)."""
    from wordfreq import zipf_frequency

    from promptgen.rename import FREQUENCY_MARGIN
    from tests.test_real_heads import write_synonyms

    gap = {name: zipf_frequency(synonym, "en") - zipf_frequency(name, "en")
           for name, synonym in (("zqxv", "dog"), ("automobile", "car"))}
    assert gap["zqxv"] > FREQUENCY_MARGIN > gap["automobile"] > 0
    class_file = tmp_path / "margins.txt"
    class_file.write_text("zqxv\nautomobile\n", encoding="utf-8")
    store = Store(root)
    classes = store.classes("margins", class_file)
    write_synonyms(store, classes, {"zqxv": ["dog"], "automobile": ["car"]})

    def chosen(*args: str) -> list[str]:
        result = cli("rename", "margins", "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["chosen"] for row in json.loads(result.stdout)["rows"]]

    assert chosen() == ["dog", "automobile"]
    assert chosen("--margin", "0") == ["dog", "car"]
    assert chosen("--margin", str(gap["zqxv"] + 0.01)) == ["zqxv", "automobile"]
    encoder = TextEncoder(tiny_clip)
    synonyms = collect_sources(store, classes, ["synonyms"])
    head = build_head("real", encoder=encoder, classes=classes, sources=synonyms, scorer="frequency")
    assert head.info["details"]["names"] == {"zqxv": "dog"}
    zero = build_head("real", encoder=encoder, classes=classes, sources=synonyms, scorer="frequency", margin=0.0)
    assert zero.info["details"]["names"] == {"zqxv": "dog", "automobile": "car"}
