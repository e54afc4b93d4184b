"""The stage runner, through a stage written only for this test: a new LLM stage is one small
class, and it gets version reservation, the journal, re-asks, resume without paying twice, token
and cost accounting and the manifest from the runner (promptgen/stages/runner.py). Its manifest
sections are the typed manifest's (promptgen/manifests.py): a stage with new ones adds them there."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import pytest

from promptgen.classes import ClassList, load_dataset
from promptgen.llm.cache import LLMCache
from promptgen.llm.client import LLMClient, LLMRequest, LLMResponse
from promptgen.stages.runner import LLMStage, StageOutput, StageRun, Verdict, run_stage
from promptgen.store import Store, make_record
from promptgen.testing.fake_server import Fault


@dataclass
class ColourJob(LLMStage):
    """One word per class: the first word of the answer after "It is" (the fake server's style)."""

    classes: ClassList
    set_name: str = "colours"
    answer_retries: int = 2
    stage: str = "colours"
    stop_after: int | None = None   # raise KeyboardInterrupt after this many answers (an interrupted run)

    def fingerprint(self, client: LLMClient) -> dict:
        return {"classes_hash": self.classes.hash, "model": client.model}

    def header(self, client: LLMClient) -> dict:
        return {"text_kind": "word", "answer_retries": self.answer_retries}

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        return [request for c, name in enumerate(self.classes.names)
                for request in client.plan([{"role": "user", "content": f"What colour is a {name}?"}], {}, tag=(c,))]

    def journal_fields(self, request: LLMRequest) -> dict:
        return {"class_index": request.tag[0]}

    def on_answer(self, run: StageRun, request: LLMRequest, response: LLMResponse) -> Verdict:
        if self.stop_after is not None and len(run.answers) > self.stop_after:
            raise KeyboardInterrupt
        text = (response.choices[0].get("text") or "") if response.choices else ""
        word = text.removeprefix("It is ").split(" ")[0]
        run.parsed[response.key] = word if word.isalpha() else None
        if run.parsed[response.key]:
            return Verdict(True)
        return Verdict(False, "no word", run.reask(request))

    def finish(self, run: StageRun) -> StageOutput:
        records = [make_record(class_index=request.tag[0], class_name=self.classes.names[request.tag[0]],
                               stage=self.stage, kind="word", text=word, template=None, sample_index=None,
                               request_key=key, model=run.client.model)
                   for key, (request, _) in sorted(run.answers.items(), key=lambda item: item[1][0].tag)
                   if (word := run.parsed.get(key))]
        return StageOutput(records, "complete", {"records": len(records), "reasked_after_unusable_answer": run.reasked})


@pytest.fixture
def classes() -> ClassList:
    return load_dataset("cifar10")


def client_for(fake_llm, root) -> LLMClient:
    return LLMClient("openai/test", api_base=fake_llm.url, cache=LLMCache(root / "cache" / "llm"), progress=False,
                     price=(1.0, 2.0))


def test_a_new_stage_gets_a_version_journal_usage_and_manifest_from_the_runner(fake_llm, root, classes):
    result = run_stage(ColourJob(classes), client_for(fake_llm, root), Store(root))
    manifest = result.manifest
    assert [r["text"].isalpha() for r in Store(root).read_records(result.info)] == [True] * 10
    assert manifest["status"] == "complete" and manifest["stage"] == "colours" and manifest["source"] == "llm"
    assert manifest["job"] == {"classes_hash": classes.hash, "model": "openai/test"}
    assert manifest["requests_planned"] == 10 and manifest["text_kind"] == "word"
    assert manifest["tokens"]["prompt"] > 0 and manifest["cost_usd"] == pytest.approx(
        (manifest["tokens"]["prompt"] * 1.0 + manifest["tokens"]["completion"] * 2.0) / 1e6)
    journal = [json.loads(line) for line in result.info.journal_path.read_text().splitlines()]
    assert sorted(entry["class_index"] for entry in journal) == list(range(10))
    assert {entry["status"] for entry in journal} == {"ok"}


def test_an_unusable_answer_is_asked_again_and_journalled_as_unusable(fake_llm, root, classes):
    fake_llm.configure(faults=[Fault("empty", match="a cat?", times=1)])
    result = run_stage(ColourJob(classes), client_for(fake_llm, root), Store(root))
    assert result.manifest["counts"] == {"records": 10, "reasked_after_unusable_answer": 1}
    journal = [json.loads(line) for line in result.info.journal_path.read_text().splitlines()]
    unusable = [entry for entry in journal if entry["status"] == "unusable"]
    assert [(entry["class_index"], entry["error"]) for entry in unusable] == [(3, "no word")]


def test_an_interrupted_run_resumes_without_asking_anything_twice(fake_llm, root, classes):
    store = Store(root)
    with pytest.raises(KeyboardInterrupt):
        run_stage(ColourJob(classes, stop_after=4), client_for(fake_llm, root), store)
    (interrupted,) = store.list_versions("cifar10", "colours")
    assert interrupted.status == "interrupted"
    asked = fake_llm.request_count
    shutil.rmtree(root / "cache")  # the journal alone brings back what was paid for
    result = run_stage(ColourJob(classes), client_for(fake_llm, root), store, resume=True)
    assert result.info.version == interrupted.version and result.manifest["status"] == "complete"
    assert fake_llm.request_count - asked == 10 - len(result.run.journal)
    assert len(result.run.journal) >= 4 and len(store.read_records(result.info)) == 10


def test_a_stage_without_a_set_runs_the_same_and_writes_nothing(fake_llm, root, classes):
    result = run_stage(ColourJob(classes), client_for(fake_llm, root), None)
    assert result.info is None and len(result.run.answers) == 10 and result.run.usage.answers == 10
    assert not (root / "prompts").exists()
