"""A wheel (a non-editable install) carries the templates, class lists and shipped sets."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from promptgen.paths import shipped_versions
from tests.conftest import copy_checkout

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.subprocess  # pip builds a wheel


def test_wheel_contains_the_data_promptgen_reads_at_run_time(tmp_path):
    """Built from a checkout in which someone ran promptgen: their sets and request logs stay out,
    and the prompt sets in the wheel are exactly those prompts/shipped.json lists."""
    checkout = copy_checkout(tmp_path / "checkout")
    own = checkout / "prompts" / "cifar10" / "dclip"
    own.mkdir(parents=True)
    for name in ("v1.jsonl", "v1.manifest.json", "v1.requests.jsonl"):
        (own / name).write_text("{}\n")
    (checkout / "prompts" / "imagenet" / "dclip-published" / "v1.requests.jsonl").write_text("{}\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(checkout),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("promptgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "prompts" / "templates").glob("*.json")}
    assert templates and {f"promptgen/_prompts/templates/{t}" for t in templates} <= names
    assert "promptgen/_prompts/imagenet/dclip-published/v1.jsonl" in names
    assert "promptgen/_prompts/LICENSE-WaffleCLIP.md" in names and "promptgen/_prompts/shipped.json" in names
    assert "promptgen/data/classnames/imagenet.json" in names
    assert "promptgen/clip/model_configs/promptgen-tiny.json" in names
    assert "promptgen/testing/fake_server.py" in names        # the README's try-it-without-an-LLM server
    assert {"promptgen/audit/templates/report.html.j2", "promptgen/audit/templates/report.md.j2"} <= names
    clip_data = {p.name for p in (ROOT / "prompts" / "clip").iterdir()}
    assert {"openai80.json", "waffle_words.txt"} <= clip_data
    assert {f"promptgen/_prompts/clip/{n}" for n in clip_data} <= names
    assert not any("requests.jsonl" in n or n.endswith(".lock") for n in names)
    sets = {match.groups() for match in map(re.compile(r"promptgen/_prompts/([^/]+)/([^/]+)/v(\d+)\.jsonl").fullmatch,
                                            names) if match}
    assert sets == {(dataset, set_name, str(v)) for (dataset, set_name), versions in shipped_versions().items()
                    for v in versions}
    assert all(f"promptgen/_prompts/{d}/{s}/v{v}.manifest.json" in names for d, s, v in sets)
