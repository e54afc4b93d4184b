"""Class lists: the built-in datasets and user files. Classes are identified by index.

Built-in lists are data files in `promptgen/data/classnames/` (see the README there for where
each list comes from). A user list is a text file with one name per line (optionally
`id<TAB>name`), or a JSON list of names or of {"name": ..., "id": ...} objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from promptgen.errors import PromptgenError

__all__ = ["ClassList", "list_datasets", "load_dataset", "load_class_file", "resolve_classes", "loose_name",
           "class_name_matcher"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "classnames"
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class ClassList:
    """An ordered list of unique class names; index i is label i."""

    dataset: str
    names: tuple[str, ...]
    ids: tuple[str, ...] | None = None
    source: str = ""
    title: str = ""
    clip_benchmark_key: str | None = None
    notes: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_names(self.names, where=self.source or self.dataset)
        if self.ids is not None and len(self.ids) != len(self.names):
            raise PromptgenError(f"{self.dataset}: {len(self.ids)} ids for {len(self.names)} names",
                                 "give every class an id, or none")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def hash(self) -> str:
        """sha256 of the ordered names (and ids): two lists with the same hash label images alike."""
        payload = json.dumps({"names": list(self.names), "ids": list(self.ids) if self.ids else None},
                             ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

    def index_of(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def loose_name(text: object) -> str:
    """A name with case, spaces, '_' and '-' ignored: "Fire-Truck" ~ "fire_truck" ~ "fire truck"."""
    return " ".join(re.sub(r"[_\-]+", " ", str(text)).lower().split())


def check_names(names: tuple[str, ...] | list[str], where: str) -> None:
    if not names:
        raise PromptgenError(f"{where}: the class list is empty", "give at least one class name")
    positions: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise PromptgenError(f"{where}: class {i} has an empty name", "remove the blank entry or name it")
        if name != name.strip():
            raise PromptgenError(f"{where}: class {i} name {name!r} has leading or trailing spaces",
                                 "strip the name")
        if len(name) > MAX_NAME_CHARS:
            raise PromptgenError(f"{where}: class {i} name is {len(name)} characters long",
                                 f"class names are at most {MAX_NAME_CHARS} characters")
        positions[name].append(i)
    duplicates = {name: idx for name, idx in positions.items() if len(idx) > 1}
    if duplicates:
        listed = "; ".join(f"{name!r} at indices {', '.join(map(str, idx))}" for name, idx in duplicates.items())
        raise PromptgenError(f"{where}: duplicate class names: {listed}",
                             "rename the duplicates so every class has a distinct name (classes are matched by name "
                             "in exported files, so duplicates would merge classes)")


def list_datasets() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def load_dataset(name: str) -> ClassList:
    path = DATA_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(list_datasets())
        raise PromptgenError(f"unknown dataset {name!r}",
                             f"use one of: {known}; or give your own list with --classes FILE")
    data = json.loads(path.read_text(encoding="utf-8"))
    return ClassList(dataset=name, names=tuple(data["classes"]), ids=tuple(data["ids"]) if data.get("ids") else None,
                     source=data.get("source", ""), title=data.get("title", name),
                     clip_benchmark_key=data.get("clip_benchmark_key"), notes=data.get("notes", ""))


def load_class_file(path: str | Path, dataset: str | None = None) -> ClassList:
    path = Path(path)
    if not path.is_file():
        raise PromptgenError(f"class file {str(path)!r} does not exist", "check the path given to --classes")
    text = path.read_text(encoding="utf-8-sig")
    names: list[str] = []
    ids: list[str] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptgenError(f"{path}: not valid JSON ({exc})", "fix the JSON, or use one name per line") from None
        for i, item in enumerate(items):
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                names.append(item["name"])
                if "id" in item:
                    ids.append(str(item["id"]))
            else:
                raise PromptgenError(f"{path}: entry {i} is {item!r}",
                                     'each entry must be a name or {"name": ..., "id": ...}')
    else:
        for line in text.splitlines():
            if not line.strip():
                continue
            if "\t" in line:
                class_id, _, name = line.partition("\t")
                ids.append(class_id.strip())
                names.append(name.strip())
            else:
                names.append(line.strip())
    if ids and len(ids) != len(names):
        raise PromptgenError(f"{path}: {len(ids)} of {len(names)} classes have an id",
                             "give every class an id (id<TAB>name), or none")
    return ClassList(dataset=dataset or path.stem, names=tuple(names), ids=tuple(ids) if ids else None,
                     source=f"file {path.name}", title=dataset or path.stem)


def resolve_classes(dataset: str, classes_file: str | Path | None = None) -> ClassList:
    """The class list for a command: a user file when given, else the built-in dataset."""
    if classes_file:
        return load_class_file(classes_file, dataset)
    return load_dataset(dataset)


def class_name_matcher(classes: ClassList, exclude: tuple[int, ...] = (), plurals: bool = False
                       ) -> Callable[[str], set[int]]:
    """A function giving the classes a text names: whole phrases ('-', '_' and spaces alike), the
    longest name winning where names overlap ("a wild cat" names "wild cat", not "cat"). With
    `plurals`, a last word ending in -s/-es also names the singular ("tigers" names "tiger"). Word
    n-grams are looked up in a table, so the cost does not grow with the number of classes."""
    table: dict[tuple[str, ...], set[int]] = {}
    for index, name in enumerate(classes.names):
        words = tuple(_words(name))
        if words:
            table.setdefault(words, set()).add(index)
    longest = max((len(w) for w in table), default=1)

    def lookup(words: tuple[str, ...]) -> set[int] | None:
        hit = table.get(words)
        if hit is None and plurals and len(words[-1]) > 3:
            for suffix in ("es", "s"):
                if words[-1].endswith(suffix):
                    hit = table.get(words[:-1] + (words[-1][:-len(suffix)],))
                    if hit:
                        break
        return hit

    def named(text: str) -> set[int]:
        words = _words(text)
        covered = [False] * len(words)
        found: set[int] = set()
        for length in range(min(longest, len(words)), 0, -1):
            for start in range(len(words) - length + 1):
                if any(covered[start:start + length]):
                    continue
                hit = lookup(tuple(words[start:start + length]))
                if hit:
                    found |= hit
                    covered[start:start + length] = [True] * length
        return found - set(exclude)
    return named


def _words(text: str) -> list[str]:
    """Lower-cased words, a possessive 's dropped ("a dog's tail" names "dog")."""
    return [w[:-2] if w.endswith("'s") else w for w in re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.casefold())]
