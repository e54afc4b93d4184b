"""The typed models of promptgen's files: every file today's code writes (the golden run's outputs)
and every shipped set validates and writes back byte for byte; unknown keys and other formats are
refused with a message that names the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptgen.errors import PromptgenError
from promptgen.paths import shipped_versions
from promptgen.typed_files import dump

CHECKOUT = Path(__file__).resolve().parent.parent
GOLDEN = CHECKOUT / "tests" / "golden" / "out"
SHIPPED = CHECKOUT / "prompts"


def _files(pattern: str, suffix: str) -> list[Path]:
    """The golden run's files and the shipped sets' (by prompts/shipped.json: a checkout where the
    README's main job ran also holds that run's own sets, which are not promptgen's)."""
    shipped = [SHIPPED / dataset / set_name / f"v{version}{suffix}"
               for (dataset, set_name), versions in shipped_versions().items() for version in versions]
    found = sorted(GOLDEN.glob("prompts/" + pattern)) + sorted(shipped)
    assert found, pattern
    return found


def _indent(text: str) -> int:
    """The indent a JSON file was written with (the store writes 2, the golden run normalises to 1)."""
    data = json.loads(text)
    return next(i for i in (1, 2) if json.dumps(data, ensure_ascii=False, indent=i) + "\n" == text)


def _name(path: Path) -> str:
    return path.relative_to(CHECKOUT).as_posix()


# -- manifests ------------------------------------------------------------------------------------

MANIFESTS = _files("*/*/v*.manifest.json", ".manifest.json")


def test_the_golden_run_and_the_shipped_sets_have_a_manifest_of_every_kind():
    kinds = {(m["stage"], m["source"]) for m in (json.loads(p.read_text()) for p in MANIFESTS)}
    assert kinds == {("describe", "llm"), ("describe", "wordnet"), ("synonyms", "llm"), ("synonyms", "wordnet"),
                     ("differentiate", "llm"), ("import", "file")}
    assert len([p for p in MANIFESTS if p.is_relative_to(SHIPPED)]) == 14


@pytest.mark.parametrize("path", MANIFESTS, ids=_name)
def test_every_manifest_validates_and_writes_back_byte_for_byte(path):
    from promptgen.manifests import check_manifest

    text = path.read_text(encoding="utf-8")
    model = check_manifest(json.loads(text), path)
    assert json.dumps(dump(model), ensure_ascii=False, indent=_indent(text)) + "\n" == text


def test_a_manifest_section_is_typed():
    from promptgen.manifests import check_manifest

    path = GOLDEN / "prompts/cifar10/differential/v1.manifest.json"
    manifest = check_manifest(json.loads(path.read_text()), path)
    assert manifest.stage == "differentiate" and manifest.pairs.pairs == 8 and manifest.model.concurrency == 4
    assert manifest.counts.records == 56 and manifest.job.pairs_sha256 == manifest.pairs.pairs_sha256


def test_the_drop_and_reject_counts_have_a_key_for_every_reason():
    from promptgen.manifests import Dropped, Rejected
    from promptgen.parsing import DROP_REASONS, PAIR_REJECT_REASONS

    assert tuple(Dropped.model_fields) == DROP_REASONS
    assert tuple(Rejected.model_fields) == PAIR_REJECT_REASONS


def _golden_manifest() -> dict:
    return json.loads((GOLDEN / "prompts/cifar10/dclip/v1.manifest.json").read_text())


@pytest.mark.parametrize("change, named", [
    (lambda m: m.update(colour="red"), "unknown key 'colour'"),
    (lambda m: m["classes"].update(colour="red"), "unknown key 'classes.colour' (known keys: count, hash, source)"),
    (lambda m: m["dropped_per_class"].update({"3": {"empty": 1, "lost": 2}}), "unknown key 'dropped_per_class.3.lost'"),
    (lambda m: m.pop("status"), "missing key 'status'"),
    (lambda m: m.update(version="1"), "version: input should be a valid integer (got '1')"),
    (lambda m: m["model"].update(concurrency=True), "model.concurrency: input should be a valid integer"),
])
def test_a_malformed_manifest_is_refused_naming_the_file_and_the_key(change, named):
    from promptgen.manifests import check_manifest

    manifest = _golden_manifest()
    change(manifest)
    with pytest.raises(PromptgenError) as info:
        check_manifest(manifest, "ds/set/v1.manifest.json")
    assert "ds/set/v1.manifest.json is not a valid prompt-set manifest" in info.value.message
    assert named in info.value.message and info.value.hint


def test_a_manifest_of_another_format_is_refused():
    from promptgen.manifests import check_manifest

    with pytest.raises(PromptgenError) as info:
        check_manifest({**_golden_manifest(), "format": "promptgen.prompt-set/2"}, "v1.manifest.json")
    assert "format 'promptgen.prompt-set/2'" in info.value.message and "'promptgen.prompt-set/1'" in info.value.message


def _write_set(root: Path) -> Path:
    from promptgen.store import Store, make_record

    records = [make_record(class_index=0, class_name="cat", stage="import", kind="sentence", text="a cat.",
                           template=None, sample_index=0, request_key=None, model=None)]
    return Store(root).write_version("ds", "set", records, {"stage": "import"}).manifest_path


def test_the_store_refuses_a_manifest_with_an_unknown_key(tmp_path):
    from promptgen.store import SetRef, Store

    path = _write_set(tmp_path)
    manifest = json.loads(path.read_text())
    path.chmod(0o644)
    path.write_text(json.dumps({**manifest, "stauts": "complete"}))
    with pytest.raises(PromptgenError) as info:
        Store(tmp_path).resolve(SetRef.parse("ds/set"))
    assert str(path) in info.value.message and "unknown key 'stauts'" in info.value.message


def test_the_store_never_writes_a_manifest_with_an_unknown_key(tmp_path):
    from promptgen.store import Store

    with pytest.raises(PromptgenError, match="unknown key 'colour'"):
        Store(tmp_path).write_version("ds", "set", [], {"stage": "import", "colour": "red"})
    assert not list((tmp_path / "prompts" / "ds" / "set").glob("v*.manifest.json"))
    assert _write_set(tmp_path).name == "v1.manifest.json"  # and the set is not left locked


# -- records --------------------------------------------------------------------------------------

RECORDS = [p for p in _files("*/*/v*.jsonl", ".jsonl") if not p.name.endswith(".requests.jsonl")]


def test_the_golden_records_have_every_optional_field():
    from promptgen.records import Record

    written = {key for path in RECORDS for line in path.read_text().splitlines() for key in json.loads(line)}
    # salvaged: only a pair rescued from a cut-off answer; the counts fields: counts sets, which the
    # golden job does not make (tests/test_count_names.py checks them)
    counts_fields = {"count", "judged", "relevant", "relevance", "scaled_count"}
    assert written == set(Record.model_fields) - {"salvaged"} - counts_fields


@pytest.mark.parametrize("path", RECORDS, ids=_name)
def test_every_records_file_validates_and_writes_back_byte_for_byte(path):
    from promptgen.records import Record, parse_records

    text = path.read_text(encoding="utf-8")
    records = parse_records(text, path)
    assert "".join(json.dumps(dump(Record.model_validate(r)), ensure_ascii=False) + "\n" for r in records) == text


def test_the_record_model_starts_with_the_fields_every_record_has():
    from promptgen.records import Record
    from promptgen.store import make_record

    made = make_record(class_index=0, class_name="cat", stage="describe", kind="sentence", text="a cat.",
                       template=None, sample_index=None, request_key=None, model=None)
    assert list(Record.model_fields)[:len(made)] == list(made)
    assert [name for name, field in Record.model_fields.items() if field.is_required()] == list(made)


def _line(**changes) -> str:
    record = json.loads((GOLDEN / "prompts/cifar10/dclip/v1.jsonl").read_text().splitlines()[0])
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v != "DROP"}) + "\n"


@pytest.mark.parametrize("bad, named", [
    (_line(colour="red"), "line 3: unknown key 'colour' (known keys: id, class_index, class_name"),
    (_line(class_index="0"), "line 3: class_index: input should be a valid integer (got '0')"),
    (_line(salvaged=1), "line 3: salvaged: input should be a valid boolean (got 1)"),
    (_line(text="DROP"), "line 3: missing key 'text'"),
    ("[1, 2]\n", "line 3: (top level): input should be a valid dictionary"),
])
def test_a_malformed_record_is_refused_naming_the_line_and_the_key(bad, named):
    from promptgen.records import parse_records

    with pytest.raises(PromptgenError) as info:
        parse_records(_line() + "\n" + bad + _line(), "ds/set/v1.jsonl")  # a blank line counts as a line
    assert info.value.message.startswith("ds/set/v1.jsonl is not a valid records file: ")
    assert named in info.value.message and info.value.hint


@pytest.mark.parametrize("bad", ['{"id": "x",\n', '{"id": "x"}, {"id": "y"}\n', "1, 2\n"])
def test_a_line_that_is_not_one_json_value_is_named(bad):
    from promptgen.records import parse_records

    with pytest.raises(PromptgenError, match=r"^ds/v1.jsonl line 2 is not valid JSON"):
        parse_records(_line() + bad + _line(), "ds/v1.jsonl")


def test_a_text_with_a_unicode_line_separator_is_one_record(tmp_path):
    from promptgen.store import SetRef, Store, make_record

    texts = ["a cat\u2028with a line separator.", "a cat\x85with a next-line."]
    records = [make_record(class_index=0, class_name="cat", stage="import", kind="sentence", text=text,
                           template=None, sample_index=i, request_key=None, model=None) for i, text in enumerate(texts)]
    store = Store(tmp_path)
    store.write_version("ds", "set", records, {"stage": "import"})
    assert [r["text"] for r in store.read_records(store.resolve(SetRef.parse("ds/set")))] == texts


def test_the_store_refuses_records_with_an_unknown_key(tmp_path):
    from promptgen.store import SetRef, Store

    path = _write_set(tmp_path).with_name("v1.jsonl")
    path.chmod(0o644)
    path.write_text(_line(colour="red"))
    with pytest.raises(PromptgenError) as info:
        Store(tmp_path).read_records(Store(tmp_path).resolve(SetRef.parse("ds/set")))
    assert f"{path} is not a valid records file: line 1: unknown key 'colour'" in info.value.message


def test_the_store_never_writes_a_record_with_an_unknown_key(tmp_path):
    from promptgen.store import Store, make_record

    record = make_record(class_index=0, class_name="cat", stage="import", kind="sentence", text="a cat.",
                         template=None, sample_index=0, request_key=None, model=None, colour="red")
    with pytest.raises(PromptgenError, match="line 1: unknown key 'colour'") as info:
        Store(tmp_path).write_version("ds", "set", [record], {"stage": "import"})
    assert info.value.hint.startswith("nothing was written")
    assert not (tmp_path / "prompts" / "ds" / "set" / "v1.jsonl").exists()


# -- query templates ------------------------------------------------------------------------------

TEMPLATES = sorted((SHIPPED / "templates").glob("*.json"))


@pytest.mark.parametrize("path", TEMPLATES, ids=_name)
def test_every_shipped_template_validates_and_writes_back_its_data_in_order(path):
    from promptgen.template_files import check_template

    data = json.loads(path.read_text(encoding="utf-8"))
    # templates are written by hand (questions one a line): the data and its key order come back, not the layout
    assert json.dumps(dump(check_template(data, path))) == json.dumps(data)


def test_the_template_sampling_keys_are_those_a_request_may_carry():
    from promptgen.llm.client import SAMPLING_KEYS
    from promptgen.template_files import Sampling

    assert set(Sampling.model_fields) == set(SAMPLING_KEYS)


def _template(root: Path, data: dict) -> Path:
    path = root / "prompts" / "templates" / "mine.v1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


MINIMAL_TEMPLATE = {"questions": [{"id": "q", "text": "What does {a} {c} look like?"}], "sampling": {"n": 1}}


@pytest.mark.parametrize("change, named", [
    ({"sytem": "You describe things."}, "unknown key 'sytem' (known keys: format, name, version, kind, description"),
    ({"sampling": {"temprature": 0.5}}, "unknown key 'sampling.temprature' (known keys: temperature, top_p"),
    ({"questions": [{"id": "q", "txt": "What is {a} {c}?"}]}, "unknown key 'questions[0].txt' (known keys: id, text)"),
    ({"questions": [{"id": "q"}]}, "missing key 'questions[0].text'"),
    ({"max_chars": "many"}, "max_chars: input should be a valid integer"),
])
def test_a_template_with_an_unknown_key_is_refused_naming_it(tmp_path, change, named):
    from promptgen.templates import load_template

    path = _template(tmp_path, {**MINIMAL_TEMPLATE, **change})
    with pytest.raises(PromptgenError) as info:
        load_template("mine", tmp_path)
    assert info.value.message.startswith(f"{path} is not a valid query template: ")
    assert named in info.value.message and info.value.hint


def test_a_template_is_read_as_leniently_as_before(tmp_path):
    from promptgen.templates import load_template

    _template(tmp_path, {**MINIMAL_TEMPLATE, "questions": [{"id": 7, "text": "What is {a} {c}?"}], "max_chars": "80"})
    template = load_template("mine", tmp_path)
    assert template.questions[0].id == "7" and template.max_chars == 80


def test_a_template_format_is_optional_and_checked(tmp_path):
    from promptgen.template_files import TEMPLATE_FORMAT
    from promptgen.templates import load_template

    _template(tmp_path, {**MINIMAL_TEMPLATE, "format": TEMPLATE_FORMAT})
    assert load_template("mine", tmp_path).questions[0].id == "q"
    _template(tmp_path, {**MINIMAL_TEMPLATE, "format": "promptgen.query-template/2"})
    with pytest.raises(PromptgenError, match="of format 'promptgen.query-template/2'; this promptgen reads"):
        load_template("mine", tmp_path)


# -- pipeline state -------------------------------------------------------------------------------

STATE = GOLDEN / "pipelines" / "golden.json"


def test_the_golden_pipeline_state_validates_and_writes_back_byte_for_byte():
    from promptgen.pipeline.state_file import PipelineStateFile, state_text

    text = STATE.read_text(encoding="utf-8")
    data = json.loads(text)
    assert state_text(data, STATE) == text
    assert json.dumps(dump(PipelineStateFile.model_validate(data)), ensure_ascii=False, indent=1) + "\n" == text
    outputs = {tuple(unit["output"]) for unit in data["units"].values()}
    assert outputs == {("set", "records_sha256"), ("path", "sha256")}


def _state_file(tmp_path: Path, change) -> Path:
    state = json.loads(STATE.read_text(encoding="utf-8"))
    change(state)
    path = tmp_path / "pipelines" / "golden.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, named", [
    (lambda s: s.update(colour="red"), "unknown key 'colour' (known keys: format, units, file)"),
    (lambda s: s["units"]["cifar10/dclip"].update(statsu="done"), "unknown key 'units.cifar10/dclip.statsu'"),
    (lambda s: s["units"]["cifar10/dclip"]["output"].update(colour="red"),
     "unknown key 'units.cifar10/dclip.output.colour' (known keys: set, records_sha256, path, sha256)"),
    (lambda s: s["units"]["cifar10/dclip"].update(version="1"),
     "units.cifar10/dclip.version: input should be a valid integer (got '1')"),
])
def test_a_pipeline_state_with_an_unknown_key_is_refused_naming_it(tmp_path, change, named):
    from promptgen.pipeline import PipelineState

    path = _state_file(tmp_path, change)
    with pytest.raises(PromptgenError) as info:
        PipelineState(path)
    assert info.value.message.startswith(f"{path} is not a valid pipeline state: ")
    assert named in info.value.message and info.value.hint.startswith("delete it")


def test_a_pipeline_state_of_another_format_is_ignored_with_a_warning_as_before(tmp_path, capsys):
    from promptgen.pipeline import PipelineState

    path = _state_file(tmp_path, lambda s: s.update(format=1, colour="red"))
    assert PipelineState(path).data == {"format": 2, "units": {}}
    assert f"warning: {path} is from another promptgen version" in capsys.readouterr().err


def test_the_runner_never_writes_a_state_key_it_does_not_know(tmp_path):
    from promptgen.pipeline import PipelineState

    state = PipelineState(tmp_path / "golden.json")
    state.update("cifar10/dclip", status="running")
    with pytest.raises(PromptgenError, match="unknown key 'units.cifar10/dclip.colour'"):
        state.update("cifar10/dclip", colour="red")
    assert json.loads((tmp_path / "golden.json").read_text())["units"] == {"cifar10/dclip": {"status": "running"}}
