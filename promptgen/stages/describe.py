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
from dataclasses import dataclass

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.llm.client import LLMClient, LLMRequest, LLMResponse
from promptgen.parsing import DROP_REASONS, Parsed, parse_answer
from promptgen.redact import redact
from promptgen.sources.wordnet import gloss_sentence, load_wordnet
from promptgen.stages.runner import LLMStage, StageOutput, StageResult, StageRun, Verdict, run_stage
from promptgen.store import Store, VersionInfo, class_summary, dedupe_records, make_record, offline_manifest
from promptgen.templates import QueryTemplate

__all__ = ["DescribeJob", "DescribeResult", "plan_requests", "run_describe", "describe_wordnet"]

STAGE = "describe"
DescribeResult = StageResult


@dataclass
class DescribeJob(LLMStage):
    classes: ClassList
    template: QueryTemplate
    set_name: str
    draw: int = 0
    answer_retries: int = 2
    dedupe: bool = False    # drop repeated texts of a class (CuPL and DCLIP count every repeat)
    stage: str = STAGE

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
        return {"classes_hash": self.classes.hash, "template": self.template.ref, "template_sha256": self.template.sha256,
                "model": client.model, "api_base": client.describe()["api_base"], "draw": self.draw,
                "split_samples": client.split_samples}

    def header(self, client: LLMClient) -> dict:
        return {"template": self.template.manifest_entry(), "sampling": self.template.sampling,
                "text_kind": self.template.text_kind, "answer_retries": self.answer_retries, "dedupe": self.dedupe}

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        """Canonical order: class, question, sample. Tags carry (class index, question index)."""
        requests = []
        for class_index, name in enumerate(self.classes.names):
            for question_index, question in enumerate(self.template.questions):
                messages = self.template.render(question, name)
                requests += client.plan(messages, self.template.sampling, draw=self.draw,
                                        tag=(class_index, question_index))
        return requests

    def journal_fields(self, request: LLMRequest) -> dict:
        class_index, question_index = request.tag
        return {"class_index": class_index, "question": self.template.questions[question_index].id,
                "sample_index": request.sample_index}

    def parse(self, request: LLMRequest, response: LLMResponse) -> list[Parsed]:
        continues = self.template.parser == "bullets" and request.message_list[-1]["content"].rstrip().endswith("-")
        return [parse_answer(choice.get("text"), self.template.parser, append=self.template.append,
                             max_chars=self.template.max_chars, continues_bullet=continues)
                for choice in response.choices]

    def on_answer(self, run: StageRun, request: LLMRequest, response: LLMResponse) -> Verdict:
        parsed = self.parse(request, response)
        run.parsed[response.key] = parsed
        if any(p.texts for p in parsed):
            return Verdict(True, follow_ups=_top_ups(run.client, request, response))
        return Verdict(False, follow_ups=run.reask(request) or _top_ups(run.client, request, response))

    def record_fields(self) -> dict:
        """Fields every record of the stage carries besides the shared ones."""
        return {}

    def final_records(self, records: list[dict]) -> tuple[list[dict], int]:
        """The records the version keeps, and how many were dropped as repeats. Descriptions keep
        every repeat unless asked, as the methods count them."""
        return dedupe_records(records) if self.dedupe else (records, 0)

    def counted(self, record: dict) -> bool:
        """Whether a record counts as a text the model gave its class."""
        return True

    def extra_sections(self, records: list[dict]) -> dict:
        """Manifest sections of the stage's own, written before the failures."""
        return {}

    def finish(self, run: StageRun) -> StageOutput:
        collected = _Collector(self, run)
        for request in run.requests:
            collected.add(request)
        records = collected.records
        kept, duplicates = self.final_records(records)
        collected.dropped["duplicate"] += duplicates
        if duplicates:
            repeated = Counter(r["class_index"] for r in records)
            repeated.subtract(Counter(r["class_index"] for r in kept))
            for class_index, n in repeated.items():
                if n:
                    collected.dropped_per_class.setdefault(class_index, Counter())["duplicate"] += n
        per_class = Counter(r["class_index"] for r in kept if self.counted(r))
        classes = range(len(self.classes))
        empty_classes = [i for i in classes if per_class[i] == 0]
        transport_failures = [f for f in collected.failures if f["reason"] == "request failed"]
        counts = {"records": len(kept), "classes": len(self.classes), "classes_without_texts": len(empty_classes),
                  "texts_per_class_min": min(per_class[i] for i in classes),
                  "texts_per_class_max": max(per_class.values(), default=0),
                  "requests": len(run.answers) + len(run.failed), "reasked_after_unusable_answer": collected.reasked,
                  "samples_topped_up": collected.topped_up,
                  "requests_sent_this_run": run.stats.sent, "cache_hits_this_run": run.stats.cache_hits,
                  "failed_requests": len(transport_failures),
                  "unusable_answers": len(collected.failures) - len(transport_failures)}
        before = {"dropped": {reason: collected.dropped.get(reason, 0) for reason in DROP_REASONS},
                  "dropped_per_class": {str(c): {reason: n for reason, n in sorted(counts.items()) if n}
                                        for c, counts in sorted(collected.dropped_per_class.items())
                                        if sum(counts.values())}}
        after = {"classes_without_texts": [{"class_index": i, "class_name": self.classes.names[i]} for i in empty_classes],
                 **self.extra_sections(kept), "failures": collected.failures}
        return StageOutput(kept, "partial" if transport_failures else "complete", counts, before, after,
                           collected.failures)


def plan_requests(job: DescribeJob, client: LLMClient) -> list[LLMRequest]:
    return job.plan_requests(client)


def run_describe(job: DescribeJob, client: LLMClient, store: Store, *, resume: bool = False,
                 resume_version: int | None = None) -> StageResult:
    return run_stage(job, client, store, resume=resume, resume_version=resume_version)


def _top_ups(client: LLMClient, request: LLMRequest, response: LLMResponse) -> list[LLMRequest]:
    """A provider that ignores `n` (some OpenAI-compatible servers do) answers once: ask for the
    missing samples one by one rather than keep a tenth of the texts."""
    if request.sample_index is not None or len(response.choices) >= request.n:
        return []
    return client.samples(request.message_list, request.base_dict, range(len(response.choices), request.n),
                          draw=request.draw, tag=request.tag)


class _Collector:
    """Walks the plan in canonical order (class, question, sample) and turns the final answer of
    each request (after re-asks, plus any top-ups) into records, drop counts and failures."""

    def __init__(self, job: DescribeJob, run: StageRun) -> None:
        self.job, self.run, self.client = job, run, run.client
        self.records: list[dict] = []
        self.dropped: Counter = Counter()
        self.dropped_per_class: dict[int, Counter] = {}
        self.failures: list[dict] = []
        self.reasked = self.topped_up = 0

    def add(self, request: LLMRequest) -> None:
        final = self._resolve(request)
        if final is not None:
            for top_up in _top_ups(self.client, final[0], final[1]):
                self.topped_up += 1
                self._resolve(top_up)

    def _resolve(self, request: LLMRequest) -> tuple[LLMRequest, LLMResponse, list[Parsed]] | None:
        final, current = None, request
        while current.key in self.run.answers:
            answered_request, response = self.run.answers[current.key]
            final = (answered_request, response, self.run.parsed[current.key])
            self._count_drops(final[2], request.tag[0])
            if any(p.texts for p in final[2]) or current.attempt >= self.job.answer_retries:
                break
            current = self.client.retry(current)
            self.reasked += 1
        class_index, question_index = request.tag
        question = self.job.template.questions[question_index]
        where = {"class_index": class_index, "class_name": self.job.classes.names[class_index],
                 "question": self.job.template.question_id(question), "sample_index": request.sample_index}
        if current.key not in self.run.answers:
            error = self.run.failed.get(current.key, "not answered")
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
                    **self.job.record_fields()))
        return final

    def _count_drops(self, parsed: list[Parsed], class_index: int) -> None:
        for p in parsed:
            self.dropped.update(p.dropped)
            self.dropped_per_class.setdefault(class_index, Counter()).update(p.dropped)


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
    manifest = offline_manifest(STAGE, "wordnet", {
        "knowledge_source": wordnet.source, "classes": class_summary(classes),
        "template": {"name": "wordnet", "ref": "wordnet/gloss", "description": "'{class}: {WordNet gloss}.'"},
        "text_kind": "sentence",
        "counts": {"records": len(records), "classes": len(classes), "classes_without_texts": len(unmatched),
                   "matched_by": dict(methods), "ambiguous": len(ambiguous)},
        "dropped": {reason: 0 for reason in DROP_REASONS},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": 0.0,
        "classes_without_texts": [{"class_index": m.class_index, "class_name": m.class_name, "reason": "no synset"}
                                  for m in unmatched],
        "matching": [m.to_json() for m in matches],
    })
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes), unmatched, ambiguous
