"""The package version, in a module that imports nothing: modules below the package's
`__init__` read it here, so the package itself can import the head API lazily without
an import cycle (tests/test_import_graph.py)."""

__version__ = "0.1.0"
