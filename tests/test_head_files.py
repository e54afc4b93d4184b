"""Head files as .safetensors beside .pt: the same tensor, metadata that describes the head without
its sidecar, a sidecar checked against the file, other tools' files loaded bare, bad files refused
clearly, pickled payloads never run; and a pipeline step writing one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file

from promptgen.classes import ClassList, load_dataset
from promptgen.clip.head_files import load_head, save_head
from promptgen.clip.registry import Head
from promptgen.errors import PromptgenError
from tests.conftest import TINY_ARGS, run_cli

CIFAR10 = load_dataset("cifar10")
LOGGER = "promptgen.clip.head_files"


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return dict(handle.metadata() or {})


@pytest.fixture
def wordnet_heads(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """One cupl head over the cifar10 WordNet set, written by the CLI as .pt and as .safetensors
    (different stems: a head and its sidecar share the stem)."""
    assert run_cli("describe", "cifar10", "--source", "wordnet", root=root).exit_code == 0
    paths = tmp_path / "heads" / "w.pt", tmp_path / "heads" / "w-st.safetensors"
    for path in paths:
        result = run_cli("head", "cifar10", "--builder", "cupl", "--set", "wordnet", *TINY_ARGS, "-o", path, root=root)
        assert result.exit_code == 0, result.output
    return paths


def test_safetensors_and_pt_heads_hold_the_same_tensor_and_evaluate_the_same(wordnet_heads, root, tmp_path):
    pt, st = wordnet_heads
    with safe_open(str(st), framework="pt", device="cpu") as handle:
        assert list(handle.keys()) == ["weights"]
        raw = handle.get_tensor("weights")
    assert raw.dtype == torch.float32 and raw.shape == (64, 10)
    assert torch.equal(raw, torch.load(pt, weights_only=True))
    assert torch.equal(load_head(st, CIFAR10, 64).weights, load_head(pt, CIFAR10, 64).weights)

    features = tmp_path / "f.npz"
    rng = np.random.default_rng(3)
    np.savez(features, features=rng.normal(size=(50, 64)).astype("float32"), labels=np.arange(50) % 10)
    reports = []
    for head in (pt, st):
        result = run_cli("eval", "cifar10", "--features", features, "--head", head, "--json", root=root)
        assert result.exit_code == 0, result.output
        (entry,) = json.loads(result.stdout)["heads"]
        reports.append(entry)
    from_pt, from_st = reports
    assert from_pt["top1"] > 0  # random features still give some hits: the comparison is not of two zeros
    info_pt, info_st = from_pt.pop("info"), from_st.pop("info")
    from_pt.pop("head"), from_st.pop("head")
    assert from_pt == from_st
    assert info_st.pop("file") == str(st) and info_pt.pop("file") == str(pt)
    assert info_st.pop("sidecar_sha256").startswith("sha256:")
    for key in ("name", "created", "encoding"):  # the second build found the texts in the cache
        info_pt.pop(key), info_st.pop(key)
    assert info_pt == info_st and info_st["builder"] == "cupl"  # the rest: the sidecars of one build, twice


def test_safetensors_metadata_describes_the_head_without_its_sidecar(wordnet_heads, root):
    _, st = wordnet_heads
    sidecar = st.with_suffix(".json")
    written = json.loads(sidecar.read_text(encoding="utf-8"))
    metadata = metadata_of(st)
    assert metadata["format"] == "promptgen.head/1"
    assert json.loads(metadata["classes"]) == list(CIFAR10.names)
    assert metadata["classes_hash"] == CIFAR10.hash and metadata["dataset"] == "cifar10"
    assert metadata["builder"] == "cupl"
    manifest = json.loads((root / "prompts" / "cifar10" / "wordnet" / "v1.manifest.json").read_text())
    (source,) = json.loads(metadata["sources"])
    assert source["set"] == "cifar10/wordnet@v1" and source["version"] == 1
    assert source["records_sha256"] == manifest["records_sha256"]
    assert json.loads(metadata["model"]) == written["model"] and written["model"]["arch"] == "promptgen-tiny"
    assert metadata["sidecar_sha256"] == "sha256:" + hashlib.sha256(sidecar.read_bytes()).hexdigest()

    with_sidecar = load_head(st)
    assert with_sidecar.info["prompt_counts"] == written["prompt_counts"]  # only the sidecar has these

    sidecar.unlink()
    alone = load_head(st, CIFAR10, 64)
    assert alone.class_names == list(CIFAR10.names)
    assert alone.info["builder"] == "cupl" and alone.info["classes"]["hash"] == CIFAR10.hash
    assert alone.info["sources"] == written["sources"] and alone.info["model"] == written["model"]
    assert alone.info["sidecar_sha256"] == metadata["sidecar_sha256"] and "prompt_counts" not in alone.info


def test_a_sidecar_that_is_not_the_files_own_is_named_and_the_metadata_used(tmp_path, caplog):
    head = Head(torch.randn(64, 10), {"format": "promptgen.head/1", "builder": "cupl",
                                      "classes": {"dataset": "cifar10", "names": list(CIFAR10.names),
                                                  "hash": CIFAR10.hash}})
    path = tmp_path / "h.safetensors"
    sidecar = save_head(head, path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert load_head(path).info["builder"] == "cupl"
    assert not caplog.records  # its own sidecar: no warning

    edited = json.loads(sidecar.read_text(encoding="utf-8"))
    edited["builder"] = "dclip"
    sidecar.write_text(json.dumps(edited), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loaded = load_head(path, CIFAR10)
    assert loaded.info["builder"] == "cupl"  # the file's metadata, not the edited sidecar
    (record,) = caplog.records
    assert "h.json is not the sidecar h.safetensors was written with" in record.getMessage()


def test_a_safetensors_file_without_our_metadata_loads_bare_with_a_warning(tmp_path, caplog):
    weights = torch.randn(64, 10)
    path = tmp_path / "other.safetensors"
    save_file({"classifier": weights}, str(path), metadata={"format": "pt"})  # as other tools write them
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        head = load_head(path, CIFAR10, 64)
    assert torch.equal(head.weights, weights)
    assert head.info == {"name": "other", "file": str(path)}
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "no promptgen metadata" in record.getMessage() and "no class names or provenance" in record.getMessage()

    save_file({"w": weights.T.contiguous()}, str(path))
    with pytest.raises(PromptgenError, match="transposed"):  # the shape checks of .pt apply
        load_head(path, CIFAR10)


def test_several_tensors_need_one_named_weights(tmp_path):
    path = tmp_path / "many.safetensors"
    save_file({"alpha": torch.randn(64, 10), "beta": torch.randn(64, 10)}, str(path))
    with pytest.raises(PromptgenError, match="2 tensors \\('alpha', 'beta'\\) and none is named 'weights'"):
        load_head(path)
    weights = torch.randn(64, 10)
    save_file({"bias": torch.randn(10), "weights": weights}, str(path))
    assert torch.equal(load_head(path).weights, weights)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "no tensor"])
def test_a_damaged_or_foreign_safetensors_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "h.safetensors"
    good = safetensors_bytes({"weights": torch.randn(64, 10)})
    path.write_bytes({"truncated": good[:-17], "text": b"a photo of a {c}.\n" * 4, "empty": b"",
                      "no tensor": safetensors_bytes({})}[damage])
    with pytest.raises(PromptgenError) as error:
        load_head(path)
    expected = "holds no tensor" if damage == "no tensor" else "cannot read head .* as safetensors"
    assert error.match(expected)
    assert error.value.hint


def test_a_one_dimensional_tensor_is_refused_with_its_shape(tmp_path):
    path = tmp_path / "h.safetensors"
    save_file({"weights": torch.randn(64)}, str(path))
    with pytest.raises(PromptgenError, match=r"holds a 1-D tensor \(64,\), not a 2-D tensor"):
        load_head(path)


def test_a_safetensors_head_of_another_class_list_is_refused(tmp_path):
    names = ["red fox", "violin", "teapot"]
    head = Head(torch.randn(64, 3), {"format": "promptgen.head/1", "builder": "template",
                                     "classes": {"dataset": "toy", "names": names,
                                                 "hash": ClassList("toy", tuple(names)).hash}})
    path = tmp_path / "toy.safetensors"
    save_head(head, path)
    path.with_suffix(".json").unlink()  # the metadata alone carries the class list
    with pytest.raises(PromptgenError) as error:
        load_head(path, classes=CIFAR10)
    assert "another class list" in error.value.message and "'red fox'" in error.value.message
    with pytest.raises(PromptgenError, match="another order"):
        load_head(path, classes=ClassList("toy2", tuple(reversed(names))))
    with pytest.raises(PromptgenError, match="dimension 64, the features 32"):
        load_head(path, classes=ClassList("toy", tuple(names)), embed_dim=32)


def test_metadata_that_claims_our_format_but_is_broken_is_an_error(tmp_path):
    path = tmp_path / "h.safetensors"
    save_file({"weights": torch.randn(64, 3)}, str(path), metadata={"format": "promptgen.head/1", "classes": "[oops"})
    with pytest.raises(PromptgenError, match="metadata 'classes' is not JSON"):
        load_head(path)
    save_file({"weights": torch.randn(64, 3)}, str(path), metadata={"format": "promptgen.head/1",
                                                                   "classes": '["a", "b"]'})
    with pytest.raises(PromptgenError, match="names 2 classes, its tensor has 3 columns"):
        load_head(path)


class _Payload:
    """Unpickling this runs `open(marker, "w")`: what a malicious head file would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pt_file_with_a_pickled_object_is_refused_and_never_run(tmp_path, root):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Payload(str(marker))}, path)
    with pytest.raises(PromptgenError) as error:
        load_head(path)
    assert "holds pickled Python objects" in error.value.message and "safetensors" in error.value.hint
    assert not marker.exists()

    result = run_cli("eval", "cifar10", "--features", tmp_path / "none.npz", "--head", path, root=root)
    assert result.exit_code == 2 and "holds pickled Python objects" in result.output
    assert not marker.exists()

    path.write_bytes(b"\x80\x02garbage")  # a damaged pickle: not called an object it is not
    with pytest.raises(PromptgenError, match="safe loader refuses it"):
        load_head(path)


def test_a_saved_safetensors_head_is_readable_by_others_and_shared(tmp_path):
    path = tmp_path / "h.safetensors"
    save_head(Head(torch.randn(64, 10), {}), path)  # no class list: a bare file, as other tools expect
    assert metadata_of(path) == {}
    assert os.stat(path).st_mode & 0o777 == os.stat(path.with_suffix(".json")).st_mode & 0o777
    assert not list(tmp_path.glob(".*.tmp"))


def test_head_format_must_agree_with_the_output_name(root, tmp_path):
    result = run_cli("head", "cifar10", *TINY_ARGS, "--format", "safetensors", "-o", tmp_path / "h.pt", root=root)
    assert result.exit_code == 2
    assert "--format safetensors writes a .safetensors file" in result.output and "h.safetensors" in result.output
    assert not (tmp_path / "h.pt").exists()


def test_a_pipeline_head_step_writes_safetensors_and_eval_reads_it(root, tmp_path):
    features = tmp_path / "f.npz"
    np.savez(features, features=np.random.default_rng(0).normal(size=(30, 64)).astype("float32"),
             labels=np.arange(30) % 10)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
name = "p"
datasets = ["cifar10"]
[defaults]
clip-model = "promptgen-tiny"
pretrained = "random"
[[steps]]
name = "h"
command = "head"
format = "safetensors"
[[steps]]
name = "ev"
command = "eval"
features = "{features}"
head = ["h"]
""", encoding="utf-8")
    result = run_cli("run", pipeline, "--json", root=root)
    assert result.exit_code == 0, result.output
    units = {u["unit"]: u for u in json.loads(result.stdout)["units"]}
    written = root / "pipelines" / "p" / "cifar10" / "h.safetensors"
    assert units["cifar10/h"]["output"]["path"] == str(written)
    assert metadata_of(written)["builder"] == "template"
    assert not (written.parent / "h.pt").exists()
    report = json.loads(Path(units["cifar10/ev"]["output"]["path"]).read_text())
    assert report["heads"][0]["info"]["file"] == str(written)
    again = run_cli("run", pipeline, "--json", root=root)
    assert {u["action"] for u in json.loads(again.stdout)["units"]} == {"skip"}
