"""A wheel (a non-editable install) carries the templates, class lists and shipped sets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_the_data_promptgen_reads_at_run_time(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("promptgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "prompts" / "templates").glob("*.json")}
    assert templates and {f"promptgen/_prompts/templates/{t}" for t in templates} <= names
    assert "promptgen/_prompts/imagenet/dclip-published/v1.jsonl" in names
    assert "promptgen/_prompts/LICENSE-WaffleCLIP.md" in names and "promptgen/_prompts/shipped.json" in names
    assert "promptgen/data/classnames/imagenet.json" in names
    assert "promptgen/clip/model_configs/promptgen-tiny.json" in names
    assert {"promptgen/audit/templates/report.html.j2", "promptgen/audit/templates/report.md.j2"} <= names
    clip_data = {p.name for p in (ROOT / "prompts" / "clip").iterdir()}
    assert {"openai80.json", "waffle_words.txt"} <= clip_data
    assert {f"promptgen/_prompts/clip/{n}" for n in clip_data} <= names
    assert not any("requests.jsonl" in n or n.endswith(".lock") for n in names)
