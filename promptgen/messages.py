"""How a message quotes a text (a gloss, an answer, a provider's error): on one line, cut at a
word boundary with "…" where it was cut, so that no quoted word is ever shown half."""

from __future__ import annotations

__all__ = ["shorten"]

ELLIPSIS = "…"


def shorten(text: object, limit: int, *, one_line: bool = True) -> str:
    """`text` in at most `limit` characters; a longer one ends at the last whole word that fits,
    followed by "…" (a single word longer than the limit is cut inside it). `one_line` collapses
    runs of whitespace first; without it the text keeps its own (a logged command line)."""
    text = " ".join(str(text).split()) if one_line else str(text)
    if len(text) <= limit:
        return text
    room = max(limit - len(ELLIPSIS), 1)
    cut = text[:room]
    if not text[room].isspace() and any(ch.isspace() for ch in cut):  # inside a word: end at the word before
        cut = cut[:max(i for i, ch in enumerate(cut) if ch.isspace())]
    return cut.rstrip().rstrip(",;:-").rstrip() + ELLIPSIS
