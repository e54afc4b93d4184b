"""Under injected faults (429 with Retry-After, 500, dropped connections, answers slower than the
timeout, cut-off bodies) every request ends as stored records or a recorded failure, nothing is
lost, and nothing is paid twice: the server's count of answers it delivered equals the answers
the run kept. benchmarks/soak.py runs the same at 10,000 requests."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from promptgen.testing.fake_server import CHAOS_KINDS, Chaos

pytestmark = pytest.mark.slow  # 300 classes through a server that fails 30% of the time


def test_every_request_is_stored_or_recorded_as_failed_and_none_is_paid_twice(cli, fake_llm, root, tmp_path):
    names = [f"widget model {i:04d}" for i in range(300)]
    class_file = tmp_path / "widgets.txt"
    class_file.write_text("\n".join(names) + "\n")
    fake_llm.configure(chaos=Chaos(rate=0.3, seed=7, retry_after=0.01, slow_delay=4.0))
    result = cli("describe", "widgets", "--classes", class_file, "--style", "dclip", "--model", "openai/test",
                 "--api-base", fake_llm.url, "--concurrency", "16", "--timeout", "2.0", "--backoff", "0.01",
                 "--max-attempts", "8", "--no-progress")
    assert result.exit_code in (0, 3), result.output
    outcomes = fake_llm.state.outcomes
    assert set(outcomes) == {"ok", *CHAOS_KINDS}, outcomes  # every kind of fault happened
    assert 0.2 < 1 - outcomes["ok"] / sum(outcomes.values()) < 0.4
    set_dir = root / "prompts" / "widgets" / "dclip"
    manifest = json.loads((set_dir / "v1.manifest.json").read_text())
    records = [json.loads(line) for line in (set_dir / "v1.jsonl").read_text().splitlines()]
    failed = {f["class_index"] for f in manifest["failures"]}
    stored = {r["class_index"] for r in records}
    assert stored | failed == set(range(300)), "a request ended neither stored nor recorded as failed"
    assert len({r["id"] for r in records}) == len(records), "duplicate records"
    journal = [json.loads(line) for line in (set_dir / "v1.requests.jsonl").read_text().splitlines()]
    answered = [e for e in journal if e["response"] is not None]
    assert len({e["key"] for e in answered}) == len(answered), "an answer was journalled twice"
    delivered = fake_llm.state.delivered
    assert max(delivered.values()) == 1, "the server delivered an answer to the same request twice"
    assert sum(delivered.values()) == len(answered), "answers were delivered that the run did not keep"
    # the failures, if any, are requests whose every attempt met a fault
    assert all(f["reason"] == "request failed" for f in manifest["failures"])
    assert Counter(r["class_index"] for r in records).keys() == stored
