"""Describe stage: per-class descriptions from an LLM (or the offline wordnet source).

spec (class list + query template) -> requests (one per class x question, or per sample where
the provider has no `n`) -> answers (parsed, validated) -> records in a new prompt-set version.

Every answered request is journalled as it arrives, and every answer is cached, so an
interrupted run resumes (`--resume`) without sending a finished request again; records are
written at the end in canonical order (class, question, sample, position), so a resumed run
gives exactly the records an uninterrupted one would.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.llm.batch import BatchJournal
from promptgen.llm.cache import restore_from_journal
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse, RunStats
from promptgen.parsing import DROP_REASONS, Parsed, parse_answer
from promptgen.redact import redact
from promptgen.sources.wordnet import gloss_sentence, load_wordnet
from promptgen.store import Store, VersionInfo, VersionWriter, dedupe_records, make_record, now_iso, record_id
from promptgen.templates import QueryTemplate

__all__ = ["DescribeJob", "DescribeResult", "plan_requests", "run_describe", "describe_wordnet"]

STAGE = "describe"


@dataclass
class DescribeJob:
    classes: ClassList
    template: QueryTemplate
    set_name: str
    draw: int = 0
    answer_retries: int = 2
    stage: str = STAGE
    dedupe: bool = False    # drop repeated texts of a class (CuPL and DCLIP count every repeat)

    def __post_init__(self) -> None:
        if self.template.kind != "class":
            raise PromptgenError(f"template {self.template.ref} asks about pairs of classes",
                                 "describe takes a class template (cupl, cupl-base, dclip); pair templates are for "
                                 "`promptgen differentiate`")
        if self.template.placeholders:
            raise PromptgenError(f"template {self.template.ref} needs {', '.join('{' + x + '}' for x in self.template.placeholders)}, "
                                 f"which describe cannot fill",
                                 "use a template whose questions only name the class ({c}, {a}); "
                                 "name-commonness is for `promptgen rename --scorer llm`")

    def fingerprint(self, client: LLMClient) -> dict:
        """What must not change between a run and its --resume."""
        return {"classes_hash": self.classes.hash, "template": self.template.ref, "template_sha256": self.template.sha256,
                "model": client.model, "api_base": client.describe()["api_base"], "draw": self.draw,
                "split_samples": client.split_samples}


@dataclass
class DescribeResult:
    info: VersionInfo
    stats: RunStats | None = None
    failures: list[dict] = field(default_factory=list)

    @property
    def manifest(self) -> dict:
        return self.info.manifest


def plan_requests(job: DescribeJob, client: LLMClient) -> list[LLMRequest]:
    """Canonical order: class, question, sample. Tags carry (class index, question index)."""
    requests = []
    for class_index, name in enumerate(job.classes.names):
        for question_index, question in enumerate(job.template.questions):
            messages = job.template.render(question, name)
            requests += client.plan(messages, job.template.sampling, draw=job.draw, tag=(class_index, question_index))
    return requests


def _parse(job: DescribeJob, request: LLMRequest, response: LLMResponse) -> list[Parsed]:
    continues = job.template.parser == "bullets" and request.message_list[-1]["content"].rstrip().endswith("-")
    return [parse_answer(choice.get("text"), job.template.parser, append=job.template.append,
                         max_chars=job.template.max_chars, continues_bullet=continues)
            for choice in response.choices]


def run_describe(job: DescribeJob, client: LLMClient, store: Store, *, resume: bool = False,
                 resume_version: int | None = None) -> DescribeResult:
    dataset = job.classes.dataset
    requests = plan_requests(job, client)
    fingerprint = job.fingerprint(client)
    client.check_credentials()
    if resume:
        writer = store.resume_version(dataset, job.set_name, resume_version, fingerprint)
    else:
        writer = store.new_version(dataset, job.set_name, {
            "stage": job.stage, "source": "llm", "network": True,
            "needs_api_key": client.api_key_env is not None or client.api_base is None,
            "job": fingerprint, "classes": _class_summary(job.classes), "model": client.describe(),
            "template": job.template.manifest_entry(), "sampling": job.template.sampling,
            "text_kind": job.template.text_kind, "answer_retries": job.answer_retries, "dedupe": job.dedupe,
            "requests_planned": len(requests)}, classes=job.classes)
    with writer:
        return _run(job, client, writer, requests)


def _run(job: DescribeJob, client: LLMClient, writer: VersionWriter, requests: list[LLMRequest]) -> DescribeResult:
    journal = writer.read_journal()
    journalled = {entry["key"] for entry in journal if entry.get("response") is not None}
    restore_from_journal(client.cache, journal)
    answers: dict[str, tuple[LLMRequest, LLMResponse, list[Parsed]]] = {}
    failures: dict[str, str] = {}

    def log_entry(request: LLMRequest, key: str, status: str, response: LLMResponse | None, error: str | None) -> None:
        class_index, question_index = request.tag
        writer.append({"key": key, "time": now_iso(), "status": status, "class_index": class_index,
                       "question": job.template.questions[question_index].id, "sample_index": request.sample_index,
                       "attempt": request.attempt, "cached": bool(response and response.cached),
                       "request": client.key_payload(request),
                       "response": response.to_json() if response else None, "error": error})

    def on_answer(request: LLMRequest, response: LLMResponse) -> list[LLMRequest]:
        parsed = _parse(job, request, response)
        usable = any(p.texts for p in parsed)
        answers[response.key] = (request, response, parsed)
        if response.key not in journalled:
            log_entry(request, response.key, "ok" if usable else "unusable", response, None)
            journalled.add(response.key)
        if not usable and request.attempt < job.answer_retries:
            return [client.retry(request)]
        return _top_ups(client, request, response)

    def on_failure(request: LLMRequest, failure: LLMRequestFailed) -> None:
        failures[failure.key] = failure.error
        log_entry(request, failure.key, "failed", None, failure.error)

    batches = BatchJournal(writer.append, journal)
    stats = client.run(requests, on_answer, on_failure, description=f"describe {job.classes.dataset}",
                       on_batch=batches)
    collected = _Collector(job, client, answers, failures)
    for request in requests:
        collected.add(request)
    records = collected.records
    if job.template.text_kind == "synonym":  # the official name is always one of a class's names
        records = official_name_records(job.classes, job.stage) + records
    # names are a set; descriptions keep every repeat unless asked, as the methods count them
    if job.template.text_kind == "synonym" or job.dedupe:
        kept, duplicates = dedupe_records(records, ignore_case=job.template.text_kind == "synonym")
    else:
        kept, duplicates = records, 0
    if job.template.text_kind == "synonym":
        kept = with_source_ids(kept)
    collected.dropped["duplicate"] += duplicates
    if duplicates:
        repeated = Counter(r["class_index"] for r in records)
        repeated.subtract(Counter(r["class_index"] for r in kept))
        for class_index, n in repeated.items():
            if n:
                collected.dropped_per_class.setdefault(class_index, Counter())["duplicate"] += n
    # a synonyms set always holds the official names: count what the model added
    per_class = Counter(r["class_index"] for r in kept if r.get("source") != "official")
    empty_classes = [i for i in range(len(job.classes)) if per_class[i] == 0]
    transport_failures = [f for f in collected.failures if f["reason"] == "request failed"]
    manifest = {
        **writer.info.manifest,
        "status": "partial" if transport_failures else "complete",
        "counts": {"records": len(kept), "classes": len(job.classes), "classes_without_texts": len(empty_classes),
                   "texts_per_class_min": min(per_class[i] for i in range(len(job.classes))),
                   "texts_per_class_max": max(per_class.values(), default=0),
                   "requests": len(answers) + len(failures), "reasked_after_unusable_answer": collected.reasked,
                   "samples_topped_up": collected.topped_up,
                   "requests_sent_this_run": stats.sent, "cache_hits_this_run": stats.cache_hits,
                   "failed_requests": len(transport_failures),
                   "unusable_answers": len(collected.failures) - len(transport_failures)},
        "dropped": {reason: collected.dropped.get(reason, 0) for reason in DROP_REASONS},
        "dropped_per_class": {str(c): {reason: n for reason, n in sorted(counts.items()) if n}
                              for c, counts in sorted(collected.dropped_per_class.items()) if sum(counts.values())},
        "tokens": {"prompt": collected.prompt_tokens, "completion": collected.completion_tokens},
        "cost_usd": collected.cost_usd,
        "cost_usd_this_run": stats.cost_usd if stats.sent else 0.0,
        **batches.manifest_entry(client),
        "classes_without_texts": [{"class_index": i, "class_name": job.classes.names[i]} for i in empty_classes],
        **(_synonym_counts(job.classes, kept) if job.template.text_kind == "synonym" else {}),
        "failures": collected.failures,
    }
    info = writer.finish(kept, manifest)
    return DescribeResult(info, stats, collected.failures)


def _top_ups(client: LLMClient, request: LLMRequest, response: LLMResponse) -> list[LLMRequest]:
    """A provider that ignores `n` (some OpenAI-compatible servers do) answers once: ask for the
    missing samples one by one rather than keep a tenth of the texts."""
    if request.sample_index is not None or len(response.choices) >= request.n:
        return []
    return client.samples(request.message_list, request.base_dict, range(len(response.choices), request.n),
                          draw=request.draw, tag=request.tag)


class _Collector:
    """Walks the plan in canonical order (class, question, sample) and turns the final answer of
    each request (after re-asks, plus any top-ups) into records, drop counts, usage and failures."""

    def __init__(self, job: DescribeJob, client: LLMClient, answers: dict, failures: dict) -> None:
        self.job, self.client, self.answers, self.failed_requests = job, client, answers, failures
        self.records: list[dict] = []
        self.dropped: Counter = Counter()
        self.dropped_per_class: dict[int, Counter] = {}
        self.failures: list[dict] = []
        self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd: float | None = 0.0
        self.reasked = self.topped_up = 0

    def add(self, request: LLMRequest) -> None:
        final = self._resolve(request)
        if final is not None:
            for top_up in _top_ups(self.client, final[0], final[1]):
                self.topped_up += 1
                self._resolve(top_up)

    def _resolve(self, request: LLMRequest) -> tuple[LLMRequest, LLMResponse, list[Parsed]] | None:
        final, current = None, request
        while current.key in self.answers:
            final = self.answers[current.key]
            self._account(final[1], final[2], request.tag[0])
            if any(p.texts for p in final[2]) or current.attempt >= self.job.answer_retries:
                break
            current = self.client.retry(current)
            self.reasked += 1
        class_index, question_index = request.tag
        question = self.job.template.questions[question_index]
        where = {"class_index": class_index, "class_name": self.job.classes.names[class_index],
                 "question": self.job.template.question_id(question), "sample_index": request.sample_index}
        if current.key not in self.answers:
            error = self.failed_requests.get(current.key, "not answered")
            self.failures.append({**where, "reason": "request failed", "error": redact(error),
                                  "attempts": current.attempt + 1})
            return None
        answered, response, parsed = final
        if not any(p.texts for p in parsed):
            why = next((f": {p.problem}" for p in parsed if p.problem), "")
            self.failures.append({**where, "reason": "unusable answer",
                                  "error": f"no usable text after {current.attempt + 1} answer(s){why}"})
            return final
        for choice_index, p in enumerate(parsed):
            sample = request.sample_index if request.sample_index is not None else choice_index
            for position, text in enumerate(p.texts):
                self.records.append(make_record(
                    class_index=class_index, class_name=self.job.classes.names[class_index], stage=self.job.stage,
                    kind=self.job.template.text_kind, text=text, template=self.job.template.question_id(question),
                    sample_index=sample, request_key=response.key, model=self.client.model,
                    position=position if self.job.template.parser in ("bullets", "list") else None,
                    source="llm" if self.job.template.text_kind == "synonym" else None))
        return final

    def _account(self, response: LLMResponse, parsed: list[Parsed], class_index: int) -> None:
        for p in parsed:
            self.dropped.update(p.dropped)
            self.dropped_per_class.setdefault(class_index, Counter()).update(p.dropped)
        self.prompt_tokens += response.usage.get("prompt_tokens", 0)
        self.completion_tokens += response.usage.get("completion_tokens", 0)
        self.cost_usd = None if self.cost_usd is None or response.cost_usd is None else self.cost_usd + response.cost_usd


def _synonym_counts(classes: ClassList, records: list[dict]) -> dict:
    """Classes whose answers named nothing but the class itself keep only their official name."""
    other = {i: set() for i in range(len(classes))}
    for record in records:
        if record["text"].casefold() != classes.names[record["class_index"]].casefold():
            other[record["class_index"]].add(record["text"].casefold())
    without = [i for i in range(len(classes)) if not other[i]]
    return {"classes_with_other_names": len(classes) - len(without),
            "classes_without_synonyms": [{"class_index": i, "class_name": classes.names[i]} for i in without]}


def with_source_ids(records: list[dict]) -> list[dict]:
    """Names get one record per source: their ids include the source, so they stay unique."""
    for record in records:
        record["id"] = record_id(record["class_index"], record["class_name"], record["stage"],
                                 f"{record.get('source')}\x00{record['text']}")
    return records


def official_name_records(classes: ClassList, stage: str) -> list[dict]:
    return [make_record(class_index=i, class_name=name, stage=stage, kind="synonym", text=name, template="official",
                        sample_index=None, request_key=None, model=None, source="official")
            for i, name in enumerate(classes.names)]


def _class_summary(classes: ClassList) -> dict:
    return {"count": len(classes), "hash": classes.hash, "source": classes.source}


def describe_wordnet(classes: ClassList, store: Store, set_name: str = "wordnet") -> tuple[VersionInfo, list, list]:
    """One dictionary-style description per class from its WordNet gloss; unmatched classes get
    none. Returns the version, the unmatched and the ambiguous matches."""
    wordnet = load_wordnet()
    matches = wordnet.match(classes)
    records = [make_record(class_index=m.class_index, class_name=m.class_name, stage=STAGE, kind="sentence",
                           text=gloss_sentence(m.class_name, m.synset.gloss), template="wordnet/gloss",
                           sample_index=0, request_key=None, model=None, wnid=m.synset.wnid, match=m.method)
               for m in matches if m.synset is not None and m.synset.gloss]
    unmatched = [m for m in matches if m.synset is None]
    ambiguous = [m for m in matches if m.alternatives]
    methods = Counter(m.method for m in matches)
    manifest = {
        "stage": STAGE, "source": "wordnet", "network": False, "needs_api_key": False,
        "model": None, "knowledge_source": wordnet.source, "classes": _class_summary(classes),
        "template": {"name": "wordnet", "ref": "wordnet/gloss", "description": "'{class}: {WordNet gloss}.'"},
        "text_kind": "sentence",
        "counts": {"records": len(records), "classes": len(classes), "classes_without_texts": len(unmatched),
                   "matched_by": dict(methods), "ambiguous": len(ambiguous)},
        "dropped": {reason: 0 for reason in DROP_REASONS},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": 0.0,
        "classes_without_texts": [{"class_index": m.class_index, "class_name": m.class_name, "reason": "no synset"}
                                  for m in unmatched],
        "matching": [m.to_json() for m in matches],
    }
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes), unmatched, ambiguous
