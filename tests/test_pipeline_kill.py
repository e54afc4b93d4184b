"""kill -9 at random points of a pipeline run (several seeds): a rerun completes, the final outputs
are byte-identical to an uninterrupted run's, and no journalled answer is paid twice (only those in
flight at the moment of the kill can be)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from promptgen.testing.fake_server import FakeLLMServer
from tests.conftest import run_cli

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]  # each test kills `promptgen run` processes

CLASSES = [f"widget model {i:03d}" for i in range(40)]


def _pipeline(tmp_path: Path, url: str) -> Path:
    classes = tmp_path / "widgets.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    features = tmp_path / "features.npz"
    np.savez(features, features=rng.normal(size=(80, 64)).astype("float32"), labels=np.arange(80) % 40)
    path = tmp_path / "kill.toml"
    path.write_text(f"""
datasets = ["widgets"]
[defaults]
model = "openai/test"
api-base = "{url}"
concurrency = 4
no-progress = true
clip-model = "promptgen-tiny"
pretrained = "random"
[[steps]]
name = "cupl"
command = "describe"
style = "cupl-base"
classes = "{classes}"
[[steps]]
name = "head"
command = "head"
builder = "cupl"
set = "cupl-base"
[[steps]]
name = "eval"
command = "eval"
features = "{features}"
head = ["head"]
build = ["template:photo", "cupl:cupl-base"]
""")
    return path


def _start(pipeline: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "promptgen", "run", str(pipeline), "--root", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("seconds", "created", "finished")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _outputs(root: Path) -> dict:
    """What the pipeline's state points at, as bytes (eval results without their timings)."""
    state = json.loads((root / "pipelines" / "kill.json").read_text())
    found = {}
    for unit, entry in state["units"].items():
        assert entry["status"] == "done", (unit, entry)
        output = entry["output"]
        if "set" in output:
            dataset, rest = output["set"].split("/", 1)
            name, version = rest.split("@")
            found[unit] = (output["set"], (root / "prompts" / dataset / name / f"{version}.jsonl").read_bytes())
        elif output["path"].endswith(".json"):  # the same but for timings and the root's own path
            text = Path(output["path"]).read_text().replace(str(root), "ROOT")
            found[unit] = _without_timings(json.loads(text))
        else:
            found[unit] = Path(output["path"]).read_bytes()
    return found


def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_outputs(tmp_path):
    with FakeLLMServer(latency=0.05) as server:
        pipeline = _pipeline(tmp_path, server.url)
        started = time.monotonic()
        assert _start(pipeline, tmp_path / "baseline").wait(timeout=300) == 0
        duration = time.monotonic() - started
        expected = _outputs(tmp_path / "baseline")
        assert set(expected) == {"widgets/cupl", "widgets/head", "widgets/eval"}
        assert expected["widgets/cupl"][0] == "widgets/cupl-base@v1"

        killed_during = []
        # kill points chosen by progress, not by the clock (a loaded machine would bunch them up):
        # at start-up, after a seeded number of answers, and once the LLM stage is done (head, eval)
        points = ["start-up", "answers", "answers", "after describe"]
        for seed, point in enumerate(points, 1):
            root = tmp_path / f"seed{seed}"
            server.reset_counts()  # each seed has its own root and cache: count its answers alone
            rng = random.Random(seed)
            process = _start(pipeline, root)
            state = root / "pipelines" / "kill.json"
            deadline = time.monotonic() + 3 * duration + 30
            if point == "start-up":
                time.sleep(rng.uniform(0.2, 1.0))
            elif point == "answers":
                target = rng.randint(5, len(CLASSES) * 3 - 5)
                while server.request_count < target and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
            else:
                while process.poll() is None and time.monotonic() < deadline and not (
                        state.exists() and '"widgets/head"' in state.read_text()):
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.8))
            finished_first = process.poll() is not None
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            killed_during.append("after the end" if finished_first else f"after {server.request_count} requests")
            result = run_cli("run", pipeline, root=root)
            assert result.exit_code == 0, result.output
            assert _outputs(root) == expected, f"seed {seed} (killed {killed_during[-1]})"
            # only answers in flight at the kill (sent by the server, not yet journalled by the client:
            # at most `concurrency` of them) can be asked again; every journalled answer is reused
            delivered = server.state.delivered
            assert max(delivered.values(), default=0) <= 2
            assert sum(n > 1 for n in delivered.values()) <= 4, f"seed {seed}: answers were paid twice"
            assert len(delivered) == len(CLASSES) * 3  # every question answered once, by one run or the other
            # a further run has nothing left to do
            again = run_cli("run", pipeline, "--json", root=root)
            assert {u["action"] for u in json.loads(again.stdout)["units"]} == {"skip"}
    # the kills landed at different points of the run (not all before or after the LLM stage)
    assert len(set(killed_during)) >= 3 and "after the end" not in killed_during, killed_during


def test_a_pipeline_in_batch_mode_killed_while_polling_picks_its_batch_up(tmp_path):
    """`batch = true` in [defaults] reaches the LLM stage; the batch id is in the run state, and the
    rerun polls that batch instead of submitting (and paying for) a second one."""
    with FakeLLMServer() as server:
        pipeline = _pipeline(tmp_path, server.url)
        text = pipeline.read_text().replace("concurrency = 4\n", "concurrency = 4\nbatch = true\nbatch-poll = 0.05\n")
        pipeline.write_text(text)
        server.configure(batch_polls=10 ** 9)  # in progress until the kill
        root = tmp_path / "batch"
        process = _start(pipeline, root)
        deadline = time.time() + 120
        states = root / "cache" / "llm" / "batches"
        while time.time() < deadline and process.poll() is None and not list(states.glob("batch_*.json")):
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert server.batches_created == 1 and server.request_count == 0
        unit = json.loads((root / "pipelines" / "kill.json").read_text())["units"]["widgets/cupl"]
        assert unit["status"] == "running"
        server.configure(batch_polls=1)
        result = run_cli("run", pipeline, root=root)
        assert result.exit_code == 0, result.output
        assert server.batches_created == 1, "the rerun submitted a second batch"
        assert server.request_count == 0 and max(server.state.delivered.values()) == 1
        unit = json.loads((root / "pipelines" / "kill.json").read_text())["units"]["widgets/cupl"]
        (state_file,) = states.glob("batch_*.json")
        assert unit["status"] == "done" and unit["batches"] == [json.loads(state_file.read_text())["batch_id"]]
        assert unit["output"]["set"] == "widgets/cupl-base@v1"
