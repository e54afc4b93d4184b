"""promptgen: LLM-written class descriptions, kept as versioned prompt sets, for zero-shot CLIP heads."""

__version__ = "0.1.0"
__all__ = ["__version__"]
