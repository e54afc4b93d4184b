"""Test tooling, not part of the product: nothing in promptgen outside this package imports it.

`promptgen.testing.fake_server` is the local OpenAI-compatible server the tests and benchmarks
talk to instead of a real LLM (`python -m promptgen.testing.fake_server --port 8765`). It ships
in the wheel so that the README's "try it without any LLM" command works from an install.
"""
