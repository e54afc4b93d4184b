"""The prompt store: set references, immutable versions, the journal, locks and resumption."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from promptgen import __version__
from promptgen.errors import PromptgenError
from promptgen.fileio import sha256_file
from promptgen.store import MANIFEST_FORMAT, SetRef, Store, VersionWriter, make_record


def _records(texts: list[str], class_names=("cat", "dog")) -> list[dict]:
    return [make_record(class_index=i % len(class_names), class_name=class_names[i % len(class_names)],
                        stage="import", kind="sentence", text=text, template=None, sample_index=i,
                        request_key=None, model=None)
            for i, text in enumerate(texts)]


# -- SetRef ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("cifar10/cupl@v2", ("cifar10", "cupl", 2)),
    ("cifar10/cupl@V3", ("cifar10", "cupl", 3)),
    ("cifar10/cupl@4", ("cifar10", "cupl", 4)),
    ("cifar10/cupl", ("cifar10", "cupl", None)),
    ("cifar10", ("cifar10", None, None)),
])
def test_setref_parse(text: str, expected: tuple) -> None:
    ref = SetRef.parse(text)
    assert (ref.dataset, ref.set, ref.version) == expected


def test_setref_parse_with_dataset() -> None:
    ref = SetRef.parse("cupl@v1", dataset="cifar10")
    assert (ref.dataset, ref.set, ref.version) == ("cifar10", "cupl", 1)
    assert SetRef.parse("cifar10/cupl@v1", dataset="cifar10") == ref


def test_setref_str_round_trip() -> None:
    assert str(SetRef.parse("cifar10/cupl@v2")) == "cifar10/cupl@v2"
    assert str(SetRef.parse("cifar10/cupl")) == "cifar10/cupl"


@pytest.mark.parametrize("text", ["cifar10/cupl@x", "cifar10/cupl@v", "cifar10/cupl@v1.5", "cifar10/cupl@v-1"])
def test_setref_bad_version(text: str) -> None:
    with pytest.raises(PromptgenError, match="bad version"):
        SetRef.parse(text)


def test_setref_dataset_mismatch() -> None:
    with pytest.raises(PromptgenError) as info:
        SetRef.parse("cifar100/cupl@v1", dataset="cifar10")
    assert "cifar100" in str(info.value) and "cifar10" in str(info.value)


@pytest.mark.parametrize("text", ["cifar10/../x", "cifar10/.hidden", "../cifar10/cupl", "cifar10/a b"])
def test_setref_rejects_bad_names(text: str) -> None:
    with pytest.raises(PromptgenError, match="invalid"):
        SetRef.parse(text)


# -- writing versions -----------------------------------------------------------------------------

def test_write_version_twice_makes_v1_and_v2(root: Path) -> None:
    store = Store(root)
    v1 = store.write_version("ds", "set", _records(["a cat.", "a dog."]), {"stage": "import"})
    v2 = store.write_version("ds", "set", _records(["another cat."]), {"stage": "import"})
    assert (v1.version, v2.version) == (1, 2)
    assert v1.manifest["parent"] is None
    assert v2.manifest["parent"] == "ds/set@v1"
    directory = root / "prompts" / "ds" / "set"
    assert v1.records_path == directory / "v1.jsonl" and v1.records_path.is_file()
    assert v2.manifest_path == directory / "v2.manifest.json" and v2.manifest_path.is_file()
    versions = store.list_versions("ds", "set")
    assert [v.version for v in versions] == [1, 2]
    assert [v.status for v in versions] == ["complete", "complete"]
    assert store.list_sets("ds") == ["set"]
    assert "ds" in store.list_datasets()


def test_explicit_parent_is_kept(root: Path) -> None:
    store = Store(root)
    store.write_version("ds", "set", _records(["a cat."]), {})
    info = store.write_version("ds", "other", _records(["a dog."]), {"parent": "ds/set@v1"})
    assert info.manifest["parent"] == "ds/set@v1"


def test_resolve_gives_latest_complete(root: Path) -> None:
    store = Store(root)
    store.write_version("ds", "set", _records(["a cat."]), {})
    store.write_version("ds", "set", _records(["a dog."]), {})
    store.new_version("ds", "set", {})  # v3 never finished
    assert store.resolve(SetRef.parse("ds/set")).version == 2
    assert store.resolve(SetRef.parse("ds/set@v1")).version == 1
    assert store.resolve(SetRef.parse("ds/set@v3")).status == "interrupted"


def test_resolve_errors(root: Path) -> None:
    store = Store(root)
    with pytest.raises(PromptgenError, match="no prompt set"):
        store.resolve(SetRef.parse("ds/set"))
    store.write_version("ds", "set", _records(["a cat."]), {})
    with pytest.raises(PromptgenError) as info:
        store.resolve(SetRef.parse("ds/set@v9"))
    assert "v1" in str(info.value)
    with pytest.raises(PromptgenError, match="does not name a set"):
        store.resolve(SetRef.parse("ds"))


def test_resolve_without_complete_version(root: Path) -> None:
    store = Store(root)
    store.new_version("ds", "set", {})
    with pytest.raises(PromptgenError, match="no complete version"):
        store.resolve(SetRef.parse("ds/set"))


def test_records_round_trip(root: Path) -> None:
    store = Store(root)
    records = _records(["a cat.", "a dog.", "caf\u00e9 \u201cquotes\u201d \u2014 \u00fcml\u00e4uts", "line"])
    records[1]["pair_classes"] = [0, 1]  # a record's only nested field
    info = store.write_version("ds", "set", records, {})
    assert store.read_records(info) == records
    again = store.resolve(SetRef.parse("ds/set@v1"))
    assert store.read_records(again) == records


def test_complete_version_is_read_only_with_checksum(root: Path) -> None:
    store = Store(root)
    info = store.write_version("ds", "set", _records(["a cat.", "a dog."]), {"stage": "import"})
    for path in (info.records_path, info.manifest_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    manifest = json.loads(info.manifest_path.read_text(encoding="utf-8"))
    assert manifest["records_sha256"] == sha256_file(info.records_path)
    assert manifest["records_file"] == "v1.jsonl"
    assert not info.lock_path.exists()


def test_manifest_fields(root: Path) -> None:
    store = Store(root)
    info = store.write_version("ds", "set", _records(["a cat."]), {"stage": "import", "note": "x"})
    manifest = json.loads(info.manifest_path.read_text(encoding="utf-8"))
    assert manifest["status"] == "complete"
    assert manifest["promptgen_version"] == __version__
    assert manifest["format"] == MANIFEST_FORMAT
    assert (manifest["dataset"], manifest["set"], manifest["version"]) == ("ds", "set", 1)
    assert manifest["stage"] == "import" and manifest["note"] == "x"
    for key in ("created", "finished"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest[key]), manifest[key]
    assert store.list_versions("ds", "set")[0].manifest == manifest


def test_new_version_starts_running(root: Path) -> None:
    store = Store(root)
    writer = store.new_version("ds", "set", {"stage": "describe"})
    manifest = json.loads(writer.info.manifest_path.read_text(encoding="utf-8"))
    assert manifest["status"] == "running"
    assert manifest["stage"] == "describe"
    assert writer.info.version == 1


def test_builtin_or_reserved_names_rejected(root: Path) -> None:
    with pytest.raises(PromptgenError):
        Store(root).write_version("templates", "set", _records(["a cat."]), {})
    with pytest.raises(PromptgenError):
        Store(root).write_version("ds", "a/b", _records(["a cat."]), {})


# -- the journal, locks and interrupted versions ----------------------------------------------------

def test_journal_append_and_read(root: Path) -> None:
    writer = Store(root).new_version("ds", "set", {})
    with writer:
        writer.append({"key": "r1", "texts": ["a"]})
        writer.append({"key": "r2", "texts": ["b \u00e9"]})
    assert VersionWriter(writer.info).read_journal() == [{"key": "r1", "texts": ["a"]},
                                                         {"key": "r2", "texts": ["b \u00e9"]}]


def test_journal_torn_last_line_is_dropped_and_truncated(root: Path) -> None:
    writer = Store(root).new_version("ds", "set", {})
    good = (json.dumps({"key": "r1"}) + "\n" + json.dumps({"key": "r2", "text": "caf\u00e9"}, ensure_ascii=False)
            + "\n").encode()
    writer.info.journal_path.write_bytes(good + b'{"key": "r3", "te')
    entries = writer.read_journal()
    assert entries == [{"key": "r1"}, {"key": "r2", "text": "caf\u00e9"}]
    assert writer.info.journal_path.read_bytes() == good
    # reading again changes nothing, and appending continues after the good lines
    assert writer.read_journal() == entries
    with writer:
        writer.append({"key": "r3"})
    assert [e["key"] for e in writer.read_journal()] == ["r1", "r2", "r3"]


def test_journal_complete_json_without_newline_is_torn(root: Path) -> None:
    writer = Store(root).new_version("ds", "set", {})
    good = b'{"key": "r1"}\n'
    writer.info.journal_path.write_bytes(good + b'{"key": "r2"}')
    assert writer.read_journal() == [{"key": "r1"}]
    assert writer.info.journal_path.read_bytes() == good


def test_journal_missing_is_empty(root: Path) -> None:
    assert Store(root).new_version("ds", "set", {}).read_journal() == []


def test_second_writer_is_refused_while_locked(root: Path) -> None:
    store = Store(root)
    writer = store.new_version("ds", "set", {})
    with writer:
        assert store.list_versions("ds", "set")[0].status == "running"
        other = VersionWriter(store.list_versions("ds", "set")[0])
        with pytest.raises(PromptgenError, match="another promptgen process"):
            with other:
                pass
        # resuming the version being written is refused at the set's lock, before the version's
        with pytest.raises(PromptgenError, match="ds/set is being written by another promptgen run"):
            store.resume_version("ds", "set")
    # once released, another writer may take it
    with VersionWriter(writer.info):
        pass


def test_unfinished_version_is_interrupted_without_lock(root: Path) -> None:
    store = Store(root)
    writer = store.new_version("ds", "set", {})
    assert writer.info.manifest["status"] == "running"
    assert store.list_versions("ds", "set")[0].status == "interrupted"
    with writer:
        assert store.list_versions("ds", "set")[0].status == "running"
    assert store.list_versions("ds", "set")[0].status == "interrupted"


def test_resume_interrupted_version(root: Path) -> None:
    store = Store(root)
    store.write_version("ds", "set", _records(["a cat."]), {})
    writer = store.new_version("ds", "set", {})
    with writer:
        writer.append({"key": "r1"})
    resumed = store.resume_version("ds", "set")
    assert resumed.info.version == 2
    assert resumed.read_journal() == [{"key": "r1"}]
    with resumed:
        info = resumed.finish(_records(["a dog."]), resumed.info.manifest | {"status": "complete"})
    assert store.resolve(SetRef.parse("ds/set")).version == 2
    assert store.read_records(info)[0]["text"] == "a dog."


def test_resume_with_nothing_to_resume(root: Path) -> None:
    store = Store(root)
    with pytest.raises(PromptgenError, match="nothing to resume"):
        store.resume_version("ds", "set")
    store.write_version("ds", "set", _records(["a cat."]), {})
    with pytest.raises(PromptgenError, match="nothing to resume") as info:
        store.resume_version("ds", "set")
    assert "v1" in str(info.value) and "complete" in str(info.value)


def test_resume_complete_version_by_number_is_refused(root: Path) -> None:
    store = Store(root)
    store.write_version("ds", "set", _records(["a cat."]), {})
    with pytest.raises(PromptgenError, match="immutable"):
        store.resume_version("ds", "set", 1)


def test_read_records_of_unfinished_version(root: Path) -> None:
    store = Store(root)
    writer = store.new_version("ds", "set", {})
    with pytest.raises(PromptgenError, match="no records"):
        store.read_records(writer.info)


def test_a_manifest_without_status_is_never_taken_for_a_complete_version(root: Path) -> None:
    store = Store(root)
    store.write_version("ds", "set", _records(["a cat", "a dog"]), {"stage": "import"})
    directory = root / "prompts" / "ds" / "set"
    (directory / "v2.manifest.json").write_text("")  # what a crash mid-reservation could once leave
    versions = store.list_versions("ds", "set")
    assert [v.status for v in versions] == ["complete", "unreadable"]
    assert store.resolve(SetRef("ds", "set")).version == 1
    info = store.write_version("ds", "set", _records(["a bird"]), {"stage": "import"})
    assert info.version == 3 and info.manifest["parent"] == "ds/set@v1"


def test_reserving_a_version_leaves_no_staging_files(root: Path) -> None:
    store = Store(root)
    writer = store.new_version("ds", "set", {"stage": "import"})
    directory = root / "prompts" / "ds" / "set"
    assert sorted(p.name for p in directory.iterdir()) == [".writing.lock", "v1.manifest.json"]
    assert json.loads((directory / "v1.manifest.json").read_text())["status"] == "running"
    assert writer.info.version == 1
