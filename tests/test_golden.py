"""The golden run (tests/golden_run.py): today's code must write exactly the committed outputs, and
every committed file must load with today's readers, so a refactor that changes what is written,
or stops reading what an earlier version wrote, fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.golden_run import NOT_COMPARED, OUT, run_golden

GOLDEN_FILES = sorted(p.relative_to(OUT).as_posix() for p in OUT.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def golden_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed golden outputs as a promptgen root: head tensors rebuilt from their values."""
    import torch

    root = tmp_path_factory.mktemp("golden") / "root"
    for relative in GOLDEN_FILES:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".pt":
            shown = json.loads((OUT / relative).read_text())
            values = torch.tensor([float.fromhex(v) for v in shown["values"]], dtype=getattr(torch, "float32"))
            torch.save(values.reshape(shown["shape"]), target)
        else:
            shutil.copyfile(OUT / relative, target)
    return root


@pytest.mark.slow
def test_the_golden_run_writes_exactly_the_committed_outputs(tmp_path):
    written = run_golden(tmp_path / "root")
    assert sorted(written) == GOLDEN_FILES, "the run wrote other files than the committed ones"
    changed = [relative for relative, text in written.items()
               if relative not in NOT_COMPARED and text != (OUT / relative).read_text(encoding="utf-8")]
    assert not changed, f"outputs differ from tests/golden/out/: {changed}"


def test_the_golden_run_covers_every_stage_and_output_kind():
    sets = {p.split("/")[2] for p in GOLDEN_FILES if p.startswith("prompts/")}
    assert sets == {"cupl-base", "dclip", "wordnet", "synonyms-llm", "synonyms", "differential", "cupl"}
    stages = {json.loads((OUT / p).read_text())["stage"] for p in GOLDEN_FILES if p.endswith(".manifest.json")}
    assert stages == {"describe", "synonyms", "differentiate", "import"}
    heads = [p for p in GOLDEN_FILES if p.endswith(".pt")]
    assert len(heads) == 6 and all(p[:-3] + ".json" in GOLDEN_FILES for p in heads)


def test_every_golden_prompt_set_loads(golden_root):
    from promptgen.store import SetRef, Store

    store = Store(golden_root)
    manifests = [p for p in GOLDEN_FILES if p.endswith(".manifest.json")]
    for relative in manifests:
        _, dataset, set_name, name = relative.split("/")
        info = store.resolve(SetRef.parse(f"{dataset}/{set_name}@{name.split('.')[0]}"))
        records = store.read_records(info)
        assert info.status == "complete"
        assert len(records) == info.manifest["counts"]["records"] > 0
        assert {r["class_name"] for r in records} <= set(store.classes(dataset).names)


def test_every_golden_head_loads_with_its_sidecar(golden_root):
    from promptgen.clip.head_files import load_head
    from promptgen.store import Store

    classes = Store(golden_root).classes("cifar10")
    for relative in (p for p in GOLDEN_FILES if p.endswith(".pt")):
        head = load_head(golden_root / relative, classes)
        assert tuple(head.weights.shape) == (64, 10)
        assert head.info["builder"] == json.loads((OUT / relative[:-3]).with_suffix(".json").read_text())["builder"]


def test_golden_results_rename_maps_pair_plan_state_and_run_log_load(golden_root):
    from promptgen.audit.run import load_results
    from promptgen.pairs import load_pair_plan
    from promptgen.pipeline import PipelineState
    from promptgen.rename import load_rename_file
    from promptgen.runlog import read_runs
    from promptgen.store import Store

    classes = Store(golden_root).classes("cifar10")
    unit_dir = golden_root / "pipelines" / "golden" / "cifar10"
    _, results = load_results(unit_dir / "eval.json")
    assert len(results["heads"]) == 12 and results["dataset"] == "cifar10"
    assert len(load_rename_file(unit_dir / "rename-llm.json", classes)) == 10
    plan = load_pair_plan(golden_root / "prompts" / "cifar10" / "differential" / "v1.pairs.json")
    assert plan.num_classes == 10 and plan.pairs
    state = PipelineState(golden_root / "pipelines" / "golden.json")
    assert len(state.data["units"]) == 17 and {u["status"] for u in state.data["units"].values()} == {"done"}
    runs = read_runs(golden_root)
    assert [r["command"] for r in runs][:1] == ["run"] and len(runs) >= 17
