"""What every `--images` source returns, and the checks they share. Kept apart from images.py (the
encoder, the folder/CSV sources) so that image_sources.py can build ImageSets without importing the
module that dispatches to it."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.store import describe_class_mismatch

__all__ = ["ImageSet", "loose_name", "label_lookup", "check_class_names", "stat_digest"]


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


def check_class_names(found: Sequence[str], classes: ClassList, where: str) -> None:
    """The class names a source ships (classnames.txt, a dataset's `.classes`, a ClassLabel) must be
    the class list's, in label order. Compared loosely (case, spaces, _ and -), as folder names are:
    labels are indices, so only a different list or order matters, not its spelling."""
    expected = [loose_name(n) for n in classes.names]
    given = [loose_name(n) for n in found]
    if expected != given:
        raise PromptgenError(f"the classes of {where} are not those of {classes.dataset}: "
                             + describe_class_mismatch(expected, given),
                             "evaluate these images under the dataset they belong to, or give their class list "
                             "in label order with --classes FILE")


def stat_digest(kind: str, paths: Iterable[str | Path], *extra: str) -> str:
    """A fingerprint from each file's path, size and modification time (and `extra` strings)."""
    digest = hashlib.sha256(kind.encode())
    for part in extra:
        digest.update(f"|{part}".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"\n{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"\n{path}|missing".encode())
    return digest.hexdigest()[:24]
