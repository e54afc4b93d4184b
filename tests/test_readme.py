"""The README's two quick-start commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

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
