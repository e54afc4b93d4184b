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
from promptgen.clip.pairs import PairPlan, load_pair_plan, pair_key, save_pair_plan
from promptgen.errors import PromptgenError
from promptgen.fileio import canonical_json
from promptgen.llm.batch import BatchJournal
from promptgen.llm.cache import restore_from_journal
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse, RunStats
from promptgen.parsing import PAIR_REJECT_REASONS, PairAttribute, PairParsed, parse_pair_answer
from promptgen.redact import redact
from promptgen.store import Store, VersionInfo, VersionWriter, make_record, now_iso
from promptgen.templates import QueryTemplate

__all__ = ["DifferentiateJob", "DifferentiateResult", "plan_requests", "run_differentiate", "resume_plan",
           "pair_records", "class_name_matcher", "STRUCTURED_MODES"]

STAGE = "differentiate"
STRUCTURED_MODES = ("auto", "schema", "prompt")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


@dataclass
class DifferentiateJob:
    classes: ClassList
    template: QueryTemplate
    set_name: str
    plan: PairPlan
    structured: str = "auto"
    answer_retries: int = 2
    repair: bool = True
    draw: int = 0
    pair_draws: dict[str, int] = field(default_factory=dict)  # "i_j" -> extra draw: re-ask only those pairs

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
        """What must not change between a run and its --resume."""
        return {"classes_hash": self.classes.hash, "template": self.template.ref,
                "template_sha256": self.template.sha256, "model": client.model,
                "api_base": client.describe()["api_base"], "draw": self.draw, "pairs_sha256": self.plan.sha256,
                "structured": "schema" if self.uses_schema(client) else "prompt",
                "answer_retries": self.answer_retries, "repair": self.repair,
                "pair_draws": dict(sorted(self.pair_draws.items()))}


@dataclass
class PairOutcome:
    status: str                          # ok, salvaged, failed
    parsed: PairParsed | None = None
    response: LLMResponse | None = None
    error: str | None = None
    attempts: int = 0
    transport: bool = False              # ended by a request that failed (--resume retries it)


@dataclass
class DifferentiateResult:
    info: VersionInfo
    stats: RunStats | None = None
    failed_pairs: list[dict] = field(default_factory=list)

    @property
    def manifest(self) -> dict:
        return self.info.manifest


def plan_requests(job: DifferentiateJob, client: LLMClient) -> list[LLMRequest]:
    """One request per pair, lower class index first; tags carry (i, j)."""
    question = job.template.questions[0]
    sampling = job.sampling(client)
    requests = []
    for i, j in job.plan.pairs:
        messages = job.template.render_pair(question, job.classes.names[i], job.classes.names[j])
        requests += client.plan(messages, sampling, draw=job.draw + job.pair_draws.get(pair_key(i, j), 0), tag=(i, j))
    return requests


def run_differentiate(job: DifferentiateJob, client: LLMClient, store: Store, *, resume: bool = False,
                      resume_version: int | None = None) -> DifferentiateResult:
    dataset = job.classes.dataset
    fingerprint = job.fingerprint(client)
    client.check_credentials()
    if resume:
        writer = store.resume_version(dataset, job.set_name, resume_version, fingerprint)
    else:
        requests_planned = len(job.plan.pairs)
        writer = store.new_version(dataset, job.set_name, {
            "stage": STAGE, "source": "llm", "network": True,
            "needs_api_key": client.api_key_env is not None or client.api_base is None,
            "job": fingerprint, "classes": {"count": len(job.classes), "hash": job.classes.hash,
                                            "source": job.classes.source},
            "model": client.describe(), "template": job.template.manifest_entry(), "sampling": job.sampling(client),
            "text_kind": job.template.text_kind, "answer_retries": job.answer_retries, "repair": job.repair,
            "pairs": job.plan.summary(), "pairs_file": None, "requests_planned": requests_planned},
            classes=job.classes)
    with writer:  # entered at once: whatever fails below, the set's lock is released
        if not resume:
            pairs_path = writer.info.directory / f"v{writer.info.version}.pairs.json"
            save_pair_plan(job.plan, pairs_path)
            writer.write_manifest({**writer.info.manifest, "pairs_file": pairs_path.name})
            _restore_paid_answers(store, writer.info, client)
        return _run(job, client, writer, plan_requests(job, client))


def resume_plan(store: Store, dataset: str, set_name: str, version: int | None = None
                ) -> tuple[PairPlan, dict[str, int], int]:
    """The pair list, per-pair draws and number of the version `--resume` would continue (no images
    needed). Pass the number on to `run_differentiate`, so that both read the same version."""
    info = store.resumable_info(dataset, set_name, version)
    name = info.manifest.get("pairs_file") or f"v{info.version}.pairs.json"
    return (load_pair_plan(info.directory / name), dict((info.manifest.get("job") or {}).get("pair_draws") or {}),
            info.version)


def _restore_paid_answers(store: Store, info: VersionInfo, client: LLMClient) -> None:
    """Answers journalled by earlier versions of the set were paid for: put back any the cache lost
    (a cleared cache/ folder, another machine), so a new version does not buy them again."""
    if client.cache is None:
        return
    for earlier in store.list_versions(info.dataset, info.set):
        if earlier.version != info.version and earlier.journal_path.exists():
            restore_from_journal(client.cache, VersionWriter(earlier).read_journal())


def _run(job: DifferentiateJob, client: LLMClient, writer: VersionWriter, requests: list[LLMRequest]
         ) -> DifferentiateResult:
    names = job.classes.names
    journal = writer.read_journal()
    journalled = {entry["key"] for entry in journal if entry.get("response") is not None}
    restore_from_journal(client.cache, journal)
    outcomes: dict[tuple[int, int], PairOutcome] = {}
    salvage: dict[tuple[int, int], PairOutcome] = {}
    bases: dict[str, LLMRequest] = {}               # repair request key -> the request it repairs
    answered: set[tuple[int, int]] = set()
    # pairs paid for while making this version, also before an interrupt (their answers now come from the cache)
    queried: set[tuple[int, int]] = {tuple(int(x) for x in entry["pair"].split("_")) for entry in journal
                                     if entry.get("response") is not None and not entry.get("cached")}
    rejected: Counter = Counter()
    usage = {"prompt": 0, "completion": 0, "cost": 0.0, "answers": 0, "repairs": 0, "reasked": 0,
             "failed_requests": 0}
    named_by = class_name_matcher(job.classes)

    def third_class(i: int, j: int) -> Callable[[str], bool]:
        # about another class: names one of the dataset's classes and neither of the pair's
        def about_other(text: str) -> bool:
            named = named_by(text)
            return bool(named) and not named & {i, j}
        return about_other

    def log_entry(request: LLMRequest, key: str, status: str, response: LLMResponse | None, error: str | None) -> None:
        i, j = request.tag[:2]
        writer.append({"key": key, "time": now_iso(), "status": status, "pair": pair_key(i, j),
                       "kind": "repair" if len(request.tag) > 2 else "ask", "attempt": request.attempt,
                       "cached": bool(response and response.cached), "request": client.key_payload(request),
                       "response": response.to_json() if response else None, "error": error})

    def finish_pair(pair: tuple[int, int], base: LLMRequest, error: str, transport: bool = False) -> None:
        if pair in salvage:
            outcomes[pair] = salvage[pair]
            outcomes[pair].transport = transport
        else:
            outcomes[pair] = PairOutcome("failed", error=error, attempts=base.attempt + 1, transport=transport)

    def on_answer(request: LLMRequest, response: LLMResponse) -> list[LLMRequest]:
        i, j = request.tag[:2]
        pair = (i, j)
        is_repair = len(request.tag) > 2
        base = bases.get(request.key, request) if is_repair else request
        text = response.choices[0].get("text") if response.choices else ""
        parsed = parse_pair_answer(text, names[i], names[j], max_chars=job.template.max_chars,
                                   third_class=third_class(i, j))
        rejected.update(parsed.rejected)
        usage["answers"] += 1
        usage["prompt"] += response.usage.get("prompt_tokens", 0)
        usage["completion"] += response.usage.get("completion_tokens", 0)
        usage["cost"] = None if usage["cost"] is None or response.cost_usd is None else usage["cost"] + response.cost_usd
        answered.add(pair)
        if not response.cached:
            queried.add(pair)
        if response.key not in journalled:
            log_entry(request, response.key, "ok" if parsed.usable else "unusable", response, parsed.error)
            journalled.add(response.key)
        if parsed.usable:
            outcomes[pair] = PairOutcome("ok", parsed, response, attempts=base.attempt + 1)
            return []
        best_so_far = salvage[pair].parsed.attributes if pair in salvage else []
        if len(parsed.attributes) > len(best_so_far):
            salvage[pair] = PairOutcome("salvaged", parsed, response, error=parsed.error, attempts=base.attempt + 1)
        if job.repair and not is_repair and not parsed.complete and text and text.strip() and job.template.repair:
            usage["repairs"] += 1
            repair = _repair_request(job, client, request, text, parsed.error or "not valid JSON")
            bases[repair.key] = base
            return [repair]
        if base.attempt < job.answer_retries:
            usage["reasked"] += 1
            return [client.retry(base)]
        finish_pair(pair, base, parsed.error or "no usable answer")
        return []

    def on_failure(request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        i, j = request.tag[:2]
        usage["failed_requests"] += 1
        log_entry(request, failure.key, "failed", None, failure.error)
        if len(request.tag) > 2:
            base = bases.get(request.key, request)
            if base.attempt < job.answer_retries:  # a lost repair still leaves the pair's re-asks
                usage["reasked"] += 1
                return [client.retry(base)]
        else:
            base = request
        finish_pair((i, j), base, "request failed: " + redact(failure.error), transport=True)
        return []

    batches = BatchJournal(writer.append, journal)
    stats = client.run(requests, on_answer, on_failure, description=f"differentiate {job.classes.dataset}",
                       on_batch=batches)
    return _finish(job, client, writer, stats, outcomes, answered, queried, rejected, usage, batches)


def _repair_request(job: DifferentiateJob, client: LLMClient, request: LLMRequest, answer: str,
                    error: str) -> LLMRequest:
    follow_up = _PLACEHOLDER.sub(lambda m: error if m.group(1) == "error" else m.group(0), job.template.repair or "")
    messages = request.message_list + [{"role": "assistant", "content": answer},
                                       {"role": "user", "content": follow_up}]
    (repair,) = client.plan(messages, request.base_dict, draw=request.draw,
                            tag=(*request.tag[:2], "repair"))
    return repair


def _finish(job: DifferentiateJob, client: LLMClient, writer: VersionWriter, stats: RunStats,
            outcomes: dict[tuple[int, int], PairOutcome], answered: set[tuple[int, int]],
            queried: set[tuple[int, int]], rejected: Counter, usage: dict,
            batches: BatchJournal) -> DifferentiateResult:
    names = job.classes.names
    records, failed = [], []
    template_ref = job.template.question_id(job.template.questions[0])
    for i, j in sorted(job.plan.pairs):
        outcome = outcomes.get((i, j)) or PairOutcome("failed", error="not answered")
        if outcome.status == "failed":
            failed.append({"pair": pair_key(i, j), "classes": [i, j], "class_names": [names[i], names[j]],
                           "reason": outcome.error, "attempts": outcome.attempts})
            continue
        records += pair_records(job.classes, i, j, outcome.parsed.attributes, stage=STAGE, kind=job.template.text_kind,
                                template=template_ref, request_key=outcome.response.key, model=client.model,
                                salvaged=outcome.status == "salvaged")
    status_counts = Counter(o.status for o in outcomes.values())
    unfinished = [pair for pair in job.plan.pairs if pair not in outcomes or outcomes[pair].transport]
    per_class = Counter(r["class_index"] for r in records)
    pairs_total = len(job.plan.pairs)
    manifest = {
        **writer.info.manifest,
        "status": "partial" if unfinished else "complete",
        "counts": {"records": len(records), "classes": len(job.classes),
                   "classes_without_texts": sum(1 for c in range(len(job.classes)) if per_class[c] == 0),
                   "classes_in_pairs": len({c for pair in job.plan.pairs for c in pair}),
                   "attributes": sum(len(o.parsed.attributes) for o in outcomes.values() if o.parsed and
                                     o.status != "failed"),
                   "requests": usage["answers"] + usage["failed_requests"], "repairs": usage["repairs"],
                   "failed_requests": usage["failed_requests"],
                   "reasked_after_unusable_answer": usage["reasked"],
                   "requests_sent_this_run": stats.sent, "cache_hits_this_run": stats.cache_hits},
        "pairs": {**job.plan.summary(), "answered": status_counts["ok"], "salvaged": status_counts["salvaged"],
                  "failed": len(failed), "queried": len(queried & answered),
                  "reused": len(answered - queried), "unanswered": pairs_total - len(answered),
                  "reasked_pairs": sum(1 for pair in job.plan.pairs if job.pair_draws.get(pair_key(*pair)))},
        "rejected": {reason: rejected.get(reason, 0) for reason in PAIR_REJECT_REASONS},
        "tokens": {"prompt": usage["prompt"], "completion": usage["completion"]},
        "cost_usd": usage["cost"],
        "cost_usd_this_run": stats.cost_usd if stats.sent else 0.0,
        **batches.manifest_entry(client),
        "failed_pairs": failed,
    }
    info = writer.finish(records, manifest)
    return DifferentiateResult(info, stats, failed)


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
