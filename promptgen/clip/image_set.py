"""What every `--images` source returns, and the name matching they share. Kept apart from images.py
(the encoder, the folder/CSV sources) so that a module of further sources can build ImageSets without
importing the module that dispatches to it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from promptgen.classes import ClassList

__all__ = ["ImageSet", "loose_name", "label_lookup"]


@dataclass
class ImageSet:
    """Labelled images to encode: `load(i)` returns a PIL image (or raises), `labels[i]` its class."""

    name: str
    keys: list[str]                      # path or item id, for reports and the fingerprint
    labels: list[int]
    load: Callable[[int], Any]
    fingerprint: str                     # changes whenever an image or label could have changed
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


def loose_name(name: str) -> str:
    # "/" cannot appear in a folder name ("T-shirt/top" is stored as t-shirt_top)
    return re.sub(r"[\s_\-/\\]+", " ", name.strip().lower())


def label_lookup(classes: ClassList) -> dict[str, int]:
    """Class name (exact or loose) or WordNet id -> label index."""
    lookup: dict[str, int] = {}
    for index, name in enumerate(classes.names):
        lookup.setdefault(name, index)
        lookup.setdefault(loose_name(name), index)
        if classes.ids:
            lookup.setdefault(classes.ids[index], index)
    return lookup
