"""REAL's name matching, as one multi-pattern matcher (docs/methods.md, real: counting names).

REAL (`laion_parser.py`) counts a name's captions with a SQLite FTS5 query: each caption is
stored with quotes removed and "-" and "_" turned into spaces (`create_fts_table`), the name is
cleaned the same way (`clean_text`) and its words joined with FTS5's "+" (`parse_multi_words`), so
a caption matches when the name's words appear in it consecutively, as whole tokens of FTS5's
default `unicode61` tokenizer: runs of letters and digits, case folded, diacritics removed. A
caption counts once per name however often it names it.

Here both sides are normalised by one function (`normalise`, vectorised on pyarrow) into tokens
joined by single spaces, and every name is one pattern " w1 w2 " in an Aho-Corasick automaton
(pyahocorasick): a whole batch of captions is joined into one string, scanned once, and each
hit is mapped back to its caption. The padding spaces make a hit whole tokens; the caption
separator "\\n" can never be inside a pattern, so no hit spans two captions.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["RULE", "RULE_DESCRIPTION", "normalise", "NameMatcher", "BatchHits"]

RULE = "real-fts5/1"
RULE_DESCRIPTION = ("REAL's: quotes removed, '-' and '_' as spaces, case-insensitive, diacritics removed, "
                    "the name's words as consecutive whole tokens (letters and digits); a caption counts once per name")

_SEPARATOR = " \n "  # between two normalised captions; "\n" never occurs in a normalised text
_MARKER = 1          # the ASCII path's caption separator byte (a caption holding it takes the other path)
_MARKER_SEPARATOR = [32, _MARKER, 32]
# lower case; letters and digits kept; the marker kept; every other byte a space (quotes are deleted apart)
_ASCII_TABLE = bytes(c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c == _MARKER) else 32
                     for c in range(256))


def normalise(texts: Any) -> Any:
    """Texts (a list or a pyarrow string array; None stays None) as REAL's matching sees them:
    lower case, quotes dropped, diacritics dropped, every run of other characters than letters
    and digits (hyphens, underscores, punctuation, whitespace) one space, no space at the ends."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    if pa.types.is_large_string(array.type) or pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        array = pc.cast(array, pa.string())
    array = pc.replace_substring_regex(array, pattern="['\"]", replacement="")
    if not _all_ascii(array):  # decomposed, then the combining marks dropped: "café" -> "cafe" (unicode61)
        array = pc.replace_substring_regex(pc.utf8_normalize(array, form="NFD"), pattern=r"\p{Mn}+", replacement="")
    array = pc.utf8_lower(array)
    array = pc.replace_substring_regex(array, pattern=r"[^\p{L}\p{N}]+", replacement=" ")
    return pc.utf8_trim(array, characters=" ")


def _as_strings(texts: Any) -> Any:
    """A batch as one pyarrow string array (a list, a chunked or large/binary column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


def _all_ascii(array: Any) -> bool:
    import pyarrow.compute as pc

    ascii_flags = pc.string_is_ascii(array)
    return bool(pc.all(ascii_flags, skip_nulls=True).as_py() in (True, None))


@dataclass
class BatchHits:
    """What one batch (or several, merged) held: per pattern, the captions that mention it, and
    with sampling, up to `keep` of those captions per pattern (the smallest by content hash)."""

    counts: dict[int, int] = field(default_factory=dict)
    samples: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # pattern -> [(hash hex, caption)]

    def merge(self, other: "BatchHits", keep: int) -> None:
        for pattern, n in other.counts.items():
            self.counts[pattern] = self.counts.get(pattern, 0) + n
        for pattern, drawn in other.samples.items():
            self.samples[pattern] = keep_smallest(self.samples.get(pattern, []) + drawn, keep)


def keep_smallest(drawn: list[tuple[str, str]], keep: int) -> list[tuple[str, str]]:
    """The `keep` samples with the smallest hash (then text): the same whatever order parts come in."""
    return heapq.nsmallest(keep, set(map(tuple, drawn)))


class NameMatcher:
    """Every name to count, as patterns of one automaton. Names that normalise alike ("t-shirt",
    "T shirt") share a pattern; a name with no letter or digit has none and counts nothing."""

    def __init__(self, names: Iterable[str]) -> None:
        import ahocorasick
        import numpy as np

        self.names = list(names)
        normalised = normalise(self.names).to_pylist()
        self.patterns: list[str] = sorted({n for n in normalised if n})
        index = {p: i for i, p in enumerate(self.patterns)}
        self.pattern_of: list[int | None] = [index[n] if n else None for n in normalised]
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for i, pattern in enumerate(self.patterns):
            self._automaton.add_word(f" {pattern} ", i)
        if self.patterns:
            self._automaton.make_automaton()
        self._lengths = np.array([len(p) for p in self.patterns], dtype=np.int64)

    def scan(self, captions: Any, keep: int = 0) -> BatchHits:
        """The hits of one batch of captions (a pyarrow array or a list; None matches nothing);
        with `keep`, up to that many matching captions (as written) per pattern."""
        import numpy as np

        hits = BatchHits()
        if not self.patterns or len(captions) == 0:
            return hits
        array = _as_strings(captions)
        caption_of, ids = self._hits(array)
        if len(ids) == 0:
            return hits
        pairs = np.unique(caption_of * len(self.patterns) + ids)  # a caption counts once per pattern
        per_pattern = np.bincount(pairs % len(self.patterns), minlength=len(self.patterns))
        hits.counts = {int(i): int(per_pattern[i]) for i in np.flatnonzero(per_pattern)}
        if keep:
            original = array.to_pylist()
            for pair in pairs.tolist():
                caption, pattern = divmod(pair, len(self.patterns))
                text = original[caption]
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
                drawn = hits.samples.setdefault(pattern, [])
                drawn.append((digest, text))
                if len(drawn) > 4 * keep:
                    hits.samples[pattern] = keep_smallest(drawn, keep)
            hits.samples = {p: keep_smallest(d, keep) for p, d in hits.samples.items()}
        return hits

    def _hits(self, array: Any) -> tuple[Any, Any]:
        """(caption index, pattern id) of every hit. ASCII captions (most of LAION's) take a fast
        path over their bytes; the others are normalised by pyarrow; both give the same text."""
        import numpy as np
        import pyarrow.compute as pc

        ascii_mask = pc.fill_null(pc.string_is_ascii(array), True)
        if pc.all(ascii_mask).as_py():
            return self._hits_ascii(array) or self._hits_unicode(array)
        ascii_part, other_part = array.filter(ascii_mask), array.filter(pc.invert(ascii_mask))
        ascii_at, ascii_ids = self._hits_ascii(ascii_part) or self._hits_unicode(ascii_part)
        other_at, other_ids = self._hits_unicode(other_part)
        mask = ascii_mask.to_numpy(zero_copy_only=False)  # hits back to their captions' places in the batch
        index = np.arange(len(array))
        return (np.concatenate([index[mask][ascii_at], index[~mask][other_at]]),
                np.concatenate([ascii_ids, other_ids]))

    def _hits_unicode(self, array: Any) -> tuple[Any, Any]:
        import numpy as np
        import pyarrow.compute as pc

        clean = pc.fill_null(normalise(array), "")
        lengths = pc.utf8_length(clean).to_numpy(zero_copy_only=False).astype(np.int64)
        starts = np.empty(len(lengths), dtype=np.int64)  # where each caption's text begins in the joined string
        starts[0] = 1
        np.cumsum(lengths[:-1] + len(_SEPARATOR), out=starts[1:])
        starts[1:] += 1
        found = list(self._automaton.iter(" " + _SEPARATOR.join(clean.to_pylist()) + " "))
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ends, ids = np.array(found, dtype=np.int64).T
        first_char = ends - self._lengths[ids]  # the pattern's first letter (after its leading space)
        return np.searchsorted(starts, first_char, side="right") - 1, ids

    def _hits_ascii(self, array: Any) -> tuple[Any, Any] | None:
        """REAL's normalisation of ASCII text as byte operations on the whole batch at once: a
        marker byte between captions, one translate (lower case, letters and digits kept, quotes
        deleted, anything else a space), runs of spaces made one by split and join. None when a
        caption holds the marker byte itself."""
        import numpy as np
        import pyarrow.compute as pc

        filled = pc.fill_null(array, "")
        if len(filled) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        _, offsets_buffer, values_buffer = filled.buffers()
        offsets = np.frombuffer(offsets_buffer, np.int32)[filled.offset: filled.offset + len(filled) + 1]
        values = np.frombuffer(values_buffer, np.uint8)[offsets[0]: offsets[-1]] if values_buffer else np.empty(0, np.uint8)
        if _MARKER in values:
            return None
        boundaries = np.repeat(offsets[1:-1] - offsets[0], 3)
        joined = np.insert(values, boundaries, np.tile(_MARKER_SEPARATOR, len(offsets) - 2)).tobytes()
        mapped = np.frombuffer(b" " + joined.translate(_ASCII_TABLE, b"'\"") + b" ", np.uint8)
        space = mapped == 32
        keep = np.ones(len(mapped), dtype=bool)
        np.logical_not(space[1:] & space[:-1], out=keep[1:])  # a run of spaces becomes its first
        text = mapped[keep]
        markers = np.flatnonzero(text == _MARKER)
        found = list(self._automaton.iter(text.tobytes().decode("ascii")))
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ends, ids = np.array(found, dtype=np.int64).T
        return np.searchsorted(markers, ends, side="right"), ids

    def name_counts(self, counts: dict[int, int]) -> list[int]:
        """Per name (in the order given), the captions counted for its pattern."""
        return [0 if p is None else counts.get(p, 0) for p in self.pattern_of]
