"""The names a class goes by: each with the sources that gave it.

Read from synonyms sets by the synonyms stage, chosen among by rename.py and by the REAL builder
in clip/; kept here so that clip/ needs nothing from stages/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Candidate", "add_name"]


@dataclass
class Candidate:
    """One name of a class, with every source that gave it (the first spelling seen is kept)."""

    name: str
    sources: list[str] = field(default_factory=list)

    @property
    def official(self) -> bool:
        return "official" in self.sources


def add_name(per_class: list[Candidate], name: str, sources: list[str]) -> None:
    """Add a name to a class's candidates, or its sources to the same name (any case) already there."""
    known = next((k for k in per_class if k.name.casefold() == name.casefold()), None)
    if known is None:
        per_class.append(Candidate(name, list(sources)))
    else:
        known.sources += [src for src in sources if src not in known.sources]
