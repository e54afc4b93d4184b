"""The module import graph of promptgen/, read from the source: no cycles, and the layers stay apart.

Every import statement counts, function-local ones included: a cycle hidden behind a function-local
import is still a cycle (it only fails later, and in whichever order modules happen to load).
Function-local imports are for keeping heavy libraries out of start-up, which the last test checks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "promptgen"

# Strongly connected components allowed as they are, exactly: none.
KNOWN_CYCLES: set[frozenset[str]] = set()
# Modules outside promptgen.cli that may import it: none (the pipeline reads promptgen.steps).
KNOWN_CLI_IMPORTERS: set[str] = set()

# What `promptgen --help` must not load: each costs from tens of milliseconds to seconds.
HEAVY = ("torch", "torchvision", "open_clip", "timm", "numpy", "PIL", "litellm", "openai", "matplotlib", "jinja2",
         "wordfreq", "pydantic", "pyarrow", "pyspark", "py4j", "ahocorasick", "fsspec", "datasets", "webdataset",
         "braceexpand", "clip_benchmark")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, a package named by its __init__.py."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a promptgen module (None outside promptgen)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(promptgen module, line) for every import statement of one file, wherever it sits."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            # `from a.b import c` names the module a.b.c when there is one, else a.b
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _deepest(name, modules)
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """module -> the promptgen modules it imports, and where (file:line) each edge comes from."""
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for module, path in modules.items():
        for target, line in imported_modules(module, path, modules):
            graph[module].add(target)
            where.setdefault((module, target), f"{path.relative_to(PACKAGE.parent)}:{line}")
    return graph, where


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module (a module never counts as importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as the list of modules on it."""
    start = min(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component always has one


def describe_cycle(graph: dict[str, set[str]], where: dict[tuple[str, str], str], component: set[str]) -> str:
    cycle = one_cycle(graph, component)
    steps = [f"    {a} -> {b}  ({where[a, b]})" for a, b in zip(cycle, cycle[1:])]
    return f"  {len(component)} modules: {', '.join(sorted(component))}\n  for example:\n" + "\n".join(steps)


def test_graph_reads_every_kind_of_import(tmp_path: Path) -> None:
    """The reader itself: absolute, relative, function-local and submodule imports all become edges."""
    modules = {"promptgen": tmp_path / "__init__.py", "promptgen.a": tmp_path / "a" / "__init__.py",
               "promptgen.a.b": tmp_path / "a" / "b.py", "promptgen.a.c": tmp_path / "a" / "c.py",
               "promptgen.d": tmp_path / "d.py"}
    source = ("import os\nfrom . import c\nfrom .. import d\nfrom promptgen.a import VALUE\n"
              "def f():\n    import promptgen.d.something\n    from promptgen.a.c import g\n")
    path = tmp_path / "a" / "b.py"
    path.parent.mkdir()
    path.write_text(source)
    found = imported_modules("promptgen.a.b", path, modules)
    assert found == [("promptgen.a.c", 2), ("promptgen.d", 3), ("promptgen.a", 4), ("promptgen.d", 6),
                     ("promptgen.a.c", 7)]


def test_no_import_cycles() -> None:
    graph, where = import_graph()
    components = strongly_connected(graph)
    new = [c for c in components if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles in promptgen/:\n" + "\n".join(describe_cycle(graph, where, c) for c in new)
    stale = KNOWN_CYCLES - {frozenset(c) for c in components}
    assert not stale, f"these allowed cycles are gone (or changed): remove them from KNOWN_CYCLES: {stale}"


def test_stages_and_clip_do_not_import_each_other() -> None:
    """Stages ask the LLM, clip builds heads; the data types both need live below them both."""
    graph, where = import_graph()
    crossing = [f"{a} -> {b}  ({where[a, b]})" for a, targets in graph.items() for b in sorted(targets)
                if (a.startswith("promptgen.stages") and b.startswith("promptgen.clip"))
                or (a.startswith("promptgen.clip") and b.startswith("promptgen.stages"))]
    assert not crossing, "stages/ and clip/ import each other:\n" + "\n".join(crossing)


def test_only_the_cli_imports_the_cli() -> None:
    """The CLI sits on top: nothing imports it but itself and __main__, and its command modules take
    their shared options from promptgen.cli.common, never from promptgen.cli, which imports them all."""
    def in_cli(module: str) -> bool:
        return module == "promptgen.cli" or module.startswith("promptgen.cli.")

    graph, where = import_graph()
    allowed_outside = KNOWN_CLI_IMPORTERS | {"promptgen.__main__"}
    wrong = [f"{a} -> {b}  ({where[a, b]})" for a, targets in graph.items() for b in sorted(targets)
             if in_cli(b) and (b == "promptgen.cli" if in_cli(a) else a not in allowed_outside)]
    assert not wrong, "imports of the CLI from below it:\n" + "\n".join(wrong)


@pytest.mark.subprocess
@pytest.mark.parametrize("argv", [["--help"], ["count-names", "--help"]], ids=["promptgen", "count-names"])
def test_help_loads_no_heavy_library(argv: list[str]) -> None:
    """`promptgen --help` stays fast: torch, open_clip, the LLM SDKs, pyarrow, Spark and the like
    load only when a command needs them; a command's own --help loads no more."""
    script = ("import runpy, sys, json\n"
              f"sys.argv = ['promptgen', *{argv!r}]\n"
              "try:\n    runpy.run_module('promptgen', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert f"Usage: promptgen {' '.join(argv[:-1])}".rstrip() in done.stdout
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`promptgen {' '.join(argv)}` imports {loaded}"
