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

__all__ = ["Listed", "split_list", "strip_markup", "is_heading", "PREAMBLE"]

# a marker and its item; "-" and "•" also right against a word ("-Stripes"), "*" not (that is italic)
_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?:(?:[-*+•◦▪‣–—]|\(?\d{1,3}[.):]|\(?[A-Za-z][.)])(?:[ \t]+(?P<text>.*))?"
                     r"|[-•](?P<tight>[^\W\d_].*))$")
_EMPHASIS = re.compile(r"(?<![\w*`])(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1(?![\w*`])")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]*\)")
_STRAY = re.compile(r"\*\*|__|`")
_HEADING = re.compile(r"^#{1,6}\s")
_FENCE = re.compile(r"^(```|~~~)")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
# a chat model's lead-in to its list ("Sure! Here are ...", "There are several useful ...")
PREAMBLE = re.compile(r"^(sure|certainly|of course|okay|ok|here|there are|below|the following)\b", re.IGNORECASE)
_TERMINAL = (".", "!", "?")


def strip_markup(text: str) -> str:
    """Text without markdown emphasis, inline code or link syntax ("**Tail:** long" -> "Tail: long");
    single "*" and "_" stay unless they pair up around words ("5 * 3", "great_white_shark")."""
    text = _LINK.sub(r"\1", text)
    previous = None
    while previous != text:  # nested emphasis: ***bold italic***
        previous, text = text, _EMPHASIS.sub(r"\2", text)
    text = _STRAY.sub("", text)  # an unclosed ** or ` never belongs to the text
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
    (lead-ins, headings, notes, labels of sub-lists); `empty`: markers with nothing after them."""

    items: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)
    empty: int = 0


def _marked_text(line: str) -> str | None:
    """The item of a marked line ("" for a lone marker), None for an unmarked line."""
    marked = _MARKER.match(line)
    return None if marked is None else (marked["text"] or marked["tight"] or "").strip()


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _continues_the_prompt(line: str, more_items: bool) -> bool:
    """Is the unmarked first line the first item of a prompt that ended with "-"? Not when it is a
    lead-in or a heading, nor when it is a lone sentence (an answer that is all prose)."""
    stripped = line.strip()
    if PREAMBLE.match(stripped) or is_heading(stripped):
        return False
    return more_items or not strip_markup(stripped).endswith(_TERMINAL)


def split_list(answer: str | None, *, first_line_continues: bool = False) -> Listed:
    """Items and prose of one answer. Lines after a "Q:" line (a completion model that goes on
    with the few-shot pattern) are ignored; `first_line_continues` takes an unmarked first line as
    an item, for prompts that end with "-"."""
    lines = (answer or "").splitlines()
    for position, line in enumerate(lines):
        if line.strip().startswith("Q:"):
            lines = lines[:position]
            break
    more_items = any(_marked_text(line) for line in lines)
    entries: list[_Entry] = []
    listed = Listed()
    item_open, first = False, True
    for line in lines:
        stripped = line.strip()
        if not stripped:
            item_open = False  # a blank line ends an item: what follows is an item or prose
            continue
        if _FENCE.match(stripped) or _RULE.match(stripped):
            item_open = False
            continue
        text = _marked_text(line)
        if text is not None:
            if text:
                entries.append(_Entry(_indent(line), text))
                item_open = True
            else:
                listed.empty += 1
        elif first and first_line_continues and _continues_the_prompt(stripped, more_items):
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
        if heads_a_sublist and not entry.continuation or text.endswith(":"):
            listed.prose.append(entry.text)  # the label of a group, not an item
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
    if _wholly_emphasised(entry.text) and not head.endswith((":",) + _TERMINAL):
        return f"{head}: {rest}"  # "**Long tail**" over "Lemurs have ..." is a label and its explanation
    return f"{head} {rest}"
