"""The README's two quick-start commands are the ones CI and users run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("The same job with an LLM", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def test_readme_has_exactly_two_commands_main_job_and_tests():
    main_job, tests = quick_start_commands()
    assert "promptgen describe cifar10 --source wordnet" in main_job and "pip install -e ." in main_job
    assert tests == "./scripts/test"
    script = (ROOT / "scripts" / "test").read_text()
    assert "pip install -e '.[test]'" in script and "python -m pytest" in script
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in script and "HF_HUB_OFFLINE=1" in script
    # every system package a test needs is installed by the script itself
    for package in ("chromium", "chromium-driver", "dataset-fashion-mnist"):
        assert re.search(rf"packages\+=\([^)]*(?<![\w-]){package}(?![\w-])", script), package
    assert 'apt-get install -y -q "${packages[@]}"' in script
    assert (ROOT / "scripts" / "test").stat().st_mode & 0o111, "scripts/test must be executable"


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [tests]


def test_every_cli_command_in_the_readme_table_exists():
    from promptgen.cli import main

    table = (ROOT / "README.md").read_text()
    named = set(re.findall(r"^\| `promptgen ([\w-]+)", table, flags=re.M))
    assert named and named <= set(main.commands)


TIERS = {"slow", "browser", "subprocess"}
FAST = "not slow and not browser and not subprocess"


def script_calls(tmp_path: Path, *args: str, ruff_status: int = 0) -> tuple[int, list[list[str]]]:
    """scripts/test run in an empty checkout whose python3, .venv/bin/pip and .venv/bin/python only
    write down how they were called (`python -m ruff` then exits with `ruff_status`): its exit status
    and the commands it ran, in order."""
    checkout, log = tmp_path / "checkout", tmp_path / "calls"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "test", checkout / "scripts" / "test")
    record = f"""#!/bin/sh
{{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\\t%s' "$a"; done; printf '\\n'; }} >> '{log}'
if [ "$1 $2" = "-m ruff" ]; then exit {ruff_status}; fi
"""
    venv = checkout / ".venv" / "bin"
    for stub in (tmp_path / "bin" / "python3", venv / "pip", venv / "python"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(record)
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PROMPTGEN_CHROMIUM": "chromium", "PROMPTGEN_FASHION_MNIST": "fashion-mnist"}  # nothing to apt-get
    done = subprocess.run([str(checkout / "scripts" / "test"), *args], env=env, capture_output=True, text=True,
                          timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return done.returncode, calls


def test_the_test_tiers_are_registered_markers_and_unknown_ones_are_refused():
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert {marker.split(":")[0] for marker in pytest_options["markers"]} == TIERS
    assert "--strict-markers" in pytest_options["addopts"].split()


def test_fast_leaves_out_the_tiers_and_everything_else_goes_to_pytest(tmp_path):
    status, calls = script_calls(tmp_path, "--fast", "-k", "readme", "-x")
    assert status == 0
    assert calls == [["python3", "-m", "venv", ".venv"], ["pip", "install", "-e", ".[test]"],
                     ["python", "-m", "ruff", "check", "."],
                     ["python", "-m", "pytest", "-m", FAST, "-k", "readme", "-x"]]
    assert set(FAST.split()) - {"not", "and"} == TIERS


def test_without_fast_every_test_runs(tmp_path):
    for args in ((), ("-q", "tests/test_readme.py")):
        status, calls = script_calls(tmp_path / str(len(args)), *args)
        assert status == 0
        assert calls[-2:] == [["python", "-m", "ruff", "check", "."], ["python", "-m", "pytest", *args]]


def test_a_ruff_finding_fails_the_run_before_any_test(tmp_path):
    for args in (("--fast",), ()):
        status, calls = script_calls(tmp_path / str(len(args)), *args, ruff_status=1)
        assert status == 1
        assert calls[-1] == ["python", "-m", "ruff", "check", "."]


def test_ruff_is_configured_and_installed_with_the_tests():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"F", "E9"} <= set(pyproject["tool"]["ruff"]["lint"]["select"])
    assert any(re.match(r"ruff\b", dependency) for dependency in pyproject["project"]["optional-dependencies"]["test"])
