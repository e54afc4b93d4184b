"""promptgen.testing is test tooling: no module of the product may import it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "promptgen"


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` (the text of `module`, e.g. "promptgen.llm.client") imports, relative
    imports resolved, with `from X import name` counted as both X and X.name (name may be a module)."""
    package = module.rsplit(".", 1)[0]  # what `from . import x` means in `module`
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def imports_testing(source: str, module: str) -> bool:
    return any(name == "promptgen.testing" or name.startswith("promptgen.testing.")
               for name in imported_modules(source, module))


def product_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[:2] == ("promptgen", "testing"):
            continue
        modules[".".join(parts)] = path  # "promptgen.cli.__init__": its relative imports start at promptgen.cli
    return modules


def test_the_check_sees_every_way_of_importing_the_testing_package():
    module = "promptgen.llm.client"
    for source in ("import promptgen.testing.fake_server", "from promptgen.testing import fake_server",
                   "from promptgen.testing.fake_server import Fault", "from ..testing import fake_server",
                   "from .. import testing", "from ..testing.fake_server import FakeLLMServer",
                   "def f():\n    from promptgen import testing\n"):
        assert imports_testing(source, module), source
    for source in ("import promptgen.llm.cache", "from . import cache", "from ..stages import describe",
                   "from promptgen import testing_helpers"):
        assert not imports_testing(source, module), source


def test_no_product_module_imports_promptgen_testing():
    modules = product_modules()
    assert "promptgen.llm.client" in modules and "promptgen.cli.__init__" in modules
    assert not any(name.startswith("promptgen.testing") for name in modules)
    offenders = [name for name, path in modules.items() if imports_testing(path.read_text(), name)]
    assert offenders == [], f"{offenders} import promptgen.testing, which is test tooling"
