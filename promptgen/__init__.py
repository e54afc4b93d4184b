"""promptgen: LLM-written class descriptions, kept as versioned prompt sets, for zero-shot CLIP heads."""

from promptgen.version import __version__

__all__ = ["__version__"]
