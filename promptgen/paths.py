"""Where promptgen reads and writes: one root holding `prompts/` and `cache/`.

The root is `--root DIR`, else `$PROMPTGEN_HOME`, else the current directory. The query
templates and descriptor sets that ship with promptgen live in the project's own `prompts/`
folder and are found there whatever the root.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_root", "prompts_dir", "cache_dir", "BUILTIN_PROMPTS_DIR", "user_templates_dir"]

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
