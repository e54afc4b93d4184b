"""How a message quotes a text (a gloss, an answer, a provider's error): on one line, cut at a
word boundary with "…" where it was cut, so that no quoted word is ever shown half."""

from __future__ import annotations

__all__ = ["shorten"]

ELLIPSIS = "…"


def shorten(text: object, limit: int) -> str:
    """`text` on one line, at most `limit` characters; a longer one ends at the last whole word
    that fits, followed by "…" (a single word longer than the limit is cut inside it)."""
    one_line = " ".join(str(text).split())
    if len(one_line) <= limit:
        return one_line
    room = max(limit - len(ELLIPSIS), 1)
    cut = one_line[:room]
    if one_line[room] != " " and " " in cut:  # the cut falls inside a word: end at the word before
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + ELLIPSIS
