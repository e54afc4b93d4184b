"""What a pipeline unit's key is made of: the identity of its command, options and inputs.

A unit's key is the sha256 of its identity (command, dataset, class list, options, and the
content of everything it reads); the state file keeps the identity with credentials removed, so
a plan can say what changed. `--build` specs are split by promptgen.build_spec, as `promptgen
eval` splits them.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from promptgen.build_spec import split_build
from promptgen.fileio import canonical_json, sha256_file
from promptgen.redact import redact, redact_url

__all__ = ["key_of", "stored", "shown", "map_build", "content_identity", "changed",
           "BUILD_FILE_PARAMS"]

BUILD_FILE_PARAMS = ("initial", "rename", "zpe_pool")  # build options whose values are files


def map_build(spec: str, pin: Callable[[str], str], file_ref: Callable[[Any, bool], Any]) -> str:
    """BUILDER[:SRC+SRC][,key=value...] with set sources pinned, step names made paths, and files
    (sources or values) keyed by content."""
    split = split_build(spec)
    head = split.builder
    if split.source_text:
        head += ":" + "+".join(str(file_ref(pin(s.strip()), False)) for s in split.sources)
    mapped = []
    for param in split.params:
        key, _, value = param.partition("=")
        mapped.append(f"{key}={file_ref(value.strip(), True)}" if key.strip() in BUILD_FILE_PARAMS else param)
    return ",".join([head, *mapped])


def key_of(identity: dict) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def stored(value: Any) -> Any:
    """The identity as the state file keeps it (for the plan's "changed: ..."): every string with
    credentials in URLs and key-like values removed. The key is the hash of the identity as given."""
    if isinstance(value, dict):
        return {stored(k): stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return shown(value) if isinstance(value, str) else value


def shown(text: str) -> str:
    """Text as it may be printed or kept: URLs without credentials, key-like values removed."""
    return redact(" ".join(redact_url(word) if "://" in word else word for word in text.split(" ")))


IMAGE_SOURCE_PREFIXES = ("wds:", "hf:", "clip_benchmark:")


def content_identity(value: str, memo: dict) -> str | None:
    """A path's content as the key sees it: a file's sha256, a folder's or a glob's listing (names,
    sizes, times); None for anything that is not a path. `memo` (one per runner) keeps files by
    (path, size, mtime) and folders by path, so an ImageNet folder is walked once per run. An image
    source spec (`wds:`, `hf:`, `clip_benchmark:`) is keyed by what its files and folders hold."""
    if value.startswith(IMAGE_SOURCE_PREFIXES):
        from promptgen.clip.image_sources import source_paths

        paths = source_paths(value)
        if paths is not None:
            parts = [(path, content_identity(path, memo)) for path in paths]
            return "source:" + hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    path = Path(value).expanduser()
    if any(ch in value for ch in "*?[") and "://" not in value:  # count-names --captions 'shards/*.parquet'
        entries = []
        for item in sorted(glob.glob(str(path), recursive=True)):
            try:
                stat = os.stat(item)
            except OSError:
                continue
            entries.append((item, stat.st_size, stat.st_mtime_ns))
        return "glob:" + hashlib.sha256(canonical_json(entries).encode()).hexdigest() if entries else None
    try:
        if path.is_file():
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in memo:
                memo[key] = sha256_file(path)
            return memo[key]
        if path.is_dir():
            key = ("folder", str(path.resolve()))
            if key not in memo:
                entries = []
                for item in sorted(path.rglob("*")):
                    stat = item.stat()
                    if item.is_file():
                        entries.append((str(item.relative_to(path)), stat.st_size, stat.st_mtime_ns))
                memo[key] = "listing:" + hashlib.sha256(canonical_json(entries).encode()).hexdigest()
            return memo[key]
    except OSError:
        pass
    return None


def changed(old: dict, new: dict) -> str:
    keys = []
    for key in sorted(set(old) | set(new)):
        if key in ("options", "inputs"):
            label = "option" if key == "options" else "input"
            keys += [f"{label} {k}" for k in sorted(set(old.get(key) or {}) | set(new.get(key) or {}))
                     if (old.get(key) or {}).get(k) != (new.get(key) or {}).get(k)]
        elif old.get(key) != new.get(key):
            keys.append(key.replace("set:", "input set ").replace("file:", "input "))
    return ", ".join(keys) or "settings"
