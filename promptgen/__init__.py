"""promptgen: LLM-written class descriptions, kept as versioned prompt sets, for zero-shot CLIP heads.

From Python, a head file any classifier can use:

    import promptgen
    head = promptgen.load_head("dclip.safetensors")   # .weights (D, C), .class_names, .provenance, .as_linear()
    top = promptgen.classify(image_features, head, k=5)
"""

from __future__ import annotations

from typing import Any

from promptgen.version import __version__

__all__ = ["__version__", "load_head", "classify"]

_LAZY = ("load_head", "classify")


def __getattr__(name: str) -> Any:
    # imported on first use: the head API needs torch, and `import promptgen` (the CLI's --help
    # included) must not pay for it
    if name in _LAZY:
        from promptgen.clip import head_api

        return getattr(head_api, name)
    raise AttributeError(f"module 'promptgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
