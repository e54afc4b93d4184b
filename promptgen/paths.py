"""Where promptgen reads and writes: one root holding `prompts/` and `cache/`.

The root is `--root DIR`, else `$PROMPTGEN_HOME`, else the current directory. The query
templates and descriptor sets that ship with promptgen live in the project's own `prompts/`
folder and are found there whatever the root. Which set versions ship is listed in
`prompts/shipped.json`, never inferred from where a folder is: a run made inside a checkout
writes to that same folder, and its output must stay the user's own.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

__all__ = ["resolve_root", "prompts_dir", "cache_dir", "BUILTIN_PROMPTS_DIR", "user_templates_dir", "shipped_versions"]

_PACKAGED = Path(__file__).resolve().parent / "_prompts"  # in an installed wheel
BUILTIN_PROMPTS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    chosen = root or os.environ.get("PROMPTGEN_HOME") or os.getcwd()
    return Path(chosen).expanduser().resolve()


def prompts_dir(root: Path) -> Path:
    return root / "prompts"


def cache_dir(root: Path) -> Path:
    return root / "cache"


def user_templates_dir(root: Path) -> Path:
    return prompts_dir(root) / "templates"


@functools.cache
def shipped_versions() -> dict[tuple[str, str], frozenset[int]]:
    """(dataset, set) -> the versions that ship with promptgen, from `prompts/shipped.json`."""
    path = BUILTIN_PROMPTS_DIR / "shipped.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    sets = data.get("sets") if data.get("format") == "promptgen.shipped/1" else None
    if not isinstance(sets, dict) or not all(name.count("/") == 1 and all(name.split("/")) and isinstance(v, list)
                                             and all(isinstance(n, int) for n in v) for name, v in sets.items()):
        raise ValueError(f"{path} is not a promptgen.shipped/1 list of {{\"DATASET/SET\": [versions]}}")
    return {tuple(name.split("/")): frozenset(versions) for name, versions in sets.items()}
