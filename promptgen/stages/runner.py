"""The stage runner: what every LLM stage shares, written once.

A stage (describe, synonyms, differentiate, rename's LLM scorer) is a subclass of `LLMStage`
that says what to ask (`plan_requests`), what an answer is worth (`on_answer`: usable or not, and what
to ask next), what a request's journal line names (`journal_fields`) and what the version holds
at the end (`finish`: records, status and its manifest sections). `run_stage` does the rest, the
same way for all of them:

- reserves the next version of the set with the manifest header in place, or reopens the
  unfinished version on `--resume` (refused when the job's fingerprint changed);
- puts the answers an interrupted run journalled back into the cache, so nothing paid for is
  asked twice, and journals every answer and failure as it arrives (batch events too);
- runs the requests on the client (concurrency, retries, cache, batch API);
- re-asks an unusable answer while `answer_retries` allows (`StageRun.reask`);
- counts tokens and cost over every distinct answer, an unknown price making the total unknown;
- writes the records and the final manifest: header, status, counts, the stage's sections, usage.

A stage with nothing to store (rename's scorer) runs with `sink=None`: same requests, re-asks,
cache and accounting, no version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptgen.classes import ClassList
from promptgen.clock import utc_now
from promptgen.llm.batch import BatchJournal
from promptgen.llm.cache import restore_from_journal
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse, RunStats
from promptgen.llm.pricing import Cost
from promptgen.store import Store, VersionInfo, VersionWriter, class_summary

__all__ = ["LLMStage", "Verdict", "StageOutput", "StageRun", "StageResult", "Usage", "run_stage",
           "restore_earlier_answers"]


@dataclass
class Verdict:
    """What an answer is worth: usable or not (with why), and what to ask next because of it."""

    usable: bool
    error: str | None = None
    follow_ups: list[LLMRequest] = field(default_factory=list)


@dataclass
class StageOutput:
    """A finished stage: its records, its status and its manifest sections around the usage
    (`before` right after `counts`, `after` at the end), in the order they are written."""

    records: list[dict]
    status: str
    counts: dict
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)


@dataclass
class Usage:
    """Tokens and cost of every distinct answer a version received (cached ones included: they
    were paid for once); a cost stays None once any answer's price is unknown."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Cost = field(default_factory=Cost)
    answers: int = 0

    def add(self, response: LLMResponse) -> None:
        self.answers += 1
        self.prompt_tokens += response.usage.get("prompt_tokens", 0)
        self.completion_tokens += response.usage.get("completion_tokens", 0)
        self.cost.add(response.cost_usd)

    def manifest_entry(self) -> dict:
        return {"tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "cost_usd": self.cost.usd}


class LLMStage:
    """The part of an LLM stage that is its own. Subclasses set `stage`, `classes`, `set_name`,
    `answer_retries` and implement the methods that raise here."""

    stage: str
    classes: ClassList
    set_name: str
    answer_retries: int = 2

    def fingerprint(self, client: LLMClient) -> dict:
        """What must not change between a run and its --resume."""
        raise NotImplementedError

    def header(self, client: LLMClient) -> dict:
        """The manifest fields between the shared header and `requests_planned`."""
        raise NotImplementedError

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        raise NotImplementedError

    def requests_planned(self, requests: list[LLMRequest]) -> int:
        return len(requests)

    def journal_fields(self, request: LLMRequest) -> dict:
        """What a journal line says about the request besides its key (class, question, pair...)."""
        raise NotImplementedError

    def new_state(self) -> Any:
        """The stage's own bookkeeping for one run (StageRun.state)."""
        return None

    def prepare(self, run: "StageRun", store: Store, resumed: bool) -> None:
        """After the version is reserved and before anything is asked (files beside the version)."""

    def on_answer(self, run: "StageRun", request: LLMRequest, response: LLMResponse) -> Verdict:
        raise NotImplementedError

    def on_failure(self, run: "StageRun", request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        """A request that failed after the client's retries; what to ask instead (default nothing)."""
        return []

    def finish(self, run: "StageRun") -> StageOutput:
        raise NotImplementedError


@dataclass
class StageRun:
    """The runner's state while a stage runs, which the stage reads and adds to."""

    stage: LLMStage
    client: LLMClient
    writer: VersionWriter | None
    requests: list[LLMRequest]
    journal: list[dict] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stats: RunStats | None = None
    answers: dict[str, tuple[LLMRequest, LLMResponse]] = field(default_factory=dict)  # by request key
    failed: dict[str, str] = field(default_factory=dict)    # request key -> error, after the client's retries
    parsed: dict[str, Any] = field(default_factory=dict)    # request key -> the stage's reading of the answer
    state: Any = None                                      # the stage's own, from LLMStage.new_state()
    reasked: int = 0
    batches: BatchJournal | None = None
    _journalled: set[str] = field(default_factory=set)

    def reask(self, request: LLMRequest) -> list[LLMRequest]:
        """The same question with a new seed, while the stage's answer_retries allow."""
        if request.attempt >= self.stage.answer_retries:
            return []
        self.reasked += 1
        return [self.client.retry(request)]

    @property
    def info(self) -> VersionInfo:
        assert self.writer is not None, "a stage run without a set has no version"
        return self.writer.info

    def _log(self, request: LLMRequest, key: str, status: str, response: LLMResponse | None,
             error: str | None) -> None:
        if self.writer is None:
            return
        self.writer.append({"key": key, "time": utc_now(), "status": status, **self.stage.journal_fields(request),
                            "attempt": request.attempt, "cached": bool(response and response.cached),
                            "request": self.client.key_payload(request),
                            "response": response.to_json() if response else None, "error": error})

    def _on_answer(self, request: LLMRequest, response: LLMResponse) -> list[LLMRequest]:
        if response.key not in self.answers:  # a distinct answer: counted once, however often it arrives
            self.usage.add(response)
        self.answers[response.key] = (request, response)
        verdict = self.stage.on_answer(self, request, response)
        if response.key not in self._journalled:
            self._log(request, response.key, "ok" if verdict.usable else "unusable", response, verdict.error)
            self._journalled.add(response.key)
        return verdict.follow_ups

    def _on_failure(self, request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        self.failed[failure.key] = failure.error
        self._log(request, failure.key, "failed", None, failure.error)
        return self.stage.on_failure(self, request, failure)


@dataclass
class StageResult:
    info: VersionInfo | None
    stats: RunStats | None = None
    failures: list[dict] = field(default_factory=list)
    run: StageRun | None = None
    output: StageOutput | None = None

    @property
    def manifest(self) -> dict:
        assert self.info is not None
        return self.info.manifest


def _header(stage: LLMStage, client: LLMClient, fingerprint: dict, requests: list[LLMRequest]) -> dict:
    return {"stage": stage.stage, "source": "llm", "network": True,
            "needs_api_key": client.api_key_env is not None or client.api_base is None,
            "job": fingerprint, "classes": class_summary(stage.classes), "model": client.describe(),
            **stage.header(client), "requests_planned": stage.requests_planned(requests)}


def run_stage(stage: LLMStage, client: LLMClient, store: Store | None, *, resume: bool = False,
              resume_version: int | None = None, description: str | None = None,
              writer: VersionWriter | None = None) -> StageResult:
    """Run `stage` into a new version of its set (or the unfinished one, with `resume`); with
    `store=None`, run it without a version (nothing journalled or written). With `writer`, a
    version its caller holds open and finishes (count-names asks after it has counted): the
    stage journals into it and its records and sections come back in `StageResult.output`."""
    requests = stage.plan_requests(client)
    fingerprint = stage.fingerprint(client)
    client.check_credentials()
    description = description or f"{stage.stage} {stage.classes.dataset}"
    if writer is not None:
        run, output = _run_into(writer, stage, client, requests, description)
        return StageResult(None, run.stats, output.failures, run, output)
    if store is None:
        run = StageRun(stage, client, None, requests, state=stage.new_state())
        run.stats = client.run(requests, run._on_answer, run._on_failure, description=description)
        output = stage.finish(run)
        return StageResult(None, run.stats, output.failures, run)
    dataset = stage.classes.dataset
    if resume:
        writer = store.resume_version(dataset, stage.set_name, resume_version, fingerprint)
    else:
        writer = store.new_version(dataset, stage.set_name, _header(stage, client, fingerprint, requests),
                                   classes=stage.classes)
    with writer:  # entered at once: whatever fails below, the set's lock is released
        run, output = _run_into(writer, stage, client, requests, description,
                                lambda run: stage.prepare(run, store, resume))
        manifest = {**writer.info.manifest, "status": output.status, "counts": output.counts, **output.before,
                    **run.usage.manifest_entry(),
                    "cost_usd_this_run": run.stats.cost_usd if run.stats.sent else 0.0,
                    **run.batches.manifest_entry(client), **output.after}
        info = writer.finish(output.records, manifest)
    return StageResult(info, run.stats, output.failures, run)


def _run_into(writer: VersionWriter, stage: LLMStage, client: LLMClient, requests: list[LLMRequest],
              description: str, prepare: Any = None) -> tuple[StageRun, StageOutput]:
    """Ask into an open version: what its journal holds goes back into the cache, each answer and
    batch event is journalled as it arrives."""
    run = StageRun(stage, client, writer, requests, journal=writer.read_journal(), state=stage.new_state())
    run._journalled = {entry["key"] for entry in run.journal if entry.get("response") is not None}
    restore_from_journal(client.cache, run.journal)
    if prepare is not None:
        prepare(run)
    run.batches = BatchJournal(writer.append, run.journal)
    run.stats = client.run(requests, run._on_answer, run._on_failure, description=description, on_batch=run.batches)
    return run, stage.finish(run)


def restore_earlier_answers(store: Store, info: VersionInfo, client: LLMClient) -> None:
    """Answers journalled by earlier versions of the set were paid for: put back any the cache lost
    (a cleared cache/ folder, another machine), so a new version does not buy them again."""
    if client.cache is None:
        return
    for earlier in store.list_versions(info.dataset, info.set):
        if earlier.version != info.version and earlier.journal_path.exists():
            restore_from_journal(client.cache, VersionWriter(earlier).read_journal())

