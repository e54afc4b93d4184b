"""Batch API mode (--batch) end to end: the real openai SDK against the fake server's files and
batches endpoints. A batch run stores what an online run stores, in the same cache; failed,
missing and unusable lines are asked again exactly once; an interrupted run picks its batch up
again instead of paying twice; prices show the batch discount; keys are written nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from promptgen.llm.cache import cache_key
from promptgen.testing.fake_server import FakeLLMServer, Fault
from tests.conftest import TINY_ARGS, run_cli

FAST = ("--batch-poll", "0.02", "--no-progress", "--backoff", "0.01")


def describe(cli, server, *extra: str, model: str = "openai/test"):
    return cli("describe", "cifar10", "--model", model, "--api-base", server.url, *FAST, *extra)


def set_dir(root: Path, set_name: str = "cupl") -> Path:
    return root / "prompts" / "cifar10" / set_name


def records_bytes(root: Path, version: int = 1, set_name: str = "cupl") -> bytes:
    return (set_dir(root, set_name) / f"v{version}.jsonl").read_bytes()


def manifest(root: Path, version: int = 1, set_name: str = "cupl") -> dict:
    return json.loads((set_dir(root, set_name) / f"v{version}.manifest.json").read_text())


def journal(root: Path, version: int = 1, set_name: str = "cupl") -> list[dict]:
    path = set_dir(root, set_name) / f"v{version}.requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def online_bodies(server: FakeLLMServer) -> Counter:
    return Counter(canonical(body) for body in server.state.requests)


def batch_bodies(server: FakeLLMServer, custom_ids) -> Counter:
    return Counter(canonical(server.state.batch_bodies[cid]) for cid in custom_ids)


def assert_paid_once(server: FakeLLMServer, answers: int = 50) -> None:
    delivered = server.state.delivered
    assert max(delivered.values()) == 1, "an answer was delivered (paid) twice"
    assert sum(delivered.values()) == answers


@pytest.fixture
def reference(fake_llm, tmp_path) -> tuple[bytes, list[str]]:
    """An online run of `describe cifar10 --style cupl` in another root, against the same server (its
    URL is part of every cache key, so of the records): its records, and the bodies it sent."""
    root = tmp_path / "online"
    result = run_cli("describe", "cifar10", "--style", "cupl", "--model", "openai/test", "--api-base", fake_llm.url,
                     "--no-progress", root=root)
    assert result.exit_code == 0, result.output
    bodies = sorted(canonical(body) for body in fake_llm.state.requests)
    fake_llm.reset_counts()
    return records_bytes(root), bodies


def test_a_batch_run_stores_what_an_online_run_does_in_the_same_cache(cli, fake_llm, root, reference, tmp_path):
    result = describe(cli, fake_llm, "--style", "cupl", "--batch", "--price", "1,2")
    assert result.exit_code == 0, result.output
    assert records_bytes(root) == reference[0], "batch records differ from the online run's"
    assert fake_llm.batches_created == 1 and fake_llm.batch_lines == 50
    assert fake_llm.request_count == 0 and not any("chat" in path for path in fake_llm.state.paths)
    # each line carries exactly the body the online path sends
    (custom_ids,) = fake_llm.state.batch_inputs
    assert sorted(batch_bodies(fake_llm, custom_ids).elements()) == reference[1]
    # custom_id = the cache key: the hash of the payload the cache stores, and the key the journal has
    answered = [entry for entry in journal(root) if entry.get("response") is not None]
    assert sorted(entry["key"] for entry in answered) == sorted(custom_ids)
    for cid in custom_ids:
        entry = json.loads((root / "cache" / "llm" / cid[:2] / f"{cid}.json").read_text())
        assert cache_key(entry["request"]) == cid and entry["response"]["choices"]
    assert_paid_once(fake_llm)
    # the batch id is in the manifest, the journal and a state file that says it was joined
    meta = manifest(root)
    (batch_id,) = meta["batches"]
    events = [(e["action"], e["batch_id"]) for e in journal(root) if e.get("event") == "batch"]
    assert events == [("submitted", batch_id), ("joined", batch_id)]
    state = json.loads((root / "cache" / "llm" / "batches" / f"{batch_id}.json").read_text())
    assert state["joined"] and state["status"] == "completed" and sorted(state["custom_ids"]) == sorted(custom_ids)
    assert state["api_base"] == fake_llm.url and state["model"] == "openai/test"
    assert meta["counts"]["requests_sent_this_run"] == 50 and meta["model"]["batch"]["retry"] == "online"
    # answers are priced at half the online price, as the run log counts them
    batch_cost = (meta["tokens"]["prompt"] * 0.5 + meta["tokens"]["completion"] * 1.0) / 1e6
    assert meta["cost_usd"] == pytest.approx(batch_cost) and meta["cost_usd_this_run"] == pytest.approx(batch_cost)
    runs = json.loads(cli("runs", "--json").stdout)
    assert runs["runs"][-1]["cost_usd"] == pytest.approx(batch_cost, abs=1e-8)

    # an online rerun is answered by the batch's cache entries, and a batch rerun by an online run's
    fake_llm.reset_counts()
    again = describe(cli, fake_llm, "--style", "cupl")
    assert again.exit_code == 0 and manifest(root, 2)["counts"]["cache_hits_this_run"] == 50
    assert "batches" not in manifest(root, 2), "no batch key for a version made online"
    other = tmp_path / "online-first"
    assert run_cli("describe", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, "--no-progress",
                   root=other).exit_code == 0
    fake_llm.reset_counts()
    assert run_cli("describe", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, *FAST, "--batch",
                   root=other).exit_code == 0
    assert fake_llm.state.paths == Counter(), "a cached job must send nothing, online or by batch"
    assert manifest(other, 2)["batches"] == []


def test_failed_lines_are_asked_online_once_each(cli, fake_llm, root, reference):
    fake_llm.configure(batch_failure_rate=0.3, batch_failure_kinds=["500", "error"], batch_failure_seed=3)
    result = describe(cli, fake_llm, "--batch", "--batch-retry", "online")
    assert result.exit_code == 0, result.output
    (failed,) = fake_llm.state.batch_failed
    assert 5 <= len(failed) <= 25
    (batch_id,) = manifest(root)["batches"]
    errors = [json.loads(line) for line in
              (root / "cache" / "llm" / "batches" / f"{batch_id}.errors.jsonl").read_text().splitlines()]
    assert {e["response"] is None for e in errors} == {True, False}, "both kinds of failed line were exercised"
    assert fake_llm.batches_created == 1
    assert online_bodies(fake_llm) == batch_bodies(fake_llm, failed), "exactly the failed lines are asked online"
    assert records_bytes(root) == reference[0]
    assert_paid_once(fake_llm)
    assert manifest(root)["counts"]["requests_sent_this_run"] == 50


def test_failed_lines_go_to_a_follow_up_batch_with_batch_retry(cli, fake_llm, root, reference):
    fake_llm.configure(batch_failure_rate=0.3, batch_failure_seed=3)
    result = describe(cli, fake_llm, "--batch", "--batch-retry", "batch")
    assert result.exit_code == 0, result.output
    inputs, failed = fake_llm.state.batch_inputs, fake_llm.state.batch_failed
    assert len(inputs) >= 2 and failed[0]
    for number in range(len(inputs) - 1):
        assert sorted(inputs[number + 1]) == sorted(failed[number]), "a follow-up batch holds exactly the failed lines"
    # after three batches a line is asked online; before that, never
    asked_online = batch_bodies(fake_llm, failed[-1]) if len(inputs) == 3 else Counter()
    assert online_bodies(fake_llm) == asked_online
    assert records_bytes(root) == reference[0]
    assert_paid_once(fake_llm)
    assert len(set(manifest(root)["batches"])) == len(inputs)


def test_unusable_answers_are_reasked_in_the_next_round_and_paid_once(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("empty", match="a cat", times=5)])  # the five cupl questions about cat
    result = describe(cli, fake_llm, "--batch")
    assert result.exit_code == 0, result.output
    first, second = fake_llm.state.batch_inputs
    assert len(first) == 50 and len(second) == 5 and not set(first) & set(second)
    reasks = [e for e in journal(root) if e.get("response") is not None and e["attempt"] == 1]
    assert sorted(e["key"] for e in reasks) == sorted(second) and {e["class_index"] for e in reasks} == {3}
    assert all("a cat" in fake_llm.state.batch_bodies[cid]["messages"][-1]["content"] for cid in second)
    assert fake_llm.request_count == 0
    meta = manifest(root)
    assert meta["counts"]["reasked_after_unusable_answer"] == 5 and meta["status"] == "complete"
    assert meta["counts"]["classes_without_texts"] == 0
    keys = [e["key"] for e in journal(root) if e.get("response") is not None]
    assert len(keys) == len(set(keys)) == 55
    assert_paid_once(fake_llm, answers=50)  # 45 good first answers and 5 good re-asks; the empty ones were not


@pytest.mark.parametrize("outcome, unanswered", [("expired", 25), ("failed", 50)])
def test_lines_an_ended_batch_never_answered_are_asked_online(cli, fake_llm, root, reference, outcome, unanswered):
    fake_llm.configure(batch_outcome=outcome)
    result = describe(cli, fake_llm, "--batch")
    assert result.exit_code == 0, result.output
    (sent,) = fake_llm.state.batch_inputs
    (batch_id,) = manifest(root)["batches"]
    output = root / "cache" / "llm" / "batches" / f"{batch_id}.output.jsonl"
    answered_by_batch = {json.loads(line)["custom_id"] for line in output.read_text().splitlines()} \
        if output.exists() else set()
    missing = [cid for cid in sent if cid not in answered_by_batch]
    assert len(missing) == unanswered
    assert online_bodies(fake_llm) == batch_bodies(fake_llm, missing)
    assert records_bytes(root) == reference[0] and manifest(root)["status"] == "complete"
    assert_paid_once(fake_llm)
    state = json.loads((root / "cache" / "llm" / "batches" / f"{batch_id}.json").read_text())
    assert state["status"] == outcome and state["joined"]


def test_more_lines_than_a_batch_takes_are_split_into_several(cli, fake_llm, root, reference, monkeypatch):
    monkeypatch.setattr("promptgen.llm.batch.MAX_BATCH_LINES", 20)
    result = describe(cli, fake_llm, "--batch")
    assert result.exit_code == 0, result.output
    assert [len(ids) for ids in fake_llm.state.batch_inputs] == [20, 20, 10]
    assert len(manifest(root)["batches"]) == 3 and fake_llm.request_count == 0
    assert records_bytes(root) == reference[0]
    assert_paid_once(fake_llm)


@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_minus_9_while_polling_then_resume_picks_the_batch_up_without_paying_twice(fake_llm, tmp_path, reference):
    root, server = tmp_path / "root", fake_llm
    server.configure(batch_polls=10 ** 9)  # the batch stays in progress until the kill
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "promptgen", "describe", "cifar10", "--model", "openai/test",
                                "--api-base", server.url, *FAST, "--batch", "--root", str(root)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_path = set_dir(root) / "v1.requests.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None and not (
            journal_path.exists() and '"submitted"' in journal_path.read_text()):
        time.sleep(0.05)
    while process.poll() is None and server.state.batches and \
            next(iter(server.state.batches.values()))["polls"] < 3 and time.time() < deadline:
        time.sleep(0.02)  # killed while polling, not while submitting
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert server.batches_created == 1 and sum(server.state.delivered.values()) == 0
    (state_path,) = (root / "cache" / "llm" / "batches").glob("batch_*.json")
    state = json.loads(state_path.read_text())
    assert state["status"] == "in_progress" and not state["joined"]
    assert manifest(root)["status"] == "running"

    # an online rerun would buy the batch's answers again: it is refused, naming the batch and the fix
    online = run_cli("describe", "cifar10", "--model", "openai/test", "--api-base", server.url, *FAST, "--resume",
                     root=root)
    assert online.exit_code == 2 and state["batch_id"] in online.stderr and "--batch" in online.stderr
    assert server.request_count == 0

    server.configure(batch_polls=1)  # the provider finishes the batch while nobody is watching
    result = run_cli("describe", "cifar10", "--model", "openai/test", "--api-base", server.url, *FAST, "--batch",
                     "--resume", root=root)
    assert result.exit_code == 0, result.output
    assert server.batches_created == 1, "the resumed run submitted a second batch"
    assert server.request_count == 0
    assert_paid_once(server)
    assert records_bytes(root) == reference[0]
    meta = manifest(root)
    assert meta["status"] == "complete" and meta["batches"] == [state["batch_id"]]
    events = [e["action"] for e in journal(root) if e.get("event") == "batch"]
    assert events == ["submitted", "picked up", "joined"]
    assert json.loads(state_path.read_text())["joined"]


def test_dry_run_shows_the_batch_price_and_its_discount(cli, fake_llm, root):
    as_json = json.loads(describe(cli, fake_llm, "--dry-run", "--json", model="openai/gpt-4o-mini").stdout)
    assert as_json["cost_usd"] > 0 and as_json["batch_cost_usd"] == pytest.approx(as_json["cost_usd"] / 2)
    assert as_json["batch_price_source"] == "litellm's batch prices" and as_json["batch"] is False
    text = describe(cli, fake_llm, "--dry-run", model="openai/gpt-4o-mini").output
    assert "with --batch:" in text and "(50% batch discount) [litellm's batch prices]" in text
    batch = describe(cli, fake_llm, "--dry-run", "--batch", model="openai/gpt-4o-mini").output
    assert batch.index("cost (--batch):") < batch.index("online it'd cost:"), "with --batch the batch price leads"
    priced = json.loads(describe(cli, fake_llm, "--dry-run", "--json", "--batch", "--price", "1,2").stdout)
    assert priced["batch_cost_usd"] == pytest.approx(priced["cost_usd"] / 2) and "--price" in priced["batch_price_source"]
    unknown = describe(cli, fake_llm, "--dry-run", "--batch").output
    assert "cost (--batch):    unknown" in unknown
    pairs = cli("differentiate", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, *TINY_ARGS,
                "--pairs-from", "all", "--max-pairs", "10", "--price", "1,2", "--dry-run", "--batch", "--json")
    pairs = json.loads(pairs.stdout)
    assert pairs["all_pairs_cost_usd"] == pytest.approx(pairs["batch_cost_usd"] / 10 * 45)
    assert fake_llm.state.paths == Counter() and not (root / "prompts" / "cifar10").exists()


def test_differentiate_by_batch_repairs_in_the_next_round_and_matches_online(cli, fake_llm, root, tmp_path):
    args = ("differentiate", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, *FAST, *TINY_ARGS,
            "--pairs-from", "all", "--max-pairs", "10")
    truncated = Fault("truncated", match="Object 1: airplane\nObject 2: automobile\n", times=1)
    fake_llm.configure(faults=[truncated])
    assert run_cli(*args, root=tmp_path / "online").exit_code == 0
    fake_llm.reset_counts()
    fake_llm.configure(faults=[Fault(**{**truncated.__dict__, "hits": 0})])
    result = cli(*args, "--batch")
    assert result.exit_code == 0, result.output
    assert [len(ids) for ids in fake_llm.state.batch_inputs] == [10, 1], "the repair request makes a second round"
    assert fake_llm.request_count == 0
    differential = root / "prompts" / "cifar10" / "differential"
    assert (differential / "v1.jsonl").read_bytes() == \
        (tmp_path / "online" / "prompts" / "cifar10" / "differential" / "v1.jsonl").read_bytes()
    meta = json.loads((differential / "v1.manifest.json").read_text())
    assert len(meta["batches"]) == 2 and meta["counts"]["repairs"] == 1


def test_a_provider_without_the_batch_api_is_refused_before_anything_is_sent(cli, fake_llm, root, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy-key-for-the-test")
    for extra in ((), ("--dry-run",)):
        result = describe(cli, fake_llm, "--batch", *extra, model="anthropic/claude-3-5-haiku-20241022")
        assert result.exit_code == 2, result.output
        assert "--batch needs an OpenAI-compatible provider" in result.stderr and "drop --batch" in result.stderr
    assert fake_llm.state.paths == Counter() and not (root / "prompts" / "cifar10").exists()
    # an OpenAI-compatible server with no /v1/files: a clear error, not a traceback
    no_batch_api = fake_llm.url.replace("/v1", "/other/v1")
    result = cli("describe", "cifar10", "--model", "openai/test", "--api-base", no_batch_api, *FAST, "--batch")
    assert result.exit_code == 2 and "may not offer the OpenAI batch API" in result.stderr, result.output
    assert "Traceback" not in result.output and fake_llm.request_count == 0


def test_the_api_key_is_written_nowhere(cli, fake_llm, root, monkeypatch):
    secret = "gw-credential-DONOTLEAK0123456789"
    monkeypatch.setenv("MY_GATEWAY", secret)
    fake_llm.configure(batch_failure_rate=0.2, batch_failure_kinds=["500", "error"],
                       faults=[Fault("echo_auth", match="a dog", times=-1)])
    result = cli("-v", "describe", "cifar10", "--model", "openai/test", "--api-base", fake_llm.url, *FAST, "--batch",
                 "--api-key-env", "MY_GATEWAY", "--max-attempts", "2")
    assert result.exit_code == 3, result.output  # the dog lines fail in the batch and online
    assert fake_llm.state.auth_tokens == {secret}, "the key must travel (as a header) and nothing else"
    assert fake_llm.batches_created == 1 and fake_llm.request_count > 0
    assert secret not in result.output
    written = [path for path in root.rglob("*") if path.is_file()]
    assert any(path.suffix == ".jsonl" and "batches" in path.parts for path in written)
    for path in written:
        assert secret not in path.read_text(errors="ignore"), path


def test_the_fake_server_speaks_openais_batch_api(fake_llm):
    import openai

    client = openai.OpenAI(base_url=fake_llm.url, api_key="test-key", max_retries=0)
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "test", "messages": [{"role": "user", "content": f"Describe thing {i}"}]}}
             for i in range(8)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("in.jsonl", data, "application/jsonl"), purpose="batch")
    assert client.files.retrieve(upload.id).bytes == len(data) and client.files.content(upload.id).content == data
    fake_llm.configure(batch_polls=2, batch_failure_rate=0.5, batch_failure_kinds=["500", "error"])
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating" and batch.request_counts.total == 8
    assert client.batches.retrieve(batch.id).status == "in_progress"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed + done.request_counts.failed == 8
    output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert len(output) == done.request_counts.completed and len(errors) == done.request_counts.failed > 0
    assert all(line["response"]["status_code"] == 200 and line["error"] is None and
               line["response"]["body"]["choices"][0]["message"]["content"] for line in output)
    assert all(line["response"] is None and line["error"]["message"] or line["response"]["status_code"] == 500
               for line in errors)
    assert {line["custom_id"] for line in output + errors} == {line["custom_id"] for line in lines}
    assert sum(fake_llm.state.delivered.values()) == len(output) and fake_llm.request_count == 0
    # cancelled: part of the lines answered, the rest absent
    fake_llm.configure(batch_failure_rate=0.0, batch_polls=10)
    second = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(second.id).status == "cancelling"
    cancelled = client.batches.retrieve(second.id)
    assert cancelled.status == "cancelled" and cancelled.request_counts.completed == 4
    assert cancelled.error_file_id is None
    assert len(client.files.content(cancelled.output_file_id).text.splitlines()) == 4
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
