"""The run log: every command's start and end, what it wrote and what it cost; `promptgen runs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptgen.testing.fake_server import Fault
from promptgen.runlog import log_path, read_runs, summarise


def runs_json(cli) -> dict:
    result = cli("runs", "--json", "--limit", "0")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_runs_log_outputs_requests_and_cost_and_add_up_per_command_and_dataset(cli, fake_llm, root, monkeypatch):
    secret = "sk-test-secret-never-logged-123456"
    monkeypatch.setenv("FAKE_KEY_FOR_TESTS", secret)
    llm = ("--api-base", fake_llm.url, "--no-progress", "--backoff", "0.01")
    assert cli("describe", "cifar10", "--source", "wordnet").exit_code == 0
    assert cli("describe", "cifar10", "--style", "dclip", "--model", "openai/gpt-4o-mini",
               "--api-key-env", "FAKE_KEY_FOR_TESTS", *llm).exit_code == 0
    sent_priced = fake_llm.request_count
    assert cli("describe", "cifar100", "--style", "dclip", "--model", "openai/test", *llm).exit_code == 0
    sent_unpriced = fake_llm.request_count - sent_priced
    fake_llm.reset_counts()
    assert cli("describe", "cifar10", "--style", "dclip", "--model", "openai/gpt-4o-mini", "--set", "again",
               "--api-key-env", "FAKE_KEY_FOR_TESTS", *llm).exit_code == 0
    assert fake_llm.request_count == 0  # all from the cache: this run cost nothing
    bad = cli("describe", "cifar10", "--style", "no-such-template", "--model", "openai/test")
    assert bad.exit_code == 2

    log = runs_json(cli)
    runs = log["runs"]
    assert [r["command"] for r in runs] == ["describe"] * 5
    assert [r["status"] for r in runs] == ["ok", "ok", "ok", "ok", "error"]
    assert [[o["ref"] for o in r["outputs"]] for r in runs] == [
        ["cifar10/wordnet@v1"], ["cifar10/dclip@v1"], ["cifar100/dclip@v1"], ["cifar10/again@v1"], []]
    assert [r["requests_sent"] for r in runs] == [0, sent_priced, sent_unpriced, 0, 0]
    manifest = json.loads((root / "prompts" / "cifar10" / "dclip" / "v1.manifest.json").read_text())
    assert runs[1]["cost_usd"] == pytest.approx(manifest["cost_usd_this_run"]) and runs[1]["cost_usd"] > 0
    assert runs[2]["cost_usd"] is None  # no price for openai/test: unknown, not zero
    assert runs[3]["cost_usd"] == 0.0
    assert "no-such-template" in runs[4]["error"] and runs[4]["exit_code"] == 2
    totals = log["totals"]
    assert totals["by_command"]["describe"] == {"runs": 5, "requests_sent": sent_priced + sent_unpriced,
                                                "cost_usd": pytest.approx(runs[1]["cost_usd"]), "unknown_cost": 1}
    assert totals["by_dataset"]["cifar10"]["runs"] == 4 and totals["by_dataset"]["cifar100"]["unknown_cost"] == 1
    assert totals["by_dataset"]["cifar10"]["requests_sent"] == sent_priced
    assert secret not in log_path(root).read_text()
    # filters and the table
    assert [r["run"] for r in json.loads(cli("runs", "--json", "--dataset", "cifar100").stdout)["runs"]] == [runs[2]["run"]]
    table = cli("runs").stdout
    assert "cifar100/dclip@v1" in table and "unpriced" in table and "error: unknown template" in table
    assert "totals per dataset: cifar10 4 runs" in table


def test_a_partial_run_is_logged_as_partial_with_its_failures(cli, fake_llm):
    fake_llm.configure(faults=[Fault("500", match="a deer", times=-1)])
    result = cli("describe", "cifar10", "--style", "dclip", "--model", "openai/test", "--api-base", fake_llm.url,
                 "--no-progress", "--backoff", "0.01", "--max-attempts", "2")
    assert result.exit_code == 3
    (run,) = runs_json(cli)["runs"]
    assert run["status"] == "partial" and run["exit_code"] == 3
    assert run["outputs"][0]["status"] == "partial" and run["outputs"][0]["failures"] == 1


@pytest.mark.subprocess
def test_a_run_without_an_end_is_running_or_killed(root):
    path = log_path(root)
    path.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lines = [{"event": "start", "run": "a", "time": "t", "command": "describe", "pid": int(dead.stdout)},
             {"event": "start", "run": "b", "time": "t", "command": "differentiate", "pid": os.getpid()},
             {"event": "start", "run": "c", "time": "t", "command": "import", "pid": 1},
             {"event": "end", "run": "c", "time": "t", "command": "import", "status": "ok", "outputs": [],
              "requests_sent": 0, "cost_usd": 0.0}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "end", "run": "b", "ti')  # torn
    runs = {r["run"]: r for r in read_runs(root)}
    assert runs["a"]["status"] == "killed" and runs["b"]["status"] == "running" and runs["c"]["status"] == "ok"
    assert summarise(list(runs.values()))["total"]["runs"] == 3


def test_a_run_log_that_cannot_be_written_does_not_stop_the_command(cli, root):
    log_path(root).parent.mkdir(parents=True)
    log_path(root).mkdir()  # a folder where the log file should be
    result = cli("describe", "cifar10", "--source", "wordnet")
    assert result.exit_code == 0, result.output
    assert (root / "prompts" / "cifar10" / "wordnet" / "v1.jsonl").exists()


def test_credentials_in_arguments_never_reach_the_log_or_the_lock(cli, root, fake_llm):
    base = fake_llm.url.replace("http://", "http://alice:hunter2pass@") + "?api-key=abcdef123456"
    result = cli("describe", "cifar10", "--style", "dclip", "--model", "openai/test", "--api-base", base, "--dry-run")
    assert result.exit_code == 0, result.output
    (run,) = runs_json(cli)["runs"]
    assert run["args"].startswith("promptgen describe cifar10 --style dclip --model openai/test --api-base http://")
    text = log_path(root).read_text()
    assert "hunter2pass" not in text and "abcdef123456" not in text and "alice" not in text
    assert "test_runlog.py" not in run["args"] and "-q" not in run["args"].split()  # not the host program's argv


def test_a_run_that_fails_after_paying_logs_what_it_spent(cli, fake_llm, root, monkeypatch):
    import promptgen.stages.describe as describe_stage

    def broken(self, request):
        raise RuntimeError("a bug after the answers arrived")

    monkeypatch.setattr(describe_stage._Collector, "add", broken)
    with pytest.raises(RuntimeError):
        cli("describe", "cifar10", "--style", "dclip", "--model", "openai/test", "--api-base", fake_llm.url,
            "--no-progress")
    (run,) = runs_json(cli)["runs"]
    assert run["status"] == "failed" and run["outputs"] == []
    assert run["requests_sent"] == fake_llm.request_count == 10 and run["dataset"] == "cifar10"


def test_a_cache_that_cannot_be_written_loses_no_paid_answer(cli, fake_llm, root, monkeypatch):
    import errno

    from promptgen.llm.cache import LLMCache

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LLMCache, "put", full)
    result = cli("describe", "cifar10", "--style", "dclip", "--model", "openai/test", "--api-base", fake_llm.url,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "could not cache an answer" in result.stderr
    journal = (root / "prompts" / "cifar10" / "dclip" / "v1.requests.jsonl").read_text().splitlines()
    assert len(journal) == 10 == fake_llm.request_count
