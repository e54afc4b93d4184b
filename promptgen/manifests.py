"""The manifest of a prompt-set version (`vN.manifest.json`), typed.

One model with optional sections: the header every version gets when it is reserved
(`Store._reserve`), the fields `VersionWriter.finish` adds, and the sections each producer writes:
describe and synonyms from an LLM (stages/describe.py), from WordNet (describe_wordnet,
synonyms_wordnet), differentiate (stages/differentiate.py) and the imports (formats/). Sections
whose keys promptgen fixes are models that refuse unknown keys; what is open by nature stays a
dict: the sampling parameters a template chooses, the initial head a pair list was found with.
Only the header is required: a section's keys are all optional (a producer, or an earlier version
of it, writes the ones it knows), but a key no producer writes is refused. The format version is
the manifest's `format`, `MANIFEST_FORMAT`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from promptgen.errors import PromptgenError
from promptgen.file_formats import MANIFEST_FORMAT
from promptgen.typed_files import FileModel, Number, refusal

__all__ = ["MANIFEST_FORMAT", "Manifest", "check_manifest", "manifest_text"]



class ClassesSummary(FileModel):
    count: int | None = None
    hash: str | None = None
    source: str | None = None


class JobFingerprint(FileModel):
    """What must not change between a run and its --resume (DescribeJob / DifferentiateJob.fingerprint)."""

    classes_hash: str | None = None
    template: str | None = None
    template_sha256: str | None = None
    model: str | None = None
    api_base: str | None = None
    draw: int | None = None
    split_samples: bool | None = None
    pairs_sha256: str | None = None
    structured: str | None = None
    answer_retries: int | None = None
    repair: bool | None = None
    pair_draws: dict[str, int] | None = None
    names_sha256: str | None = None       # count-names: the names counted, the column, the rule
    corpus_sha256: str | None = None      # count-names before its parts were resumable after a corpus change
    column: str | None = None
    matching_rule: str | None = None
    relevance_samples: int | None = None


class BatchSettings(FileModel):
    poll_s: Number | None = None
    retry: str | None = None


class ModelInfo(FileModel):
    """LLMClient.describe()."""

    model: str | None = None
    api_base: str | None = None
    provider: str | None = None
    transport: str | None = None
    samples: str | None = None
    timeout_s: Number | None = None
    max_attempts: int | None = None
    concurrency: int | None = None
    batch: BatchSettings | None = None


class TemplateEntry(FileModel):
    """QueryTemplate.manifest_entry(), or the wordnet sources' description of what they write."""

    name: str | None = None
    ref: str | None = None
    version: int | None = None
    sha256: str | None = None
    kind: str | None = None
    questions: list[str] | None = None
    parser: str | None = None
    path: str | None = None
    description: str | None = None


class Counts(FileModel):
    records: int | None = None
    classes: int | None = None
    classes_without_texts: int | None = None
    texts_per_class_min: int | None = None
    texts_per_class_max: int | None = None
    requests: int | None = None
    reasked_after_unusable_answer: int | None = None
    samples_topped_up: int | None = None
    requests_sent_this_run: int | None = None
    cache_hits_this_run: int | None = None
    failed_requests: int | None = None
    unusable_answers: int | None = None
    classes_in_pairs: int | None = None
    attributes: int | None = None
    repairs: int | None = None
    classes_with_other_names: int | None = None
    unmatched: int | None = None
    matched_by: dict[str, int] | None = None
    ambiguous: int | None = None
    answers_unusable_retried: int | None = None  # the first release's name of reasked_after_unusable_answer


class Dropped(FileModel):
    """Texts dropped per reason (parsing.DROP_REASONS); per class only the reasons that dropped any."""

    empty: int | None = None
    refusal: int | None = None
    unparsed: int | None = None
    too_long: int | None = None
    duplicate: int | None = None


class Rejected(FileModel):
    """Pair sentences rejected per reason (parsing.PAIR_REJECT_REASONS)."""

    one_sided: int | None = None
    identical: int | None = None
    swapped: int | None = None
    names_other_class: int | None = None
    about_other_class: int | None = None
    refusal: int | None = None
    too_long: int | None = None
    duplicate: int | None = None


class Tokens(FileModel):
    prompt: int | None = None
    completion: int | None = None


class ClassRef(FileModel):
    class_index: int | None = None
    class_name: str | None = None
    reason: str | None = None


class Failure(FileModel):
    """A request of describe/synonyms that ended without a usable answer."""

    class_index: int | None = None
    class_name: str | None = None
    question: str | None = None
    sample_index: int | None = None
    reason: str | None = None
    error: str | None = None
    attempts: int | None = None


class FailedPair(FileModel):
    pair: str | None = None
    classes: list[int] | None = None
    class_names: list[str] | None = None
    reason: str | None = None
    attempts: int | None = None


class Synset(FileModel):
    wnid: str | None = None
    lemmas: list[str] | None = None
    gloss: str | None = None


class WordnetMatch(FileModel):
    """sources.wordnet.Match.to_json()."""

    class_index: int | None = None
    class_name: str | None = None
    method: str | None = None
    wnid: str | None = None
    lemmas: list[str] | None = None
    gloss: str | None = None
    alternatives: list[Synset] | None = None


class RenamedKey(FileModel):
    class_index: int | None = None
    key: str | None = None
    class_name: str | None = None


class DifferingName(FileModel):
    class_index: int | None = None
    fudd: str | None = None
    ours: str | None = None


class RealRuleDiffer(FileModel):
    """A class whose published most_common_name REAL's rule does not give from the file's counts."""

    class_index: int | None = None
    class_name: str | None = None
    published: str | None = None
    rule: str | None = None


class RealRuleCheck(FileModel):
    """real-metrics import: how often REAL's rule on the imported counts gives the file's most_common_name."""

    rule: str | None = None
    compared: str | None = None
    checked: int | None = None
    reproduced: int | None = None
    differs: list[RealRuleDiffer] | None = None


class ImportInfo(FileModel):
    """What an import read (formats/: import_prompt_file, import_fudd_file, import_real_metrics)."""

    format: str | None = None
    file: str | None = None
    sha256: str | None = None
    match: str | None = None
    dedupe: bool | None = None
    matched_keys: int | None = None
    unmatched_keys: list[str] | None = None
    missing_classes: list[str] | None = None
    empty_keys: list[str] | None = None
    duplicated_keys: list[str] | None = None
    matched_with_other_name: list[RenamedKey] | None = None
    pairs: int | None = None
    class_names: list[str] | None = None
    class_names_differ: list[DifferingName] | None = None
    bad_keys: list[str] | None = None
    pairs_without_usable_attributes: list[str] | None = None
    official_names_absent: list[ClassRef] | None = None   # real-metrics: official names REAL counts as 0
    real_rule: RealRuleCheck | None = None


class PairsInfo(FileModel):
    """The pair list (clip.pairs.PairPlan.summary()) and, for differentiate, what became of its pairs."""

    method: str | None = None
    k: int | None = None
    partners: int | None = None
    min_count: Number | None = None
    max_pairs: int | None = None
    classes: int | None = None
    pairs: int | None = None
    all_pairs: int | None = None
    pairs_sha256: str | None = None
    candidates: int | None = None
    dropped_below_min_count: int | None = None
    dropped_over_max_pairs: int | None = None
    images: int | None = None
    pair_instances: int | None = None
    labelled_images: int | None = None
    topk_recall: Number | None = None
    head: dict[str, Any] | None = None  # the initial head's own description (a head sidecar's fields)
    answered: int | None = None
    salvaged: int | None = None
    failed: int | None = None
    queried: int | None = None
    reused: int | None = None
    unanswered: int | None = None
    reasked_pairs: int | None = None


class CorpusFile(FileModel):
    """One file a count read (counting.corpus.CorpusFile.to_json() plus what the scan found)."""

    path: str | None = None
    format: str | None = None
    size: int | None = None
    fingerprint: str | None = None
    parts: int | None = None
    rows: int | None = None
    rows_unreadable: int | None = None
    error: str | None = None


class CorpusInfo(FileModel):
    """The captions a counts set was counted in."""

    inputs: list[str] | None = None
    column: str | None = None
    files: list[CorpusFile] | None = None
    files_unreadable: int | None = None
    rows_scanned: int | None = None
    rows_unreadable: int | None = None
    sha256: str | None = None


class CountingInfo(FileModel):
    """How a counts set was counted (counting/)."""

    engine: str | None = None
    spark_master: str | None = None
    workers: int | None = None
    rule: str | None = None
    rule_description: str | None = None
    names: int | None = None
    patterns: int | None = None
    parts: int | None = None
    parts_this_run: int | None = None
    parts_resumed: int | None = None
    seconds: Number | None = None            # scanning time summed over every part (worker seconds), all runs
    seconds_this_run: Number | None = None   # wall time of the run that finished the set, relevance included
    strict: bool | None = None


class RelevanceInfo(FileModel):
    """The LLM's check that sampled matching captions are about the class (REAL's relevance ratio)."""

    samples_per_name: int | None = None
    names_checked: int | None = None
    judged: int | None = None
    relevant: int | None = None
    unanswered: int | None = None
    unusable: int | None = None


class Manifest(FileModel):
    # the header, written when the version is reserved
    format: str
    dataset: str
    set: str
    version: int
    status: str
    created: str
    promptgen_version: str
    parent: str | None
    # what made the version
    stage: str | None = None
    source: str | None = None
    network: bool | None = None
    needs_api_key: bool | None = None
    job: JobFingerprint | None = None
    classes: ClassesSummary | None = None
    model: ModelInfo | None = None
    knowledge_source: str | None = None
    template: TemplateEntry | None = None
    sampling: dict[str, Any] | None = None  # the template's own sampling parameters
    text_kind: str | None = None
    answer_retries: int | None = None
    dedupe: bool | None = None
    repair: bool | None = None
    import_: ImportInfo | None = Field(None, alias="import")  # a Python keyword: named import_ here
    pairs: PairsInfo | None = None
    pairs_file: str | None = None
    corpus: CorpusInfo | None = None
    counting: CountingInfo | None = None
    relevance: RelevanceInfo | None = None
    filter_attributes: bool | None = None
    requests_planned: int | None = None
    # what came of it
    counts: Counts | None = None
    dropped: Dropped | None = None
    dropped_per_class: dict[str, Dropped] | None = None
    rejected: Rejected | None = None
    tokens: Tokens | None = None
    cost_usd: Number | None = None
    cost_usd_this_run: Number | None = None
    batches: list[str] | None = None
    classes_without_texts: list[ClassRef] | None = None
    classes_with_other_names: int | None = None
    classes_without_synonyms: list[ClassRef] | None = None
    matching: list[WordnetMatch] | None = None
    failures: list[Failure] | None = None
    failed_pairs: list[FailedPair] | None = None
    license: str | None = None
    note: str | None = None
    # written when the version is finished
    finished: str | None = None
    records_file: str | None = None
    records_sha256: str | None = None


_FIX = "manifests are written by promptgen: restore the file from a copy, or remove the version and write it again"


def check_manifest(data: dict, path: Path | str) -> Manifest:
    """The manifest as a model; a manifest of another format, or with an unknown key, a missing
    one or a value of the wrong type is refused, naming the file and the key."""
    if data.get("format") != MANIFEST_FORMAT:
        raise PromptgenError(f"{path} is a manifest of format {data.get('format')!r}; this promptgen reads "
                             f"{MANIFEST_FORMAT!r}",
                             "read it with the promptgen version that wrote it, or write the set again with this one")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise refusal(path, "prompt-set manifest", exc, Manifest, _FIX) from None


def manifest_text(manifest: dict, path: Path | str) -> str:
    """The manifest as written (indented JSON), after checking that what lands on disk reads back."""
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    check_manifest(json.loads(text), path)
    return text
