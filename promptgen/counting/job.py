"""count-names: every candidate name of every class, counted in caption files, as a counts set.

The job reads the names (synonyms sets), the corpus (files, their parts), then scans each part
on an engine and journals each finished part in the version's journal (`vN.requests.jsonl`, lines
with `"event": "part"`): `--resume` reopens the version and scans only the parts not journalled.
With `relevance`, the LLM then judges up to N sampled captions per name (stages/relevance.py) in
the same version. The records are name_counts records, one per (class, name), in class order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from promptgen.classes import ClassList
from promptgen.clock import utc_now
from promptgen.counting.corpus import (CorpusError, CorpusFile, Part, clean_error, corpus_sha256, plan_parts,
                                      resolve_inputs, shown_url)
from promptgen.counting.engines import PartResult, ScanJob, check_spark_master, run_embedded, run_spark
from promptgen.counting.matching import RULE, RULE_DESCRIPTION, keep_smallest
from promptgen.errors import PromptgenError
from promptgen.name_counts import COUNTS_TEXT_KIND, count_record
from promptgen.names import Candidate
from promptgen.store import Store, VersionInfo, VersionWriter, class_summary

__all__ = ["CountSettings", "CountPlan", "plan_count", "run_count", "STAGE"]

STAGE = "count-names"


@dataclass
class CountSettings:
    inputs: list[str]
    column: str = "TEXT"
    file_format: str | None = None
    engine: str = "embedded"
    spark_master: str = "local[*]"
    workers: int = 0              # 0: every core
    batch_rows: int = 65_536
    strict: bool = False
    relevance: int = 0            # sampled captions per name for the LLM check (0: none)
    set_name: str = "counts"


@dataclass
class CountPlan:
    classes: ClassList
    candidates: list[list[Candidate]]
    names_from: list[str]
    settings: CountSettings
    files: list[CorpusFile]
    parts: list[Part]
    unreadable_files: dict[str, str]      # url -> why it could not be opened
    names: tuple[str, ...] = ()           # every distinct name, in first-seen order

    @property
    def fingerprint(self) -> dict:
        """What --resume must find unchanged. Not the corpus: each part is journalled under its
        file's fingerprint, so after a file is fixed or removed its parts are scanned again (or
        dropped) and the parts of the files that did not change are reused."""
        return {"classes_hash": self.classes.hash,
                "names_sha256": hashlib.sha256(json.dumps(self.names).encode()).hexdigest(),
                "column": self.settings.column, "matching_rule": RULE, "relevance_samples": self.settings.relevance}

    @cached_property
    def pattern_of(self) -> dict[str, str]:
        """Each name's pattern as the matcher sees it ("" for a name with no letter or digit)."""
        from promptgen.counting.matching import normalise

        return dict(zip(self.names, normalise(list(self.names)).to_pylist()))

    @property
    def workers(self) -> int:
        return self.settings.workers or os.cpu_count() or 1


def plan_count(classes: ClassList, candidates: list[list[Candidate]], names_from: list[str],
               settings: CountSettings) -> CountPlan:
    """The files and parts to scan. A file that cannot be opened is set aside (or, with strict, an
    error); a missing column is always an error, naming the columns the file has."""
    files = resolve_inputs(settings.inputs, settings.file_format)
    parts, unreadable = [], {}
    for file in files:
        try:
            parts += plan_parts(file, settings.column)
        except CorpusError as exc:
            if settings.strict:
                raise PromptgenError(f"cannot read {file.shown}: {clean_error(str(exc), file)}",
                                     "fix or remove the file, or drop --strict "
                                     "to skip unreadable files (they are counted in the manifest)") from None
            unreadable[file.url] = clean_error(str(exc), file)
    names = tuple(dict.fromkeys(cand.name for per_class in candidates for cand in per_class))
    return CountPlan(classes, candidates, names_from, settings, files, parts, unreadable, names)


@dataclass
class _Progress:
    results: dict[str, PartResult] = field(default_factory=dict)
    resumed: int = 0


def run_count(plan: CountPlan, store: Store, *, resume: bool = False, resume_version: int | None = None,
              client: Any = None, template: Any = None, draw: int = 0, answer_retries: int = 2,
              on_part: Callable[[PartResult, int, int], None] | None = None) -> tuple[VersionInfo, dict]:
    """Count into a new version of the counts set (or the unfinished one, with `resume`); returns
    the version and a summary (rows, parts, relevance) for the command to print."""
    settings, dataset = plan.settings, plan.classes.dataset
    if settings.engine == "spark":
        check_spark_master(settings.spark_master)  # before a version is reserved: an unreachable master leaves none
    fingerprint = {**plan.fingerprint, **_relevance_fingerprint(plan, client, template, draw)}
    if resume:
        writer = store.resume_version(dataset, settings.set_name, resume_version, fingerprint)
    else:
        writer = store.new_version(dataset, settings.set_name, _header(plan, client, template, fingerprint),
                                   classes=plan.classes)
    started = time.perf_counter()
    with writer:
        progress = _Progress()
        for entry in writer.read_journal():
            if entry.get("event") == "part" and not entry.get("error"):  # a part that failed is read again
                progress.results[entry["part"]] = PartResult.from_journal(entry)
        known = {part.key for part in plan.parts}
        progress.results = {k: r for k, r in progress.results.items() if k in known}
        progress.resumed = len(progress.results)
        todo = [part for part in plan.parts if part.key not in progress.results]
        drawn: dict[str, list] = {}
        for result in progress.results.values():
            _keep_drawable(result, drawn, settings.relevance)

        def record(result: PartResult) -> None:
            _keep_drawable(result, drawn, settings.relevance)
            writer.append(result.to_journal())
            progress.results[result.key] = result
            if on_part is not None:
                on_part(result, len(progress.results), len(plan.parts))
            if result.error and settings.strict:
                raise PromptgenError(f"cannot read {result.key.split('#')[0]}: {result.error}",
                                     "fix or remove the file, or drop --strict to skip unreadable files; "
                                     "--resume continues without rescanning the parts already counted")

        job = ScanJob(plan.names, settings.column, settings.batch_rows, settings.relevance)
        parallelism = plan.workers
        if settings.engine == "spark":
            parallelism = run_spark(todo, job, settings.spark_master, record) or parallelism
        else:
            parallelism = 1 if plan.workers <= 1 or len(todo) <= 1 else min(plan.workers, len(todo))
            run_embedded(todo, job, plan.workers, record)
        judged, relevance_output = None, None
        if settings.relevance and client is not None:  # `drawn` now holds the N smallest of every part
            judged, relevance_output = _ask_relevance(plan, writer, client, template, drawn, draw, answer_retries)
        seconds = time.perf_counter() - started
        records = _records(plan, _totals(progress.results), judged)
        manifest, summary = _final_manifest(plan, writer, progress, parallelism, seconds, relevance_output)
        info = writer.finish(records, manifest)
    return info, summary


def _relevance_fingerprint(plan: CountPlan, client: Any, template: Any, draw: int) -> dict:
    """What the relevance answers depend on (the stage's own fingerprint): a --resume with another
    model, template or draw would mix two models' judgements under one name in the manifest."""
    if not plan.settings.relevance or client is None or template is None:
        return {}
    from promptgen.stages.relevance import RelevanceJob

    return RelevanceJob(plan.classes, template, {}, draw=draw).fingerprint(client)


def _header(plan: CountPlan, client: Any, template: Any, fingerprint: dict) -> dict:
    return {"stage": STAGE, "source": "captions", "network": client is not None,
            "needs_api_key": bool(client is not None and (client.api_key_env is not None or client.api_base is None)),
            "job": fingerprint, "classes": class_summary(plan.classes),
            "model": client.describe() if client is not None else None,
            **({"template": template.manifest_entry(), "sampling": template.sampling} if template is not None else {}),
            "text_kind": COUNTS_TEXT_KIND, "knowledge_source": "names from " + ", ".join(plan.names_from)}


def _keep_drawable(result: PartResult, drawn: dict[str, list], keep: int) -> None:
    """Drop from a part's samples those outside the running N smallest of their name: they can
    never be drawn, and the journal and memory would otherwise grow with the corpus."""
    if not result.samples:
        return
    kept = {}
    for pattern, samples in result.samples.items():
        drawn[pattern] = keep_smallest(drawn.get(pattern, []) + [tuple(d) for d in samples], keep)
        chosen = set(drawn[pattern])
        kept[pattern] = [d for d in samples if tuple(d) in chosen]
    result.samples = {pattern: samples for pattern, samples in kept.items() if samples}


def _totals(results: dict[str, PartResult]) -> dict[str, int]:
    """Captions per pattern over every part counted."""
    totals: dict[str, int] = {}
    for result in results.values():
        for pattern, n in result.counts.items():
            totals[pattern] = totals.get(pattern, 0) + n
    return totals


def _ask_relevance(plan: CountPlan, writer: VersionWriter, client: Any, template: Any, samples: dict[str, list],
                   draw: int, answer_retries: int) -> tuple[dict, Any]:
    from promptgen.stages.relevance import RelevanceJob
    from promptgen.stages.runner import run_stage

    pattern_of = plan.pattern_of
    asked = {}
    for c, per_class in enumerate(plan.candidates):
        for cand in per_class:
            drawn = samples.get(pattern_of[cand.name] or "", [])
            if drawn:
                asked[(c, cand.name)] = [text for _, text in drawn]
    job = RelevanceJob(plan.classes, template, asked, plan.settings.set_name, draw, answer_retries)
    result = run_stage(job, client, None, writer=writer, description="judging captions")
    state = result.run.state
    return {key: (state.judged.get(key, 0), state.relevant.get(key, 0)) for key in asked}, result


def _records(plan: CountPlan, totals: dict[str, int], judged: dict | None) -> list[dict]:
    pattern_of = plan.pattern_of
    records = []
    for c, per_class in enumerate(plan.candidates):
        for cand in per_class:
            pattern = pattern_of[cand.name]
            count = totals.get(pattern, 0) if pattern else 0
            source = "official" if cand.official else (cand.sources[0] if cand.sources else "set")
            checked = None if judged is None else judged.get((c, cand.name), (0, 0))
            records.append(count_record(class_index=c, class_name=plan.classes.names[c], name=cand.name,
                                        source=source, count=count, stage=STAGE,
                                        judged=None if checked is None else checked[0],
                                        relevant=None if checked is None else checked[1]))
    return records


def _final_manifest(plan: CountPlan, writer: VersionWriter, progress: _Progress, parallelism: int,
                    seconds: float, relevance: Any) -> tuple[dict, dict]:
    settings = plan.settings
    per_file: dict[str, dict] = {}
    for file in plan.files:
        per_file[file.url] = {**file.to_json(), "parts": 0, "rows": 0, "rows_unreadable": 0}
        if file.url in plan.unreadable_files:
            per_file[file.url]["error"] = plan.unreadable_files[file.url]
    for part in plan.parts:
        entry = per_file[part.file.url]
        entry["parts"] += 1
        result = progress.results[part.key]
        entry["rows"] += result.rows
        entry["rows_unreadable"] += result.rows_unreadable
        if result.error:
            entry["error"] = result.error
    files = list(per_file.values())
    corpus = {"inputs": [shown_url(given) for given in settings.inputs], "column": settings.column, "files": files,
              "files_unreadable": sum(1 for f in files if f.get("error")),
              "rows_scanned": sum(f["rows"] for f in files), "rows_unreadable": sum(f["rows_unreadable"] for f in files),
              "sha256": corpus_sha256(plan.files)}
    counting = {"engine": settings.engine, **({"spark_master": settings.spark_master} if settings.engine == "spark" else {}),
                "workers": parallelism, "rule": RULE, "rule_description": RULE_DESCRIPTION, "names": len(plan.names),
                "patterns": len({p for p in plan.pattern_of.values() if p}), "parts": len(plan.parts),
                "parts_this_run": len(plan.parts) - progress.resumed, "parts_resumed": progress.resumed,
                "seconds": round(sum(r.seconds for r in progress.results.values()), 3),
                "seconds_this_run": round(seconds, 3), "strict": settings.strict}
    failed_parts = sum(1 for result in progress.results.values() if result.error) + len(plan.unreadable_files)
    status = "partial" if failed_parts else "complete"  # --resume reads the failed parts again
    usage: dict = {}
    failures: list = []
    sections: dict = {}
    if relevance is not None:
        run, output = relevance.run, relevance.output
        status = "partial" if failed_parts or output.status != "complete" else "complete"
        sections = output.before
        usage = {**run.usage.manifest_entry(), "cost_usd_this_run": run.stats.cost_usd if run.stats.sent else 0.0,
                 **run.batches.manifest_entry(run.client)}
        failures = output.failures
        sections["relevance"] = {"samples_per_name": settings.relevance, **sections["relevance"]}
    counts = {"records": sum(len(per_class) for per_class in plan.candidates), "classes": len(plan.classes)}
    manifest = {**writer.info.manifest, "status": status, "counts": counts, "corpus": corpus, "counting": counting,
                **sections, **usage, **({"failures": failures} if failures else {})}
    summary = {"rows_scanned": corpus["rows_scanned"], "rows_unreadable": corpus["rows_unreadable"],
               "files": len(files), "files_unreadable": corpus["files_unreadable"], **counting,
               "finished": utc_now()}
    return manifest, summary
