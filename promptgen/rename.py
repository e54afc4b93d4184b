"""Choosing each class's most recognisable name (REAL-Prompt, docs/methods.md, real).

Candidates come from synonyms sets and/or a counts set (the official name always among them).
Optional filters drop a candidate that another class also goes by (`ambiguous`), whose words are
all inside the official name's ("honda" for "honda accord", `subset`), or whose "a photo of a
{name}." is nearer another class's "a photo of a {class}." than its own (`clip`). A named scorer
rates the rest and the best wins, the official name on ties:

- `first`: the official name (the baseline);
- `counts`: how many captions mention the name (REAL's own scorer): a counts set (`count-names`, or
  REAL's published metrics file imported with `import --format real-metrics`) or the metrics file;
- `frequency`: wordfreq's Zipf frequency of the name in English, which combines the words of a
  multi-word name (an offline stand-in for REAL's caption counts);
- `clip`: the self-consistency margin, cosine to its own class's prompt minus the best other;
- `llm`: the commonness an LLM gives each name (1-10), asked once per class.

The result keeps every candidate's score and verdict, so a reader can see why a name won.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from promptgen.classes import ClassList, loose_name
from promptgen.errors import PromptgenError
from promptgen.names import Candidate, add_name
from promptgen.parsing import name_pattern
from promptgen.templates import indefinite_article, load_template

__all__ = ["SCORERS", "FILTERS", "register_scorer", "list_scorers", "choose_names", "filter_candidates",
           "rating_job", "ScoreContext", "load_counts_file", "real_tokens", "is_subset_name",
           "load_rename_file", "RenameResult", "replace_name", "RENAME_FORMAT", "read_real_metrics",
           "real_metrics_counts", "real_official_count", "counted_candidates", "count_lookup", "real_clean",
           "FREQUENCY_MARGIN", "default_margin"]

RENAME_FORMAT = "promptgen.rename/1"
FILTERS = ("ambiguous", "subset", "clip")
# The frequency scorer's default margin (ours; Zipf units, 4.25 = about 18,000 times as frequent in
# wordfreq). Measured on ImageNet against REAL's LAION-400M and LAION-2B choices (benchmarks/README.md,
# rename agreement), wordfreq's renames agree with REAL less often than the official names at every
# margin below it (at 0: 71.6 % against 87.0 %); 4.25 is the smallest margin of the sweep that agrees
# at least as often, on both corpora. Renaming offline is then kept for overwhelming differences.
FREQUENCY_MARGIN = 4.25
CLIP_TEMPLATE = "a photo of a {c}."


@dataclass
class ScoreContext:
    classes: ClassList
    candidates: list[list[Candidate]]
    encoder: Any = None          # a TextEncoder, for the clip filter and scorer
    client: Any = None           # an LLMClient, for the llm scorer
    root: Any = None
    draw: int = 0
    answer_retries: int = 2
    report: dict = field(default_factory=dict)   # what a scorer wants the reader to know (llm: model, failures)
    counts: list[dict[str, float]] | None = None  # caption counts per class and name (the counts scorer)
    _margins: list[list[float]] | None = None

    def margins(self) -> list[list[float]]:
        """Per candidate: cos(e(photo of name), e(photo of own class)) - max over other classes."""
        if self._margins is None:
            if self.encoder is None:
                raise PromptgenError("the clip filter and scorer need a CLIP model",
                                     "give --clip-model/--pretrained (the tiny config works for a dry look)")
            official = self.encoder.encode_normalized([CLIP_TEMPLATE.replace("{c}", c) for c in self.classes.names])
            flat = [CLIP_TEMPLATE.replace("{c}", cand.name) for per_class in self.candidates for cand in per_class]
            similarity = self.encoder.encode_normalized(flat) @ official.T
            margins, row = [], 0
            for c, per_class in enumerate(self.candidates):
                own = []
                for _ in per_class:
                    values = similarity[row].clone()
                    mine = float(values[c])
                    values[c] = -2.0
                    own.append(mine - float(values.max()) if len(values) > 1 else mine)
                    row += 1
                margins.append(own)
            self._margins = margins
        return self._margins


@dataclass
class Scorer:
    name: str
    score: Callable[[ScoreContext], list[list[float]]]
    summary: str


SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str, summary: str) -> Callable:
    def decorator(function: Callable) -> Callable:
        SCORERS[name] = Scorer(name, function, summary)
        return function
    return decorator


def list_scorers() -> list[str]:
    return sorted(SCORERS)


def default_margin(scorer: str) -> float:
    """The margin `rename` and the real head use when none is given: FREQUENCY_MARGIN for the
    frequency scorer (ours, measured), 0 for the others (REAL's rule has none; the scales differ)."""
    return FREQUENCY_MARGIN if scorer == "frequency" else 0.0


@register_scorer("first", "the official name (baseline)")
def _first(ctx: ScoreContext) -> list[list[float]]:
    return [[1.0 if cand.official else 0.0 for cand in per_class] for per_class in ctx.candidates]


@register_scorer("frequency", "Zipf word frequency of the name in English (wordfreq), words combined")
def _frequency(ctx: ScoreContext) -> list[list[float]]:
    try:
        from wordfreq import zipf_frequency
    except ImportError:  # pragma: no cover - a dependency of promptgen
        raise PromptgenError("the frequency scorer needs the wordfreq package", "pip install wordfreq") from None
    return [[float(zipf_frequency(cand.name, "en")) for cand in per_class] for per_class in ctx.candidates]


@register_scorer("counts", "caption counts of each name (a counts set, --counts SET; or REAL's metrics file)")
def _counts(ctx: ScoreContext) -> list[list[float]]:
    if ctx.counts is None:
        raise PromptgenError("the counts scorer needs caption counts",
                             f"give --counts SET (a counts set of {ctx.classes.dataset}) or counts=FILE (REAL's "
                             "metrics JSON)")
    # the official name is looked up as written, else cleaned (REAL's find_most_common_name); counts
    # made by counted_candidates already hold the official name's count under the class's own name
    return [[float(counts.get(cand.name.casefold(), counts.get(real_clean(cand.name), 0.0) if cand.official else 0.0))
             for cand in per_class] for per_class, counts in zip(ctx.candidates, ctx.counts)]


REAL_METRICS_LAYOUT = ('{"0": {"name": "official name", "alternates": {"name": count, ...}, ...}, "1": ...} '
                       "(REAL's analysis/laion/DATASET/metrics-*.json)")


def read_real_metrics(path: Path, classes: ClassList) -> list[dict]:
    """The entries of REAL's metrics JSON in label order ({"0": {"name": official, "alternates":
    {name: count}, "most_common_name": ...}, ...}; the keys are label indices, in any order in the
    file). The official names must be the classes' own (compared loosely), so counts never land on
    the wrong class."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PromptgenError(f"cannot read counts file {path} ({exc.strerror or exc})",
                             "give the path of REAL's metrics-*.json") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PromptgenError(f"{path} is not valid JSON ({exc})", f"give REAL's metrics file: {REAL_METRICS_LAYOUT}") \
            from None
    if not isinstance(data, dict) or not data:
        raise PromptgenError(f"{path} is not a REAL metrics file (not a JSON object of classes)",
                             f"REAL's layout: {REAL_METRICS_LAYOUT}")
    bad = [key for key in data if not (key.isascii() and key.isdigit())]
    if bad:
        raise PromptgenError(f"{path}: the keys {', '.join(map(repr, bad[:5]))} are not label indices",
                             f"REAL's layout: {REAL_METRICS_LAYOUT}")
    for key, entry in data.items():
        problem = _entry_problem(entry)
        if problem:
            raise PromptgenError(f"{path}: class {key} {problem}", f"REAL's layout: {REAL_METRICS_LAYOUT}")
    indices = sorted(int(key) for key in data)
    if len(indices) != len(classes):
        raise PromptgenError(f"{path} has counts for {len(indices)} classes, {classes.dataset} has {len(classes)}",
                             "use the counts file of this dataset")
    if indices != list(range(len(classes))):  # "01" and "1" are one label twice
        missing = sorted(set(range(len(classes))) - set(indices))
        raise PromptgenError(f"{path}: the keys are not the label indices 0-{len(classes) - 1} once each (missing: "
                             f"{', '.join(map(str, missing[:5]))})", "use the counts file of this dataset, keyed by "
                             "label index")
    entries = [data[key] for key in sorted(data, key=int)]
    # REAL's walk starts from the official name's count and tests subsets against its words: a
    # class the file names otherwise would be renamed by another rule than REAL's
    wrong = [f"{c}: {e['name']!r} vs {name!r}" for c, (e, name) in enumerate(zip(entries, classes.names))
             if loose_name(e["name"]) != loose_name(name)]
    if wrong:
        raise PromptgenError(f"{path} names {len(wrong)} classes otherwise than {classes.dataset}: "
                             + "; ".join(wrong[:3]), "use the counts file of this dataset, in its label order, or a "
                             "class list with REAL's official names (--classes FILE)")
    return entries


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one class of a REAL metrics file, or None."""
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("name"), str):
        return 'has no "name" (the official name)'
    alternates = entry.get("alternates")
    if not isinstance(alternates, dict):
        return 'has no "alternates" object of name -> caption count'
    for name, count in alternates.items():
        if type(count) is not int or count < 0:  # bool is not a count
            return f"counts {name!r} as {count!r}, not a whole number of captions"
    if "most_common_name" in entry and not isinstance(entry["most_common_name"], str):
        return 'has a "most_common_name" that is not a name'
    return None


def real_official_count(name: str, alternates: dict[str, int]) -> int:
    """The official name's count as REAL looks it up (find_most_common_name L225-228): the name as
    written, else its clean_text form; REAL raises KeyError when neither is there, which we read as
    no caption naming it (0)."""
    return alternates.get(name, alternates.get(real_clean(name), 0))


def real_metrics_counts(entries: list[dict], classes: ClassList) -> list[list[tuple[str, int]]]:
    """Each class's names and counts from REAL's entries: the class's own name first with REAL's
    lookup of the official count, then every other name of `alternates` in file order (the order
    REAL's stable sort keeps for ties)."""
    return [[(classes.names[c], real_official_count(e["name"], e["alternates"]))]
            + [(name, count) for name, count in e["alternates"].items() if name != e["name"]]
            for c, e in enumerate(entries)]


def load_counts_file(path: Path, classes: ClassList) -> list[list[tuple[str, float]]]:
    """Names and caption counts per class from REAL's metrics JSON (read_real_metrics), the class's
    own name first with REAL's count of it: the same names and counts as a counts set imported with
    `promptgen import --format real-metrics` from the file."""
    return [[(name, float(count)) for name, count in per_class]
            for per_class in real_metrics_counts(read_real_metrics(path, classes), classes)]


def counted_candidates(classes: ClassList, counted: list[list[tuple[str, float]]]
                       ) -> tuple[list[list[Candidate]], list[dict[str, float]]]:
    """A class's candidates from caption counts (official name first, then the counted names in
    order) and the counts scorer's lookup by name, any case. Spellings that differ only in case are
    one candidate (CLIP's tokenizer lower-cases) with the largest count: as in REAL's walk, where
    only a count above every earlier one matters."""
    candidates = [[Candidate(name, ["official"])] for name in classes.names]
    for per_class, names in zip(candidates, counted):
        for name, _ in names:
            add_name(per_class, name, ["counts"])
    return candidates, count_lookup(counted)


def count_lookup(counted: list[list[tuple[str, float]]]) -> list[dict[str, float]]:
    """Per class: name (case-folded) -> count, the largest where spellings differ only in case."""
    lookup: list[dict[str, float]] = []
    for names in counted:
        by_name: dict[str, float] = {}
        for name, count in names:
            key = name.casefold()
            by_name[key] = max(by_name.get(key, count), count)
        lookup.append(by_name)
    return lookup


@register_scorer("clip", "self-consistency margin: the name's prompt is nearest its own class by how much")
def _clip(ctx: ScoreContext) -> list[list[float]]:
    return ctx.margins()


def rating_job(ctx: ScoreContext) -> Any:
    """The LLM scorer's questions: one per class listing its candidate names (template name-commonness)."""
    from promptgen.stages.name_ratings import NameRatingJob  # heavy: the stage brings the LLM client

    return NameRatingJob(ctx.classes, ctx.candidates, load_template("name-commonness", ctx.root), draw=ctx.draw,
                         answer_retries=ctx.answer_retries)


@register_scorer("llm", "commonness 1-10 rated by an LLM, one question per class (template name-commonness)")
def _llm(ctx: ScoreContext) -> list[list[float]]:
    if ctx.client is None:
        raise PromptgenError("the llm scorer needs a model", "give --model (and --api-base for a local server)")
    from promptgen.stages.name_ratings import rate_names

    rated, report = rate_names(rating_job(ctx), ctx.client)
    ctx.report.update(report)
    return [[float(rated.ratings.get(c, {}).get(cand.name.casefold(), 0.0)) for cand in per_class]
            for c, per_class in enumerate(ctx.candidates)]


def real_clean(name: str) -> str:
    """REAL's clean_text (laion_parser.py): quotes dropped, "-" and "_" as spaces, lower case."""
    return name.strip().replace("'", "").replace('"', "").replace("-", " ").replace("_", " ").replace("  ", " ").lower()


def real_tokens(name: str) -> set[str]:
    """A name's words as REAL compares them (find_most_common_name): cleaned, punctuation dropped."""
    return set(re.sub(r"[^\w\s]", "", real_clean(name)).split())


def is_subset_name(name: str, official: str) -> bool:
    """REAL's rejected names: every word inside the official name's, and not the same words
    reordered ("honda" for "honda accord" is one; "accord honda" is not)."""
    words, official_words = real_tokens(name), real_tokens(official)
    return words <= official_words and words != official_words


def filter_candidates(classes: ClassList, candidates: list[list[Candidate]], filters: tuple[str, ...], *,
                      encoder: Any = None) -> list[list[str | None]]:
    """Why each candidate is dropped (None: kept)."""
    return _filter(ScoreContext(classes, candidates, encoder), filters)


def load_rename_file(path: Path, classes: ClassList) -> list[str]:
    """The chosen names of a file written by `promptgen rename -o` (checked against the classes)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptgenError(f"cannot read rename file {path} ({exc})", "write one with `promptgen rename -o`") from None
    rows = data.get("rows") if isinstance(data, dict) and data.get("format") == RENAME_FORMAT else None
    if not isinstance(rows, list) or [r.get("official") for r in rows] != list(classes.names):
        raise PromptgenError(f"{path} is not a rename file for {classes.dataset}'s classes",
                             f"write one with `promptgen rename {classes.dataset} -o FILE`")
    return [str(r["chosen"]) for r in rows]


def _filter(ctx: ScoreContext, filters: tuple[str, ...]) -> list[list[str | None]]:
    """The reason each candidate is dropped, or None; the official name is never dropped."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise PromptgenError(f"unknown filter(s) {', '.join(unknown)}", f"filters: {', '.join(FILTERS)}")
    owners: dict[str, set[int]] = {}
    for c, per_class in enumerate(ctx.candidates):
        for cand in per_class:
            owners.setdefault(loose_name(cand.name), set()).add(c)
    margins = ctx.margins() if "clip" in filters else None
    verdicts = []
    for c, per_class in enumerate(ctx.candidates):
        official = ctx.classes.names[c]
        row = []
        for k, cand in enumerate(per_class):
            reason = None
            if cand.official:
                pass
            elif "ambiguous" in filters and owners[loose_name(cand.name)] - {c}:
                others = sorted(owners[loose_name(cand.name)] - {c})
                reason = "ambiguous: also " + ", ".join(repr(ctx.classes.names[o]) for o in others[:3])
            elif "subset" in filters and is_subset_name(cand.name, official):
                reason = f"subset of {official!r}"
            elif margins is not None and margins[c][k] <= 0:
                reason = f"clip: nearer another class ({margins[c][k]:+.3f})"
            row.append(reason)
        verdicts.append(row)
    return verdicts


@dataclass
class RenameResult:
    scorer: str
    filters: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)
    scorer_report: dict = field(default_factory=dict)

    @property
    def rejected(self) -> dict[str, int]:
        """Candidates dropped per filter."""
        counts = {name: 0 for name in self.filters}
        for row in self.rows:
            for cand in row["candidates"]:
                if cand["rejected"]:
                    counts[cand["rejected"].split(":")[0].split(" ")[0]] += 1
        return counts

    @property
    def chosen(self) -> list[str]:
        return [row["chosen"] for row in self.rows]

    @property
    def renamed(self) -> list[dict]:
        return [row for row in self.rows if row["renamed"]]

    def to_json(self) -> dict:
        return {"format": RENAME_FORMAT, "scorer": self.scorer, "filters": list(self.filters),
                "classes": len(self.rows), "renamed": len(self.renamed), "rejected": self.rejected,
                **({"scorer_report": self.scorer_report} if self.scorer_report else {}), "rows": self.rows}


def choose_names(classes: ClassList, candidates: list[list[Candidate]], scorer: str = "frequency", *,
                 filters: tuple[str, ...] = ("ambiguous", "subset"), margin: float = 0.0, encoder: Any = None,
                 client: Any = None, root: Any = None, draw: int = 0, answer_retries: int = 2,
                 counts: list[dict[str, float]] | None = None) -> RenameResult:
    """The winning name of each class, with every candidate's score and verdict, by REAL's rule
    (docs/methods.md, real): walk the names by descending score (ties in candidate order); a name
    scoring above the best so far wins, except a subset name (filter `subset`), which is not
    chosen but still raises the best score, so the official name stays when such a name scores
    highest. Names dropped by our filters (`ambiguous`, `clip`) are skipped. With `margin` (ours)
    a name must also beat the official name's score by more than it."""
    if scorer not in SCORERS:
        raise PromptgenError(f"unknown scorer {scorer!r}", f"scorers: {', '.join(list_scorers())}")
    if len(candidates) != len(classes):
        raise PromptgenError(f"{len(candidates)} candidate lists for {len(classes)} classes", "one list per class")
    ctx = ScoreContext(classes, candidates, encoder, client, root, draw, answer_retries, counts=counts)
    verdicts = _filter(ctx, tuple(filters))
    scores = SCORERS[scorer].score(ctx)
    result = RenameResult(scorer, tuple(filters), scorer_report=ctx.report)
    for c, per_class in enumerate(candidates):
        official_score = next(s for cand, s in zip(per_class, scores[c]) if cand.official)
        best, best_score = classes.names[c], official_score
        for k in sorted(range(len(per_class)), key=lambda k: scores[c][k], reverse=True):
            cand, score, reason = per_class[k], scores[c][k], verdicts[c][k]
            if cand.official or score <= best_score or (reason is not None and not reason.startswith("subset")):
                continue
            if reason is None and score - official_score > margin:
                best = cand.name
            best_score = score
        result.rows.append({
            "class_index": c, "official": classes.names[c], "chosen": best, "renamed": best != classes.names[c],
            "candidates": [{"name": cand.name, "sources": cand.sources, "score": round(float(score), 6),
                            "rejected": reason} for cand, score, reason in zip(per_class, scores[c], verdicts[c])]})
    return result


def replace_name(text: str, official: str, name: str, adjust_article: bool = True) -> str:
    """`text` with every mention of the official class name (whole phrase, any case) replaced;
    `adjust_article` makes an "a"/"an" before it follow the new name (REAL formats its templates
    with the name as it is: no adjustment there)."""
    if official == name:
        return text
    renamed = name_pattern(official).sub(lambda _: name, text)
    if not adjust_article:
        return renamed
    # "an automobile" -> "a car": the article before a replaced name follows the new name
    return re.sub(r"\b([Aa]n?)(\s+)(" + re.escape(name) + r")\b",
                  lambda m: _article_like(m.group(1), indefinite_article(m.group(3))) + m.group(2) + m.group(3),
                  renamed)


def _article_like(old: str, article: str) -> str:
    return article.capitalize() if old[0].isupper() else article
