"""Differentiate stage: what tells two confusable classes apart (FuDD, docs/methods.md, fudd).

spec (class list + pair template + a `PairPlan` of confusable pairs) -> one request per unordered
pair (i < j, so a pair is asked once whichever way it came up) -> JSON answers, parsed and
checked -> records, one per (pair, attribute, class), in a new version of the set.

An answer that is not usable JSON gets one repair request (the bad answer and what was wrong
with it, asking for the JSON only); an answer with no usable attribute is asked again with a new
seed, up to `answer_retries` times. A pair that still has nothing is recorded as failed (the
`fudd` head then scores its classes with the initial head); complete attributes salvaged from a
cut-off answer are kept when nothing better came. Every answer is cached and journalled as it
arrives, so a new image set or a larger k asks only the new pairs, and `--resume` after an
interrupt asks nothing twice.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from promptgen.classes import ClassList, class_name_matcher
from promptgen.errors import PromptgenError
from promptgen.fileio import canonical_json
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse
from promptgen.pairs import PairPlan, load_pair_plan, pair_key, save_pair_plan
from promptgen.parsing import PAIR_REJECT_REASONS, PairAttribute, PairParsed, parse_pair_answer
from promptgen.redact import redact
from promptgen.stages.runner import (LLMStage, StageOutput, StageResult, StageRun, Verdict, restore_earlier_answers,
                                     run_stage)
from promptgen.store import Store, make_record
from promptgen.templates import QueryTemplate

__all__ = ["DifferentiateJob", "DifferentiateResult", "plan_requests", "run_differentiate", "resume_plan",
           "pair_records", "class_name_matcher", "STRUCTURED_MODES"]

STAGE = "differentiate"
STRUCTURED_MODES = ("auto", "schema", "prompt")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


@dataclass
class DifferentiateJob(LLMStage):
    classes: ClassList
    template: QueryTemplate
    set_name: str
    plan: PairPlan
    structured: str = "auto"
    answer_retries: int = 2
    repair: bool = True
    draw: int = 0
    pair_draws: dict[str, int] = field(default_factory=dict)  # "i_j" -> extra draw: re-ask only those pairs
    stage: str = STAGE

    def __post_init__(self) -> None:
        if self.template.kind != "pair":
            raise PromptgenError(f"template {self.template.ref} asks about one class, not a pair",
                                 "use a pair template such as --style fudd")
        if self.structured not in STRUCTURED_MODES:
            raise PromptgenError(f"unknown --structured {self.structured!r}", f"use one of {', '.join(STRUCTURED_MODES)}")
        if self.structured == "schema" and not self.template.schema:
            raise PromptgenError(f"template {self.template.ref} has no JSON schema for --structured schema",
                                 'add a "schema" to the template, or use --structured prompt')
        if self.plan.num_classes != len(self.classes):
            raise PromptgenError(f"the pair list is for {self.plan.num_classes} classes, {self.classes.dataset} has "
                                 f"{len(self.classes)}", "find the pairs with this dataset's class list")
        if not self.plan.pairs:
            raise PromptgenError("no confusable pair to ask about",
                                 "lower --min-count, raise --k or --partners, or give more images")
        bad = [pair for pair in self.plan.pairs if not (0 <= pair[0] < pair[1] < len(self.classes))]
        if bad or len(set(self.plan.pairs)) != len(self.plan.pairs):
            raise PromptgenError(f"the pair list has pairs that are not (i, j) with i < j < {len(self.classes)}, "
                                 f"or repeats: {bad[:5] or 'a repeated pair'}",
                                 "give each unordered pair once, lower class index first")

    def uses_schema(self, client: LLMClient) -> bool:
        if self.structured == "auto":
            return bool(self.template.schema) and client.supports_response_schema()
        return self.structured == "schema"

    def sampling(self, client: LLMClient) -> dict:
        sampling = dict(self.template.sampling)
        if self.uses_schema(client):
            sampling["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "differences", "schema": self.template.schema, "strict": True}}
        return sampling

    def fingerprint(self, client: LLMClient) -> dict:
        return {"classes_hash": self.classes.hash, "template": self.template.ref,
                "template_sha256": self.template.sha256, "model": client.model,
                "api_base": client.describe()["api_base"], "draw": self.draw, "pairs_sha256": self.plan.sha256,
                "structured": "schema" if self.uses_schema(client) else "prompt",
                "answer_retries": self.answer_retries, "repair": self.repair,
                "pair_draws": dict(sorted(self.pair_draws.items()))}

    def header(self, client: LLMClient) -> dict:
        return {"template": self.template.manifest_entry(), "sampling": self.sampling(client),
                "text_kind": self.template.text_kind, "answer_retries": self.answer_retries, "repair": self.repair,
                "pairs": self.plan.summary(), "pairs_file": None}

    def requests_planned(self, requests: list[LLMRequest]) -> int:
        return len(self.plan.pairs)

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        """One request per pair, lower class index first; tags carry (i, j)."""
        question = self.template.questions[0]
        sampling = self.sampling(client)
        requests = []
        for i, j in self.plan.pairs:
            messages = self.template.render_pair(question, self.classes.names[i], self.classes.names[j])
            requests += client.plan(messages, sampling, draw=self.draw + self.pair_draws.get(pair_key(i, j), 0),
                                    tag=(i, j))
        return requests

    def journal_fields(self, request: LLMRequest) -> dict:
        return {"pair": pair_key(*request.tag[:2]), "kind": "repair" if len(request.tag) > 2 else "ask"}

    def new_state(self) -> "_PairRun":
        return _PairRun(class_name_matcher(self.classes))

    def prepare(self, run: StageRun, store: Store, resumed: bool) -> None:
        state: _PairRun = run.state
        # pairs paid for while making this version, also before an interrupt (their answers now come from the cache)
        state.queried = {tuple(int(x) for x in entry["pair"].split("_")) for entry in run.journal
                         if entry.get("response") is not None and not entry.get("cached")}
        if not resumed:
            pairs_path = run.info.directory / f"v{run.info.version}.pairs.json"
            save_pair_plan(self.plan, pairs_path)
            run.writer.write_manifest({**run.info.manifest, "pairs_file": pairs_path.name})
            restore_earlier_answers(store, run.info, run.client)

    def on_answer(self, run: StageRun, request: LLMRequest, response: LLMResponse) -> Verdict:
        state: _PairRun = run.state
        pair = request.tag[:2]
        is_repair = len(request.tag) > 2
        base = state.bases.get(request.key, request) if is_repair else request
        text = response.choices[0].get("text") if response.choices else ""
        parsed = parse_pair_answer(text, self.classes.names[pair[0]], self.classes.names[pair[1]],
                                   max_chars=self.template.max_chars, third_class=state.third_class(*pair))
        state.rejected.update(parsed.rejected)
        state.answered.add(pair)
        if not response.cached:
            state.queried.add(pair)
        if parsed.usable:
            state.outcomes[pair] = PairOutcome("ok", parsed, response, attempts=base.attempt + 1)
            return Verdict(True, parsed.error)
        best_so_far = state.salvage[pair].parsed.attributes if pair in state.salvage else []
        if len(parsed.attributes) > len(best_so_far):
            state.salvage[pair] = PairOutcome("salvaged", parsed, response, error=parsed.error,
                                              attempts=base.attempt + 1)
        if self.repair and not is_repair and not parsed.complete and text and text.strip() and self.template.repair:
            state.repairs += 1
            repair = _repair_request(self, run.client, request, text, parsed.error or "not valid JSON")
            state.bases[repair.key] = base
            return Verdict(False, parsed.error, [repair])
        again = run.reask(base)
        if not again:
            state.finish_pair(pair, base, parsed.error or "no usable answer")
        return Verdict(False, parsed.error, again)

    def on_failure(self, run: StageRun, request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        state: _PairRun = run.state
        base = request
        if len(request.tag) > 2:
            base = state.bases.get(request.key, request)
            again = run.reask(base)  # a lost repair still leaves the pair's re-asks
            if again:
                return again
        state.finish_pair(request.tag[:2], base, "request failed: " + redact(failure.error), transport=True)
        return []

    def finish(self, run: StageRun) -> StageOutput:
        state: _PairRun = run.state
        names = self.classes.names
        records, failed = [], []
        template_ref = self.template.question_id(self.template.questions[0])
        for i, j in sorted(self.plan.pairs):
            outcome = state.outcomes.get((i, j)) or PairOutcome("failed", error="not answered")
            if outcome.status == "failed":
                failed.append({"pair": pair_key(i, j), "classes": [i, j], "class_names": [names[i], names[j]],
                               "reason": outcome.error, "attempts": outcome.attempts})
                continue
            records += pair_records(self.classes, i, j, outcome.parsed.attributes, stage=STAGE,
                                    kind=self.template.text_kind, template=template_ref,
                                    request_key=outcome.response.key, model=run.client.model,
                                    salvaged=outcome.status == "salvaged")
        outcomes = state.outcomes
        status_counts = Counter(o.status for o in outcomes.values())
        unfinished = [pair for pair in self.plan.pairs if pair not in outcomes or outcomes[pair].transport]
        per_class = Counter(r["class_index"] for r in records)
        counts = {"records": len(records), "classes": len(self.classes),
                  "classes_without_texts": sum(1 for c in range(len(self.classes)) if per_class[c] == 0),
                  "classes_in_pairs": len({c for pair in self.plan.pairs for c in pair}),
                  "attributes": sum(len(o.parsed.attributes) for o in outcomes.values() if o.parsed and
                                    o.status != "failed"),
                  "requests": run.usage.answers + len(run.failed), "repairs": state.repairs,
                  "failed_requests": len(run.failed),
                  "reasked_after_unusable_answer": run.reasked,
                  "requests_sent_this_run": run.stats.sent, "cache_hits_this_run": run.stats.cache_hits}
        before = {
            "pairs": {**self.plan.summary(), "answered": status_counts["ok"], "salvaged": status_counts["salvaged"],
                      "failed": len(failed), "queried": len(state.queried & state.answered),
                      "reused": len(state.answered - state.queried),
                      "unanswered": len(self.plan.pairs) - len(state.answered),
                      "reasked_pairs": sum(1 for pair in self.plan.pairs if self.pair_draws.get(pair_key(*pair)))},
            "rejected": {reason: state.rejected.get(reason, 0) for reason in PAIR_REJECT_REASONS}}
        return StageOutput(records, "partial" if unfinished else "complete", counts, before,
                           {"failed_pairs": failed}, failed)


@dataclass
class PairOutcome:
    status: str                          # ok, salvaged, failed
    parsed: PairParsed | None = None
    response: LLMResponse | None = None
    error: str | None = None
    attempts: int = 0
    transport: bool = False              # ended by a request that failed (--resume retries it)


@dataclass
class _PairRun:
    """A differentiate run's bookkeeping: each pair's outcome, the best salvage so far, which
    request a repair repairs, and which pairs were answered and paid for."""

    named_by: Callable[[str], set[int]]
    outcomes: dict[tuple[int, int], PairOutcome] = field(default_factory=dict)
    salvage: dict[tuple[int, int], PairOutcome] = field(default_factory=dict)
    bases: dict[str, LLMRequest] = field(default_factory=dict)      # repair request key -> the request it repairs
    answered: set[tuple[int, int]] = field(default_factory=set)
    queried: set[tuple[int, int]] = field(default_factory=set)
    rejected: Counter = field(default_factory=Counter)
    repairs: int = 0

    def third_class(self, i: int, j: int) -> Callable[[str], bool]:
        """About another class: names one of the dataset's classes and neither of the pair's."""
        def about_other(text: str) -> bool:
            named = self.named_by(text)
            return bool(named) and not named & {i, j}
        return about_other

    def finish_pair(self, pair: tuple[int, int], base: LLMRequest, error: str, transport: bool = False) -> None:
        if pair in self.salvage:
            self.outcomes[pair] = self.salvage[pair]
            self.outcomes[pair].transport = transport
        else:
            self.outcomes[pair] = PairOutcome("failed", error=error, attempts=base.attempt + 1, transport=transport)


DifferentiateResult = StageResult


def plan_requests(job: DifferentiateJob, client: LLMClient) -> list[LLMRequest]:
    return job.plan_requests(client)


def run_differentiate(job: DifferentiateJob, client: LLMClient, store: Store, *, resume: bool = False,
                      resume_version: int | None = None) -> StageResult:
    return run_stage(job, client, store, resume=resume, resume_version=resume_version)


def resume_plan(store: Store, dataset: str, set_name: str, version: int | None = None
                ) -> tuple[PairPlan, dict[str, int], int]:
    """The pair list, per-pair draws and number of the version `--resume` would continue (no images
    needed). Pass the number on to `run_differentiate`, so that both read the same version."""
    info = store.resumable_info(dataset, set_name, version)
    name = info.manifest.get("pairs_file") or f"v{info.version}.pairs.json"
    return (load_pair_plan(info.directory / name), dict((info.manifest.get("job") or {}).get("pair_draws") or {}),
            info.version)


def _repair_request(job: DifferentiateJob, client: LLMClient, request: LLMRequest, answer: str,
                    error: str) -> LLMRequest:
    follow_up = _PLACEHOLDER.sub(lambda m: error if m.group(1) == "error" else m.group(0), job.template.repair or "")
    messages = request.message_list + [{"role": "assistant", "content": answer},
                                       {"role": "user", "content": follow_up}]
    (repair,) = client.plan(messages, request.base_dict, draw=request.draw,
                            tag=(*request.tag[:2], "repair"))
    return repair


def pair_records(classes: ClassList, i: int, j: int, attributes: list[PairAttribute], *, stage: str = STAGE,
                 kind: str = "sentence", template: str | None = None, request_key: str | None = None,
                 model: str | None = None, salvaged: bool = False) -> list[dict]:
    """Records of one pair: per attribute, class i's sentence then class j's, each naming the pair,
    the other class and the attribute, so the pair can be read (and audited) as a unit."""
    names, key, records = classes.names, pair_key(i, j), []
    for position, attribute in enumerate(attributes):
        for class_index, other, text in ((i, j, attribute.first), (j, i, attribute.second)):
            record = make_record(
                class_index=class_index, class_name=names[class_index], stage=stage, kind=kind, text=text,
                template=template, sample_index=None, request_key=request_key, model=model, pair=key,
                pair_classes=[i, j], other_class_index=other, other_class_name=names[other],
                attribute=attribute.attribute, attribute_index=position, salvaged=True if salvaged else None)
            record["id"] = _record_id(record)
            records.append(record)
    return records


def _record_id(record: dict) -> str:
    """Record ids include the pair: the same sentence can describe a class in two pairs."""
    payload = canonical_json([record["class_index"], record["class_name"], record["stage"], record["text"],
                              record["pair"], record["attribute_index"]])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
