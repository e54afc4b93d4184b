"""What the fake LLM server answers: deterministic texts (descriptions, bullet lists, name lists,
FuDD pair JSON) as a pure function of (messages, sample index), and the faults it can inject."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "Chaos", "FAULT_KINDS", "CHAOS_KINDS", "REFUSAL_TEXT", "default_answer", "pair_answer"]


FAULT_KINDS = ("429", "500", "401", "timeout", "empty", "refusal", "garbage", "malformed", "echo_auth", "one_bullet",
               "text", "truncated")

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
# faults that make a batch line fail (into the error file) rather than answer with odd content

# "500": a line whose response is a 500 with an error body; "error": a line with no response, only an error


@dataclass
class Fault:
    """Inject `kind` into the next `times` requests whose last user message contains `match`.

    times=-1 means every matching request. retry_after (seconds) goes into the 429's header;
    delay (seconds) is how long a `timeout` fault stalls before answering. `text` answers with
    the given text verbatim; `truncated` cuts the normal answer in half (finish_reason "length").
    """

    kind: str
    match: str = ""
    times: int = 1
    retry_after: float | None = None
    delay: float = 30.0
    text: str = ""
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose from {', '.join(FAULT_KINDS)}")

    def applies(self, prompt: str) -> bool:
        return (self.times < 0 or self.hits < self.times) and self.match in prompt


CHAOS_KINDS = ("429", "500", "drop", "slow", "malformed")


@dataclass
class Chaos:
    """Faults in a `rate` fraction of all requests, the kind drawn from `kinds` by a seeded
    generator: "429" (with Retry-After `retry_after`), "500", "drop" (the connection closes with no
    answer), "slow" (a good answer after `slow_delay` s, meant to exceed the client's timeout; not
    counted as delivered) and "malformed" (a 200 whose JSON body is cut off)."""

    rate: float = 0.3
    kinds: tuple[str, ...] = CHAOS_KINDS
    seed: int = 0
    retry_after: float = 0.05
    slow_delay: float = 3.0

    def __post_init__(self) -> None:
        import random

        unknown = [k for k in self.kinds if k not in CHAOS_KINDS]
        if unknown or not 0 <= self.rate <= 1 or (self.rate > 0 and not self.kinds):
            raise ValueError(f"chaos: rate in [0, 1] and kinds from {', '.join(CHAOS_KINDS)} (got {unknown})")
        self.kinds = tuple(self.kinds)
        self._random = random.Random(self.seed)

    def draw(self) -> str | None:
        if self._random.random() >= self.rate:
            return None
        return self._random.choice(self.kinds)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


WORDS = ("striped", "glossy", "round", "pointed", "speckled", "curved", "matte", "slender",
         "bright", "dark", "fuzzy", "ridged", "long", "short", "tapered", "flat")


def _subject(prompt: str) -> str:
    """A short, deterministic stand-in for the class the prompt asks about."""
    lines = [line for line in prompt.strip().splitlines() if line.strip() and line.strip() != "-"]
    last = lines[-1] if lines else prompt
    return re.sub(r"\s+", " ", last).strip()[:60]


_PAIR_QUESTION = re.compile(r"^Object 1: (?P<first>.+)\n(?:.*\n)*?Object 2: (?P<second>.+)$", re.MULTILINE)
_LIST_QUESTION = re.compile(r"ways of referring to (?:an? )?(?P<name>.+?)\? Give me a numbered list")
PAIR_ATTRIBUTES = ("ear shape", "coat colour", "tail length", "body size", "snout length", "leg length",
                   "pattern", "texture")


def pair_answer(first: str, second: str, index: int = 0) -> str:
    """A differentiate answer for the pair: 3 or 4 attributes, one caption per class each, as JSON.
    A pure function of the two names, so a repair request gets the same good answer."""
    h = _digest(first, second, index)
    count = 3 + int(h[0], 16) % 2
    start = int(h[1:3], 16) % len(PAIR_ATTRIBUTES)
    differences = []
    for a in range(count):
        attribute = PAIR_ATTRIBUTES[(start + a) % len(PAIR_ATTRIBUTES)]
        w1 = WORDS[int(h[4 + 2 * a: 6 + 2 * a], 16) % len(WORDS)]
        w2 = WORDS[(WORDS.index(w1) + 1 + int(h[12 + a], 16) % (len(WORDS) - 1)) % len(WORDS)]
        differences.append({"attribute": attribute, "object_1": f"a photo of a {first}, with a {w1} {attribute}.",
                            "object_2": f"a photo of a {second}, with a {w2} {attribute}."})
    return json.dumps({"differences": differences})


def _pair_in(messages: list[dict]) -> tuple[str, str] | None:
    for message in messages:
        match = _PAIR_QUESTION.search(str(message.get("content", ""))) if message.get("role") == "user" else None
        if match:
            return match["first"].strip().strip('"'), match["second"].strip().strip('"')
    return None


_RELEVANCE_QUESTION = re.compile(r'^Does the "(?P<name>.*?)" in "(?P<caption>.*)", refer to', re.DOTALL)


def default_answer(messages: list[dict], index: int) -> str:
    """Deterministic answer: JSON differences for pair questions ("Object 1: ...", "Object 2:
    ..."), Yes/No for caption-relevance questions, bullet lines for list-style prompts, sentences
    otherwise."""
    pair = _pair_in(messages)
    if pair is not None:
        return pair_answer(*pair, index)
    prompt = messages[-1].get("content", "") if messages else ""
    judged = _RELEVANCE_QUESTION.search(prompt)
    if judged:  # REAL's caption check: a caption with the word "logo" is not about the class
        return "No." if re.search(r"\blogo\b", judged["caption"], re.IGNORECASE) else "Yes."
    listed = _LIST_QUESTION.search(prompt)
    if listed:  # a synonyms question: a numbered list of names, the class itself first
        name = listed["name"].strip().strip('"')
        h = _digest(name, index)
        extra = [f"{WORDS[int(h[2 * k: 2 * k + 2], 16) % len(WORDS)]} {name.split()[-1]}" for k in range(2)]
        return "\n".join(f"{n}. {item}" for n, item in enumerate(dict.fromkeys([name, *extra]), 1))
    h = _digest(messages, index)
    picks = [WORDS[int(h[2 * k: 2 * k + 2], 16) % len(WORDS)] for k in range(6)]
    if prompt.rstrip().endswith("-"):
        return "\n".join(f"- {a} {b} part" for a, b in zip(picks[::2], picks[1::2])) + f"\n- mark {h[:6]}"
    return (f"It is {picks[0]} and {picks[1]} with a {picks[2]} mark {h[:8]} "
            f"seen in {_subject(prompt)}. It also has a {picks[3]} edge.")


def _sample_index(body: dict, choice: int) -> int:
    """Distinct answers per choice; a `seed` (sent when n samples are split into n requests)
    stands in for the sampling randomness a real provider would add."""
    seed = body.get("seed")
    return int(seed) * 1000 + choice if seed is not None else choice
