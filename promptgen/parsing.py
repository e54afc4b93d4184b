"""Turning LLM answers into clean texts, with a count of what was dropped and why.

Every answer goes through `parse_answer`: split (one sentence, or one descriptor per bullet
line), normalise whitespace, then drop empty texts, refusals, texts with no words, over-long
texts and exact repeats. Drops are counted by reason so that manifests and audits can show them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from promptgen.answer_lists import PREAMBLE, TERMINAL, Listed, is_heading, split_list, strip_markup
from promptgen.classes import loose_name

__all__ = ["DROP_REASONS", "Parsed", "parse_answer", "parse_name_list", "parse_ratings", "clean_texts", "is_refusal", "normalise", "PAIR_REJECT_REASONS",
           "PairAttribute", "PairParsed", "parse_pair_answer", "name_pattern"]

DROP_REASONS = ("empty", "refusal", "unparsed", "too_long", "duplicate")

_REFUSAL_START = re.compile(
    r"^(i['’]?m sorry|i am sorry|sorry[,!.]|i apologi[sz]e|i can(?:not|['’]t)\b|i am unable|i['’]?m unable|"
    r"i['’]?m not able|i am not able|i won['’]?t\b|as an ai\b|as a language model|"
    r"i do not have (?:enough )?(?:information|access)|i don['’]?t have (?:enough )?(?:information|access))",
    re.IGNORECASE)
_REFUSAL_ANYWHERE = re.compile(r"\bas an ai(?: language)? model\b|\bi['’]?m just an ai\b", re.IGNORECASE)
_QUOTES = {('"', '"'), ("“", "”"), ("'", "'")}
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_TWO_LETTERS = re.compile(r"[^\W\d_].*?[^\W\d_]")


@dataclass
class Parsed:
    """The texts kept from one answer, what was dropped by reason, and, when nothing could be
    kept, why (`problem`, for the manifest's failure entry)."""

    texts: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    problem: str | None = None


def normalise(text: str) -> str:
    """One line, no control or zero-width characters, no surrounding quotes or spaces."""
    text = " ".join(_INVISIBLE.sub(" ", text).split())
    if len(text) >= 2 and (text[0], text[-1]) in _QUOTES:
        text = text[1:-1].strip()
    return text


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL_START.match(text) or _REFUSAL_ANYWHERE.search(text))


def _keep(text: str, parsed: Parsed, max_chars: int, dedupe: bool = False, *, published: bool = False,
          keep_empty: bool = False) -> None:
    """Keep an answer's text unless it is empty, a refusal, letterless or too long; a published
    text (`published`) is only checked for emptiness and length. A repeat is kept (the published
    methods count every sample as often as it occurs) unless `dedupe`."""
    if not text and not keep_empty:
        parsed.dropped["empty"] += 1
    elif not published and is_refusal(text):
        parsed.dropped["refusal"] += 1
    elif not published and not _TWO_LETTERS.search(text):
        parsed.dropped["unparsed"] += 1
    elif len(text) > max_chars:
        parsed.dropped["too_long"] += 1
    elif dedupe and text in parsed.texts:
        parsed.dropped["duplicate"] += 1
    else:
        parsed.texts.append(text)


def clean_texts(texts: list[str], max_chars: int = 300, dedupe: bool = False, keep_empty: bool = False) -> Parsed:
    """Texts of a published file, as published: whitespace and invisible characters are
    normalised (the CLIP tokenizer ignores them), everything else is kept, repeats and near-empty
    texts such as "." included (CuPL's heads count them, docs/methods.md). Empty strings are
    dropped unless `keep_empty` (a DCLIP descriptor "" is the label "{c}, which has "), and so are
    texts over `max_chars`; `dedupe` drops repeats within the list."""
    parsed = Parsed()
    for text in texts:
        _keep(" ".join(_INVISIBLE.sub(" ", text).split()), parsed, max_chars, dedupe, published=True,
              keep_empty=keep_empty)
    return parsed


def parse_answer(answer: str | None, parser: str = "sentence", *, append: str = "", max_chars: int = 300,
                 continues_bullet: bool = False) -> Parsed:
    """Parse one answer (one choice of one request).

    sentence: the whole answer is one text, markup removed; `append` (CuPL's ".") is added
    as CuPL does after every answer, "?" and "!" included, unless the answer already ends with
    it (a provider that ignored the stop sequence). bullets: one text per item of the answer's list, read by
    `answer_lists.split_list` (markers, markup, lead-ins, headings, notes; lines after a "Q:"
    line are ignored); `continues_bullet` takes an unmarked first line as an item, for prompts
    that end with "-". list: names, see `parse_name_list`.
    """
    parsed = Parsed()
    answer = answer or ""
    if parser == "sentence":
        text = normalise(strip_markup(answer))
        if text and append and not text.endswith(append):  # CuPL: after "?" and "!" too
            text += append
        _keep(text, parsed, max_chars)
        return parsed
    if parser == "list":
        return parse_name_list(answer, max_chars=max_chars)
    if parser != "bullets":
        raise ValueError(f"unknown parser {parser!r}")
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        parsed.dropped["empty"] += 1
        return parsed
    if is_refusal(normalise(strip_markup(lines[0]))):
        parsed.dropped["refusal"] += 1
        return parsed
    listed = split_list(answer, first_line_continues=continues_bullet)
    for item in listed.items:
        _keep(normalise(item), parsed, max_chars)
    parsed.dropped["empty"] += listed.empty
    parsed.dropped["unparsed"] += len(listed.prose)
    if not listed.items:
        _no_list(listed, parsed)
    return parsed


def _no_list(listed: Listed, parsed: Parsed) -> None:
    """An answer without a list item: why, for the failure entry (an answer of nothing but code
    fences, rules or the next few-shot question is counted as unparsed too)."""
    if listed.prose:
        lines = f"{len(listed.prose)} line{'s' if len(listed.prose) != 1 else ''}"
        parsed.problem = f"the answer holds no list ({lines} of prose)"
    elif listed.empty:
        parsed.problem = "the answer holds no list (only empty items)"
    else:
        parsed.dropped["unparsed"] += 1
        parsed.problem = "the answer holds no list (only markup, or the next question)"


# -- name lists (synonyms stage) -----------------------------------------------------------------

_EXPLANATION = re.compile(r"\s+(?:[-–—:]|\()\s*.*$|:\s.*$")
# a label saying what kind of name follows: "Scientific name: Tinca tinca", "Informal - kitty", "UK: cashpoint"
_KIND = (r"(?:(?:the\s+)?(?:scientific|latin|binomial|botanical|common|formal|informal|colloquial|slang|technical|"
         r"trade|regional|popular|alternative|alternate|other|short|full|british|american|us|uk)"
         r"(?:\s+(?:names?|terms?|spellings?|forms?|usage))?|names?|(?:also\s+)?known\s+as|aka|a\.k\.a\.|"
         r"abbreviations?|nicknames?|synonyms?)")
_KIND_LABEL = re.compile(rf"\(?{_KIND}", re.IGNORECASE)
_NAME_KIND = re.compile(rf"^\(?{_KIND}(?:\s*:\s*|\s+[-–—]\s+)", re.IGNORECASE)
# words of a lead-in before names: "Other names for the koala: ...", "Synonyms include: ..."
_LEAD_IN_WORDS = re.compile(r"\b(?:names?|synonyms?|terms?|includes?|including|also|alternatives?|other)\b", re.I)
# a line of prose about names, not a line of names: "Koalas are sometimes called koala bears."
_SENTENCE_VERB = re.compile(r"\b(?:is|are|was|were|be|been|called|known|named|referred|refers?|says?|said)\b", re.I)
_NOTE = re.compile(r"^\(?\s*(?:note|nb|n\.b\.|these|this|i hope|hope this|let me know)\b", re.IGNORECASE)
_EXPLAINED_FROM = re.compile(r":\s+|\s+[-–—]\s+")
MAX_NAME_WORDS = 8


def parse_name_list(answer: str | None, *, max_chars: int = 80) -> Parsed:
    """Names from a list answer ("1. ATM", "- cash machine: a machine that ...", "*Canis lupus*",
    "ATM, cash machine, cashpoint"): numbering, bullets, markup, quotes and explanations after a
    dash, colon or parenthesis are removed; labels before names ("Scientific name: ...", "Other
    names for the koala: ...") give the names after them; lead-in lines, headings, closing remarks
    and lines of prose are skipped (when the answer is a list, every unmarked line is); a name is
    kept as written and repeats are found ignoring case."""
    parsed = Parsed()
    lines = [line for line in (answer or "").splitlines() if line.strip()]
    if not lines:
        parsed.dropped["empty"] += 1
        return parsed
    if is_refusal(normalise(strip_markup(lines[0]))) and len(lines) == 1:
        parsed.dropped["refusal"] += 1
        return parsed
    listed = split_list(answer)
    parsed.dropped["empty"] += listed.empty
    items = []
    if listed.items:
        parsed.dropped["unparsed"] += len(listed.prose)
        for item in listed.items:
            items += _split_names(item, explained=True)
    for line in [] if listed.items else listed.prose:  # no list: names on plain lines, or after a lead-in
        plain = strip_markup(line.lstrip("#").strip())
        if plain.endswith(("!", "?")) or is_heading(line) or _NOTE.match(plain) or is_refusal(normalise(plain)):
            parsed.dropped["unparsed"] += 1
        elif _labelled(plain):  # "Here are some names: ATM, cash machine", "The koala is also called: ..."
            items += _split_names(plain, explained=True)
        elif PREAMBLE.match(plain) or _reads_as_prose(plain):
            parsed.dropped["unparsed"] += 1
        else:
            items += _split_names(plain, explained=True)
    if not listed.items and not items:
        _no_list(listed, parsed)
    seen: set[str] = set()
    for item in items:
        name = strip_markup(item.strip())
        name = _NAME_KIND.sub("", name)  # "(Latin: Felis catus)"
        name = _EXPLANATION.sub("", name).strip().strip("\"'“”‘’.,;").strip()
        if name.endswith(")") and "(" not in name:  # the rest of "(Latin: Felis catus)"
            name = name[:-1].strip()
        if name.startswith("(") and name.endswith(")"):
            name = name[1:-1].strip()
        name = normalise(name)
        if not name:
            parsed.dropped["empty"] += 1
        elif not _TWO_LETTERS.search(name) and not re.search(r"[^\W\d_]", name):
            parsed.dropped["unparsed"] += 1
        elif name.endswith((":", "!", "?")) or _NOTE.match(name):
            parsed.dropped["unparsed"] += 1
        elif len(name) > max_chars or len(name.split()) > MAX_NAME_WORDS:
            parsed.dropped["too_long"] += 1
        elif name.casefold() in seen:
            parsed.dropped["duplicate"] += 1
        else:
            seen.add(name.casefold())
            parsed.texts.append(name)
    return parsed


def _names_follow(label: str) -> bool:
    """Is `label` (the text before a colon or a spaced dash) a label of the names after it, rather
    than a name that the rest explains? "Informal", "UK", "Other names for the koala", "Here are
    some names", "The koala is also called": yes; "cash machine", "Felis catus": no."""
    label = label.strip()
    return bool(_KIND_LABEL.fullmatch(label) or PREAMBLE.match(label) or _LEAD_IN_WORDS.search(label)
                or _SENTENCE_VERB.search(label))


def _labelled(line: str) -> bool:
    """Does the line start with a label of the names after it ("Synonyms include: a, b")?"""
    separator = _EXPLAINED_FROM.search(line)
    return bool(separator) and "(" not in line[:separator.start()] and _names_follow(line[:separator.start()])


def _reads_as_prose(line: str) -> bool:
    """A sentence rather than names: it has a verb of naming or being, or it ends like a sentence
    and its first comma-separated part is longer than names usually are (5 words or more)."""
    first = _split_names(line, explained=True)[:1]
    return bool(_SENTENCE_VERB.search(line)) or (line.endswith(TERMINAL) and bool(first) and len(first[0].split()) >= 5)


def _split_names(text: str, explained: bool = False) -> list[str]:
    """"kitty, kitty cat" and "ATM / cashpoint" are two names; a comma inside parentheses is not a
    split. With `explained`, a colon or a spaced dash outside parentheses either ends a label of
    the names after it ("UK: cashpoint", see `_names_follow`), which is dropped, or starts an
    explanation of the names before it ("cash machine: a machine that dispenses cash, usually
    ..."), which is dropped whole so that its commas split nothing."""
    parts, depth, current, position = [], 0, "", 0
    while position < len(text):
        ch = text[position]
        depth += ch == "("
        depth -= ch == ")" and depth > 0
        separator = _EXPLAINED_FROM.match(text, position) if explained and depth == 0 else None
        if separator and _names_follow(current):
            current, position = "", separator.end()
            continue
        if separator:
            break
        if depth == 0 and ch in ",;":
            parts.append(current)
            current = ""
        else:
            current += ch
        position += 1
    parts.append(current)
    return [piece for part in parts for piece in re.split(r"\s+/\s+", part) if piece.strip()]


def parse_ratings(answer: str | None, low: float = 1.0, high: float = 10.0) -> dict[str, float]:
    """Ratings of names, keys compared ignoring case, from a JSON object {"name": 7} (numbers or
    numeric strings; a cut-off object keeps its complete entries), a list of {"name", "score"}
    objects, or lines "name: 7" / "1. name - 7/10" / "name (7)". Values outside [low, high] are dropped."""
    text = answer or ""
    ratings: dict[str, float] = {}

    def add(name: object, score: object) -> None:
        try:
            value = float(score) if not isinstance(score, bool) else None
        except (TypeError, ValueError):
            return
        if value is not None and low <= value <= high:
            ratings[normalise(strip_markup(str(name))).strip("\"'“”").casefold()] = value

    value, whole, _ = _decode_json(text) if ("{" in text or "[" in text) else (None, False, None)
    if whole and isinstance(value, dict):
        for key, score in value.items():
            add(key, score)
    elif whole and isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                name = next((item[k] for k in ("name", "synonym", "term") if k in item), None)
                score = next((item[k] for k in ("score", "rating", "commonness") if k in item), None)
                if name is not None:
                    add(name, score)
    if ratings:
        return ratings
    for name, score in re.findall(r'"([^"\n]+)"\s*:\s*"?(\d+(?:\.\d+)?)', text):  # a cut-off JSON object
        add(name, score)
    if ratings:
        return ratings
    for line in text.splitlines():
        match = re.match(r"^\s*(?:[-*+•]|\(?\d{1,3}[.)])?\s*(.+?)\s*(?:[:=\-–—]\s*|\()(\d+(?:\.\d+)?)\s*(?:/\s*10)?\)?\s*$",
                         line)
        if match:
            add(match.group(1), match.group(2))
    return ratings


# -- pair answers (differentiate stage) -----------------------------------------------------------

PAIR_REJECT_REASONS = ("one_sided", "identical", "swapped", "names_other_class", "about_other_class", "refusal",
                       "too_long", "duplicate")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"'})
_FIRST_KEYS = ("object_1", "object1", "class_1", "class1", "first", "1", "a")
_SECOND_KEYS = ("object_2", "object2", "class_2", "class2", "second", "2", "b")
_ATTRIBUTE_KEYS = ("attribute", "attr_type", "attr", "aspect", "feature", "name")


@dataclass
class PairAttribute:
    attribute: str
    first: str
    second: str


@dataclass
class PairParsed:
    """What one answer about a pair gave: the attributes kept, those rejected by reason, whether
    the JSON was whole and of the expected shape, and if not, why (for the repair message)."""

    attributes: list[PairAttribute] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    complete: bool = False
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.complete and bool(self.attributes)


def name_pattern(name: str) -> re.Pattern:
    """A class name as a whole phrase, case-insensitive, with '-', '_' and spaces interchangeable."""
    words = [re.escape(w) for w in re.split(r"[\s_\-]+", name.strip()) if w]
    return re.compile(r"(?<![\w])" + r"[\s_\-]+".join(words) + r"(?![\w])", re.IGNORECASE)


def _names(text: str, pattern: re.Pattern, shadow: re.Pattern) -> bool:
    """Does `text` name the class of `pattern` other than inside a mention of the `shadow` class?
    For the pair ("wild cat", "cat"), "a wild cat" names "wild cat" and not "cat"; "a cat, not a
    wild cat" names both."""
    shadowed = [m.span() for m in shadow.finditer(text)]
    return any(not any(a <= m.start() and m.end() <= b and (a, b) != m.span() for a, b in shadowed)
               for m in pattern.finditer(text))


_MAX_STARTS = 20


def _decode_json(text: str) -> tuple[object, bool, str | None]:
    """The first JSON value in an answer (code fences, lead-in prose that may itself hold brackets,
    trailing commas and curly quotes tolerated). Returns (value, whole, error); when the JSON is cut
    off or garbled, the complete attribute-like objects inside it."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    starts = [i for i, ch in enumerate(body) if ch in "{["]
    if not starts:
        return None, False, "the answer holds no JSON object"
    decoder = json.JSONDecoder()
    variants = (lambda t: t, lambda t: _TRAILING_COMMA.sub(r"\1", t), lambda t: t.translate(_SMART_QUOTES),
                lambda t: _TRAILING_COMMA.sub(r"\1", t.translate(_SMART_QUOTES)))
    error, resume_at, tried = None, 0, 0
    for start in starts:
        # a bracket inside JSON that already failed is not a fresh start ("[JSON]: {...}" is, a cut-off list is not)
        if start < resume_at or tried >= _MAX_STARTS:
            continue
        tried += 1
        failed_at = start + 1
        for variant in variants:
            try:
                value, _ = decoder.raw_decode(variant(body[start:]))
            except ValueError as exc:
                error = error or f"invalid JSON: {exc.msg} (character {exc.pos})"
                failed_at = max(failed_at, start + exc.pos)
                continue
            except RecursionError:
                return [], False, "invalid JSON: nested too deeply"
            if isinstance(value, (dict, list)) and value:
                return value, True, None
        resume_at = failed_at
    # truncated (max_tokens) or garbled: keep every complete object that looks like one attribute
    body = body[starts[0]:]
    salvaged, position = [], 1
    while True:
        position = body.find("{", position)
        if position < 0:
            break
        try:
            value, end = decoder.raw_decode(body, position)
        except ValueError:
            position += 1
            continue
        except RecursionError:
            break
        keys = {loose_name(k) for k in value} if isinstance(value, dict) else set()
        if keys & set(_ATTRIBUTE_KEYS) or keys & {loose_name(k) for k in _FIRST_KEYS + ("prompt_pair",)}:
            salvaged.append(value)
            position = end
        else:
            position += 1  # a wrapper: look inside it
    return salvaged, False, error or "the JSON holds no attribute"


def _items(value: object, names: tuple[str, str] = ("", "")) -> list | None:
    """The list of attribute objects, whatever the wrapping: {"differences": [...]}, FuDD's
    {"prompt_pairs": [...]}, {"i_j": {"prompt_pairs": [...]}}, a bare list, or one attribute."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        return None
    for key in ("differences", "prompt_pairs", "attributes", "pairs"):
        if isinstance(value.get(key), list):
            return value[key]
    keys = {loose_name(k) for k in value}
    side_keys = {loose_name(k) for k in _FIRST_KEYS + ("prompt_pair",)} | {loose_name(n) for n in names if n}
    if keys & {loose_name(k) for k in _ATTRIBUTE_KEYS} and keys & side_keys:
        return [value]
    lists = [v for v in value.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    if len(lists) == 1:
        return lists[0]
    nested = [v for v in value.values() if isinstance(v, dict)]
    if len(nested) == 1:
        return _items(nested[0], names)
    return None


def _sides(item: dict, first_name: str, second_name: str) -> tuple[object, object]:
    if isinstance(item.get("prompt_pair"), list):
        pair = item["prompt_pair"] + [None, None]
        return pair[0], pair[1]
    lowered = {loose_name(k): v for k, v in item.items()}
    first = next((lowered[loose_name(k)] for k in _FIRST_KEYS if loose_name(k) in lowered), None)
    second = next((lowered[loose_name(k)] for k in _SECOND_KEYS if loose_name(k) in lowered), None)
    # keys named after the classes: {"attribute": ..., "pug": ..., "scottish_terrier": ...}
    if first is None:
        first = lowered.get(loose_name(first_name))
    if second is None:
        second = lowered.get(loose_name(second_name))
    return first, second


def parse_pair_answer(answer: str | None, first_name: str, second_name: str, *, max_chars: int = 300,
                      third_class: Callable[[str], bool] | None = None) -> PairParsed:
    """Parse and check one answer about the pair (first_name, second_name).

    An attribute is rejected (and counted) when a side is missing or empty (one_sided), both
    sides say the same (identical), each side names the other class and not its own (swapped),
    a side names the other class of the pair (names_other_class), a side names neither class of
    the pair but another class of the dataset (about_other_class, via `third_class`), is a
    refusal, is longer than max_chars, or repeats an earlier attribute (duplicate)."""
    parsed = PairParsed()
    text = (answer or "").strip()
    if not text:
        parsed.error = "the answer is empty"
        return parsed
    if is_refusal(normalise(strip_markup(text))):
        parsed.rejected["refusal"] += 1
        parsed.error = "the answer is a refusal"
        return parsed
    value, whole, error = _decode_json(text)
    items = _items(value, (first_name, second_name)) if whole else value
    if whole and items is None:
        error = "the JSON has no list of differences"
    parsed.complete = whole and items is not None
    parsed.error = error
    first_own, second_own = name_pattern(first_name), name_pattern(second_name)
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            parsed.rejected["one_sided"] += 1
            continue
        raw_first, raw_second = _sides(item, first_name, second_name)
        lowered = {str(k).strip().lower(): v for k, v in item.items()}
        attribute = next((lowered[k] for k in _ATTRIBUTE_KEYS if isinstance(lowered.get(k), str) and lowered[k].strip()),
                         None)
        attribute = normalise(strip_markup(attribute)) if attribute else f"attribute {index + 1}"
        first = normalise(strip_markup(raw_first)) if isinstance(raw_first, str) else ""
        second = normalise(strip_markup(raw_second)) if isinstance(raw_second, str) else ""
        if not first or not second:
            parsed.rejected["one_sided"] += 1
            continue
        if is_refusal(first) or is_refusal(second):
            parsed.rejected["refusal"] += 1
            continue
        if len(first) > max_chars or len(second) > max_chars:
            parsed.rejected["too_long"] += 1
            continue
        if _comparable(first) == _comparable(second):
            parsed.rejected["identical"] += 1
            continue
        first_names_own, second_names_own = _names(first, first_own, second_own), _names(second, second_own, first_own)
        first_names_other, second_names_other = _names(first, second_own, first_own), _names(second, first_own, second_own)
        if first_names_other and second_names_other and not first_names_own and not second_names_own:
            parsed.rejected["swapped"] += 1
            continue
        if first_names_other or second_names_other:
            parsed.rejected["names_other_class"] += 1
            continue
        # "a photo of a pug, with floppy ears." and "a photo of a scottish terrier, with floppy ears." say the same
        if _comparable(first_own.sub(" ", first)) == _comparable(second_own.sub(" ", second)):
            parsed.rejected["identical"] += 1
            continue
        if third_class is not None and (third_class(first) or third_class(second)):
            parsed.rejected["about_other_class"] += 1
            continue
        key = (_comparable(first), _comparable(second))
        if key in seen:
            parsed.rejected["duplicate"] += 1
            continue
        seen.add(key)
        parsed.attributes.append(PairAttribute(attribute, first, second))
    if parsed.complete and not parsed.attributes:
        parsed.error = ("no attribute survived the checks (" + ", ".join(f"{n} {r}" for r, n in parsed.rejected.items())
                        + ")") if parsed.rejected else "the list of differences is empty"
    return parsed


def _comparable(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())
