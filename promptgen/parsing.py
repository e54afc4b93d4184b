"""Turning LLM answers into clean texts, with a count of what was dropped and why.

Every answer goes through `parse_answer`: split (one sentence, or one descriptor per bullet
line), normalise whitespace, then drop empty texts, refusals, texts with no words, over-long
texts and exact repeats. Drops are counted by reason so that manifests and audits can show them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DROP_REASONS", "Parsed", "parse_answer", "clean_texts", "is_refusal", "normalise"]

DROP_REASONS = ("empty", "refusal", "unparsed", "too_long", "duplicate")

_REFUSAL_START = re.compile(
    r"^(i['’]?m sorry|i am sorry|sorry[,!.]|i apologi[sz]e|i can(?:not|['’]t)\b|i am unable|i['’]?m unable|"
    r"i['’]?m not able|i am not able|i won['’]?t\b|as an ai\b|as a language model|"
    r"i do not have (?:enough )?(?:information|access)|i don['’]?t have (?:enough )?(?:information|access))",
    re.IGNORECASE)
_REFUSAL_ANYWHERE = re.compile(r"\bas an ai(?: language)? model\b|\bi['’]?m just an ai\b", re.IGNORECASE)
# a chat model's lead-in to its list ("Sure! Here are ...:", "There are several useful ...:")
_PREAMBLE = re.compile(r"^(sure|certainly|of course|okay|ok|here|there are|below|the following)\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•–]|\d{1,2}[.)])\s+(.*)$")
_QUOTES = {('"', '"'), ("“", "”"), ("'", "'")}
_TERMINAL = (".", "!", "?")
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_TWO_LETTERS = re.compile(r"[^\W\d_].*?[^\W\d_]")


@dataclass
class Parsed:
    texts: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def normalise(text: str) -> str:
    """One line, no control or zero-width characters, no surrounding quotes or spaces."""
    text = " ".join(_INVISIBLE.sub(" ", text).split())
    if len(text) >= 2 and (text[0], text[-1]) in _QUOTES:
        text = text[1:-1].strip()
    return text


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL_START.match(text) or _REFUSAL_ANYWHERE.search(text))


def _keep(text: str, parsed: Parsed, max_chars: int) -> None:
    if not text:
        parsed.dropped["empty"] += 1
    elif is_refusal(text):
        parsed.dropped["refusal"] += 1
    elif not _TWO_LETTERS.search(text):
        parsed.dropped["unparsed"] += 1
    elif len(text) > max_chars:
        parsed.dropped["too_long"] += 1
    elif text in parsed.texts:
        parsed.dropped["duplicate"] += 1
    else:
        parsed.texts.append(text)


def clean_texts(texts: list[str], max_chars: int = 300) -> Parsed:
    """Normalise and validate texts that arrive already split (imported files)."""
    parsed = Parsed()
    for text in texts:
        _keep(normalise(text), parsed, max_chars)
    return parsed


def parse_answer(answer: str | None, parser: str = "sentence", *, append: str = "", max_chars: int = 300,
                 continues_bullet: bool = False) -> Parsed:
    """Parse one answer (one choice of one request).

    sentence: the whole answer is one text; `append` (CuPL's ".") is added unless it already
    ends a sentence. bullets: one text per "- " line; lines after a "Q:" line (a model that
    continues the few-shot pattern) are ignored; `continues_bullet` takes an unmarked first line
    as a bullet, for prompts that end with "-".
    """
    parsed = Parsed()
    answer = answer or ""
    if parser == "sentence":
        text = normalise(answer)
        if text and append and not text.endswith(_TERMINAL):
            text += append
        _keep(text, parsed, max_chars)
        return parsed
    if parser != "bullets":
        raise ValueError(f"unknown parser {parser!r}")
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        parsed.dropped["empty"] += 1
        return parsed
    if is_refusal(normalise(lines[0])):
        parsed.dropped["refusal"] += 1
        return parsed
    for position, line in enumerate(lines):
        if line.strip().startswith("Q:"):
            break
        match = _BULLET.match(line)
        if match:
            _keep(normalise(match.group(1)), parsed, max_chars)
        elif position == 0 and continues_bullet and not _PREAMBLE.match(line.strip()) \
                and not line.rstrip().endswith(":"):
            _keep(normalise(line), parsed, max_chars)
        else:
            parsed.dropped["unparsed"] += 1
    return parsed
