"""The descriptor sets shipped under prompts/ (WaffleCLIP/DCLIP, MIT): present, intact, licensed,
visible from any root and never writable from one."""

from __future__ import annotations

import pytest

from promptgen.errors import PromptgenError
from promptgen.fileio import sha256_file
from promptgen.paths import BUILTIN_PROMPTS_DIR
from promptgen.store import SetRef, Store

# texts per set (PROVENANCE.md totals, less empty strings and repeats dropped at import)
SHIPPED = {"imagenet": 5800, "cub": 1312, "dtd": 193, "eurosat": 25, "food101": 499, "pets": 246,
           "flowers102": 626, "cars": 1522, "places365": 2105, "fgvc-aircraft-family": 499}


@pytest.mark.parametrize("dataset,count", sorted(SHIPPED.items()))
def test_shipped_set_is_complete_intact_and_licensed(dataset, count, root):
    store = Store(root)  # an empty root: the shipped sets are found anyway
    info = store.resolve(SetRef(dataset, "dclip-published"))
    assert info.status == "complete" and info.version == 1
    assert sha256_file(info.records_path) == info.manifest["records_sha256"]
    records = store.read_records(info)
    assert len(records) == count == info.manifest["counts"]["records"]
    assert {r["kind"] for r in records} == {"descriptor"}
    classes = store.classes(dataset)
    assert info.manifest["classes"]["hash"] == classes.hash
    assert all(classes.names[r["class_index"]] == r["class_name"] for r in records)
    assert "MIT" in info.manifest["license"] and "Karsten Roth" in info.manifest["license"]


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
