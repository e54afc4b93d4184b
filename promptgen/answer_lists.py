"""Lists as models write them, split into items and the prose around them.

A GPT-3 completion continues the few-shot pattern ("four-limbed primate\\n- long tail"); a chat
model writes markdown: "- ", "* ", "• ", "1.", "1)" or "(1)" markers, **bold**, *italic* and
`code` markup, a lead-in line ("Here are some features of a lemur:"), a heading, blank lines
between items, "Label: explanation" items, a label item with its explanation on the next
indented line, sub-lists under a group label, and a closing note or summary. `split_list` keeps
the items, without markers or markup, and returns every other line as prose, so that a caller
can count what it dropped and tell an answer with no list at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Listed", "split_list", "strip_markup", "is_heading", "PREAMBLE", "TERMINAL"]

# a marker and its item; "-" and "•" also right against a word ("-Stripes"), "*" not (that is italic)
_MARKER = re.compile(r"^[ \t]*(?:(?:[-*+•◦▪‣–—]|\(?\d{1,3}[.):])(?:[ \t]+(?P<text>.*))?|[-•](?P<tight>[^\W\d_].*))$")
# "a." "b)" "(c)": a marker only in a run a, b, c, ... ("E. coli" and "T. rex" are not lists)
_LETTER_MARKER = re.compile(r"^[ \t]*\(?(?P<letter>[a-z])[.)][ \t]+(?P<text>.*)$")
_CHECKBOX = re.compile(r"^\[[ xX]\]\s+")
_EMPHASIS = re.compile(r"(?<![\w*`~])(\*\*|__|~~|\*|_|`)(?=\S)(.{1,400}?)(?<=\S)\1(?![\w*`~])")
_INNER_EMPHASIS = re.compile(r"(?<!\w)\*(\w[^*\n]*?\w|\w)\*(?=\w)")  # "*Lemur*s": italic that a word goes on from
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]*\)")
_STRAY = re.compile(r"\*\*|__|~~|`")
_HEADING = re.compile(r"^#{1,6}\s")
_FENCE = re.compile(r"^(```|~~~)")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
# a chat model's lead-in to its list ("Sure! Here are ...", "There are several useful ...")
PREAMBLE = re.compile(r"^(sure|certainly|of course|okay|ok|here|there are|below|the following)\b", re.IGNORECASE)
TERMINAL = (".", "!", "?")


def strip_markup(text: str) -> str:
    """Text without markdown emphasis, strike-through, inline code, link syntax or a task-list
    box ("**Tail:** long" -> "Tail: long"); a lone "*" or "_" stays ("5 * 3", "great_white_shark")."""
    text = _CHECKBOX.sub("", _LINK.sub(r"\1", text.strip()))
    previous = None
    while previous != text:  # nested emphasis: ***bold italic***
        previous, text = text, _EMPHASIS.sub(r"\2", text)
    text = _STRAY.sub("", text)  # an unclosed ** or ` never belongs to the text
    text = _INNER_EMPHASIS.sub(r"\1", text)
    return text.strip().strip("*_").strip()


def _wholly_emphasised(text: str) -> bool:
    stripped = text.strip().rstrip(":").strip()
    match = _EMPHASIS.fullmatch(stripped)
    return bool(match) and match.group(1) != "`"


def is_heading(line: str) -> bool:
    """A markdown heading, a line that is all bold or italic, or a line ending with a colon."""
    stripped = line.strip()
    return bool(_HEADING.match(stripped)) or _wholly_emphasised(stripped) or strip_markup(stripped).endswith(":")


@dataclass
class _Entry:
    indent: int
    text: str
    continuation: list[str] = field(default_factory=list)


@dataclass
class Listed:
    """`items`: the list's items, markers and markup removed; `prose`: every other non-blank line
    (lead-ins, headings, notes, labels of sub-lists); `empty`: markers with nothing after them.
    Code fences, rules and what follows a "Q:" line are in neither."""

    items: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)
    empty: int = 0


def _letter_runs(lines: list[str]) -> bool:
    """Do the letter-marked lines count a, b, c, ... (each run starting at "a")?"""
    letters = [m["letter"] for m in map(_LETTER_MARKER.match, lines) if m]
    return bool(letters) and all(b == "a" or ord(b) == ord(a) + 1 for a, b in zip(["`"] + letters, letters))


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _continues_the_prompt(line: str, items_follow: bool, items_are_sentences: bool, went_on: bool) -> bool:
    """Is the unmarked first line the first item of a prompt that ended with "-"? Not when it is a
    chat model's lead-in or a heading, nor when it is a sentence (capital letter, full stop) and the
    items, if any, are not: then the answer is prose, or prose before a list."""
    stripped = strip_markup(line)
    if (PREAMBLE.match(stripped) and stripped[:1].isupper()) or is_heading(line):
        return False
    sentence = stripped[:1].isupper() and stripped.endswith(TERMINAL)
    return went_on or not sentence or (items_follow and items_are_sentences)


def split_list(answer: str | None, *, first_line_continues: bool = False) -> Listed:
    """Items and prose of one answer. Lines after a "Q:" line (a completion model that goes on
    with the few-shot pattern) are ignored; `first_line_continues` takes an unmarked first line as
    an item, for prompts that end with "-"."""
    listed = Listed()
    lines = (answer or "").splitlines()
    went_on = False
    for position, line in enumerate(lines):
        if line.strip().startswith("Q:"):
            lines, went_on = lines[:position], True
            break
    letters = _letter_runs(lines)

    def marked_text(line: str) -> str | None:
        marked = _MARKER.match(line) or (_LETTER_MARKER.match(line) if letters else None)
        return None if marked is None else (marked["text"] or marked.groupdict().get("tight") or "").strip()

    marked_items = [text for text in map(marked_text, lines) if text]
    sentences = sum(strip_markup(text).endswith(TERMINAL) for text in marked_items) * 2 > len(marked_items)
    entries: list[_Entry] = []
    item_open, first = False, True
    for line in lines:
        stripped = line.strip()
        if not stripped:
            item_open = False  # a blank line ends an item: what follows is an item or prose
            continue
        if _FENCE.match(stripped) or _RULE.match(stripped):
            item_open = False
            continue
        text = marked_text(line)
        if text is not None:
            if text:
                entries.append(_Entry(_indent(line), text))
                item_open = True
            else:
                listed.empty += 1
        elif first and first_line_continues and _continues_the_prompt(stripped, bool(marked_items), sentences, went_on):
            entries.append(_Entry(0, stripped))
            item_open = True
        elif item_open and _indent(line) > entries[-1].indent:
            entries[-1].continuation.append(stripped)  # a wrapped item, or a label's explanation
        else:
            listed.prose.append(stripped)
            item_open = False
        first = False
    for position, entry in enumerate(entries):
        heads_a_sublist = position + 1 < len(entries) and entries[position + 1].indent >= entry.indent + 2
        text = _item_text(entry)
        if text.endswith(":") or (heads_a_sublist and not entry.continuation and _wholly_emphasised(entry.text)):
            listed.prose.append(entry.text)  # the label of a group ("**Body:**", "**Head**"), not an item
        elif text:
            listed.items.append(text)
        else:
            listed.empty += 1
    return listed


def _item_text(entry: _Entry) -> str:
    head = strip_markup(entry.text)
    if not entry.continuation:
        return head
    rest = strip_markup(" ".join(entry.continuation))
    if _wholly_emphasised(entry.text) and not head.endswith((":",) + TERMINAL):
        return f"{head}: {rest}"  # "**Long tail**" over "Lemurs have ..." is a label and its explanation
    return f"{head} {rest}"
