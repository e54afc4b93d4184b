"""The descriptor sets shipped under prompts/ (WaffleCLIP/DCLIP, MIT): present, intact, licensed,
listed in prompts/shipped.json, visible from any root and never writable; what a run writes inside
a checkout stays that checkout's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.fileio import sha256_file
from promptgen.paths import BUILTIN_PROMPTS_DIR, shipped_versions
from promptgen.store import SetRef, Store
from tests.conftest import CHECKOUT, copy_checkout
from tests.test_readme import quick_start_commands

# texts per set: every descriptor of the published files (PROVENANCE.md totals) and "" for each
# empty list, as DCLIP's loader reads it (v2 of cars, places365, food101 and fgvc-aircraft-family;
# their v1 dropped empty strings and repeats, and left the empty lists without records)
SHIPPED = {"imagenet": 5800, "cub": 1312, "dtd": 193, "eurosat": 25, "food101": 504, "pets": 246,
           "flowers102": 626, "cars": 1544, "places365": 2109, "fgvc-aircraft-family": 500}
PUBLISHED_FILE = {"fgvc-aircraft-family": "fgvcaircraft"}  # tests/data/waffle/descriptors_NAME.json


@pytest.mark.parametrize("dataset,count", sorted(SHIPPED.items()))
def test_shipped_set_is_complete_intact_and_licensed(dataset, count, root):
    store = Store(root)  # an empty root: the shipped sets are found anyway
    info = store.resolve(SetRef(dataset, "dclip-published"))
    assert info.status == "complete" and info.version == max(shipped_versions()[(dataset, "dclip-published")])
    assert sha256_file(info.records_path) == info.manifest["records_sha256"]
    records = store.read_records(info)
    assert len(records) == count == info.manifest["counts"]["records"]
    assert {r["kind"] for r in records} == {"descriptor"}
    classes = store.classes(dataset)
    assert info.manifest["classes"]["hash"] == classes.hash
    assert all(classes.names[r["class_index"]] == r["class_name"] for r in records)
    assert "MIT" in info.manifest["license"] and "Karsten Roth" in info.manifest["license"]


@pytest.mark.parametrize("dataset", sorted(SHIPPED))
def test_shipped_set_is_the_published_file_descriptor_for_descriptor(dataset, root):
    """Every descriptor of WaffleCLIP's file, in its order, under its key (DCLIP's labels use it)."""
    published = json.loads((CHECKOUT / "tests" / "data" / "waffle" /
                            f"descriptors_{PUBLISHED_FILE.get(dataset, dataset)}.json").read_text(encoding="utf-8"))
    store = Store(root)
    records = store.read_records(store.resolve(SetRef(dataset, "dclip-published")))
    shipped: dict[str, list[str]] = {}
    for record in records:
        shipped.setdefault(record.get("source_key") or record["class_name"], []).append(record["text"])
    assert shipped == {key: [" ".join(t.split()) for t in texts or [""]] for key, texts in published.items()}


def test_licence_notice_ships_with_the_sets():
    text = (BUILTIN_PROMPTS_DIR / "LICENSE-WaffleCLIP.md").read_text()
    assert "Copyright (c) 2023 Karsten Roth" in text and "Permission is hereby granted" in text


def test_imagenet_set_matched_by_label_order_records_the_renamed_keys(root):
    info = Store(root).resolve(SetRef("imagenet", "dclip-published"))
    renamed = {r["key"]: r["class_name"] for r in info.manifest["import"]["matched_with_other_name"]}
    assert renamed == {"eft": "newt", "maillot": "tights"}
    assert info.manifest["import"]["unmatched_keys"] == [] and info.manifest["import"]["missing_classes"] == []


def test_shipped_sets_are_read_only_from_another_root(root):
    store = Store(root)
    with pytest.raises(PromptgenError, match="read-only"):
        store.write_version("imagenet", "dclip-published", [], {"stage": "import"})
    assert len(store.list_versions("imagenet", "dclip-published")) == 1


# -- what ships is listed (prompts/shipped.json), never inferred from where a folder is ----------------

def test_the_shipped_list_names_every_tracked_set_and_nothing_else():
    tracked = subprocess.run(["git", "ls-files", "prompts"], cwd=CHECKOUT, capture_output=True, text=True,
                             check=True).stdout.split()
    on_disk = {}
    for name in tracked:
        match = re.fullmatch(r"prompts/([^/]+)/([^/]+)/v(\d+)\.manifest\.json", name)
        if match:
            on_disk.setdefault((match[1], match[2]), set()).add(int(match[3]))
    assert on_disk and {key: set(versions) for key, versions in shipped_versions().items()} == on_disk
    assert set(shipped_versions()) == {(dataset, "dclip-published") for dataset in SHIPPED}


@pytest.fixture
def checkout_root(tmp_path, monkeypatch):
    """A stand-in for the project's own prompts/ folder: `pub` v1 ships; `pub` v2 and `mine` were
    written there by runs made inside the checkout."""
    builtin = tmp_path / "checkout" / "prompts"
    for set_name in ("pub", "pub", "mine"):
        Store(tmp_path / "checkout").write_version("toy", set_name, [], {"stage": "import"}, classes=_TOY)
    (builtin / "shipped.json").write_text(json.dumps({"format": "promptgen.shipped/1", "sets": {"toy/pub": [1]}}))
    monkeypatch.setattr("promptgen.paths.BUILTIN_PROMPTS_DIR", builtin)
    monkeypatch.setattr("promptgen.store.BUILTIN_PROMPTS_DIR", builtin)
    shipped_versions.cache_clear()
    yield tmp_path / "checkout"
    shipped_versions.cache_clear()


_TOY = ClassList("toy", ("a", "b"))


def test_from_another_root_only_the_listed_versions_are_shipped(checkout_root, tmp_path):
    store = Store(tmp_path / "elsewhere")
    assert store.list_sets("toy") == ["pub"] and store.list_datasets() == ["toy"]
    assert [v.version for v in store.list_versions("toy", "pub")] == [1]  # v2 was made in the checkout, not shipped
    with pytest.raises(PromptgenError, match="read-only"):
        store.write_version("toy", "pub", [], {"stage": "import"})
    # a set someone wrote inside the checkout is theirs there, and nothing to anyone else
    info = store.write_version("toy", "mine", [], {"stage": "import"}, classes=_TOY)
    assert info.version == 1 and info.directory == tmp_path / "elsewhere" / "prompts" / "toy" / "mine"


def test_in_the_checkout_its_own_sets_are_writable_and_shipped_ones_are_not(checkout_root):
    store = Store(checkout_root)
    assert store.list_sets("toy") == ["mine", "pub"]
    assert [v.version for v in store.list_versions("toy", "pub")] == [1, 2]
    assert store.write_version("toy", "mine", [], {"stage": "import"}).version == 2
    with pytest.raises(PromptgenError, match="read-only"):
        store.write_version("toy", "pub", [], {"stage": "import"})


@pytest.mark.subprocess
def test_the_readme_main_job_run_inside_a_checkout_leaves_every_other_root_alone(tmp_path):
    """The README's main-job command run in a copy of the checkout (so its output lands in the
    copy's own prompts/), twice, then the same job from another folder: all pass, and no shipped
    set changes."""
    copy = copy_checkout(tmp_path / "checkout")
    main_job = quick_start_commands()[0].split("&&")[-1].split()
    assert main_job[0] == ".venv/bin/promptgen"
    env = {**os.environ, "PYTHONPATH": str(copy), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    env.pop("PROMPTGEN_HOME", None)

    def promptgen(*args: str, cwd: Path) -> str:
        done = subprocess.run([sys.executable, "-m", "promptgen", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert json.loads(promptgen("paths", "--json", cwd=copy))["builtin_prompts"] == str(copy / "prompts")
    shipped_before = _shipped_files(copy)
    assert "v1.jsonl (complete)" in promptgen(*main_job[1:], cwd=copy)
    assert "v2.jsonl (complete)" in promptgen(*main_job[1:], cwd=copy)  # the main job a second time
    assert (copy / "prompts" / "cifar10" / "wordnet" / "v2.jsonl").is_file()
    other = tmp_path / "other"
    out = promptgen(*main_job[1:], "--root", str(other), cwd=copy)
    assert str(other / "prompts" / "cifar10" / "wordnet" / "v1.jsonl") in out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "v1.jsonl (complete)" in promptgen(*main_job[1:], cwd=elsewhere)  # from another folder
    versions = promptgen("versions", "cifar10", "--root", str(other), cwd=copy)
    assert "cifar10/wordnet@v1" in versions and "@v2" not in versions
    assert _shipped_files(copy) == shipped_before


def _shipped_files(checkout: Path) -> dict[str, str]:
    folders = [checkout / "prompts" / dataset / set_name for dataset, set_name in shipped_versions()]
    files = {str(path.relative_to(checkout)): sha256_file(path)
             for folder in folders for path in sorted(folder.iterdir())}
    assert len(files) == 2 * sum(len(versions) for versions in shipped_versions().values())
    return files


def test_a_malformed_shipped_list_is_an_error_not_an_empty_list(tmp_path, monkeypatch):
    monkeypatch.setattr("promptgen.paths.BUILTIN_PROMPTS_DIR", tmp_path)
    for content in ({"sets": {"imagenet/dclip-published": [1]}},  # no format
                    {"format": "promptgen.shipped/1", "sets": {"imagenet": [1]}},
                    {"format": "promptgen.shipped/1", "sets": {"imagenet/dclip-published": "1"}}):
        (tmp_path / "shipped.json").write_text(json.dumps(content))
        shipped_versions.cache_clear()
        with pytest.raises(ValueError, match="shipped"):
            shipped_versions()
    shipped_versions.cache_clear()
