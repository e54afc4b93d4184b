"""Shared fixtures. Tests never reach the network: LLM calls go to a local fake server."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner, Result  # noqa: E402

from promptgen.testing.fake_server import FakeLLMServer  # noqa: E402


@pytest.fixture
def fake_llm():
    """A fresh OpenAI-compatible fake server on a free port; `.url` is the api base."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty promptgen root (prompts/ and cache/ go here)."""
    monkeypatch.delenv("PROMPTGEN_HOME", raising=False)
    return tmp_path / "root"


def run_cli(*args: str, root: Path | None = None) -> Result:
    """Run the promptgen CLI in-process and return click's result (exit_code, output, stderr)."""
    from promptgen.cli import main

    argv = [str(a) for a in args] + (["--root", str(root)] if root is not None else [])
    return CliRunner().invoke(main, argv, catch_exceptions=False)


@pytest.fixture
def cli(root: Path):
    def invoke(*args: str) -> Result:
        return run_cli(*args, root=root)
    return invoke


@pytest.fixture(scope="session")
def tiny_clip():
    """The project's tiny open_clip config (width 64, 2 layers, embed 64), random weights, seed 0.
    Shared by the session: tests must not modify its weights."""
    from promptgen.clip.models import load_clip

    return load_clip("promptgen-tiny", "random", seed=0)


TINY_ARGS = ("--clip-model", "promptgen-tiny", "--pretrained", "random")


CHECKOUT = Path(__file__).resolve().parent.parent


def copy_checkout(destination: Path) -> Path:
    """The files git tracks in this checkout (as they are in the working tree), copied to
    `destination`: what a fresh clone holds, without the clone."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=CHECKOUT, capture_output=True, text=True, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        if (CHECKOUT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, destination / name)
    return destination


def hold_lock(script: str, target: Path, tmp_path: Path, mode: str) -> subprocess.Popen:
    """A process of its own running `python -c script TARGET READY MODE` with this checkout's
    promptgen: the script takes a lock on or in `target`, writes READY, then keeps the lock MODE
    seconds or, with "kill", SIGKILLs itself. Returned once READY is written (or the killer died)."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    process = subprocess.Popen([sys.executable, "-c", script, str(target), str(ready), mode], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None or mode == "kill", "the holder died"
        if mode == "kill" and process.poll() is not None:
            break
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    return process
