"""Looking at what is stored: versions, show, templates, paths; and the root setting."""

from __future__ import annotations

import asyncio
import json

import pytest

from promptgen.errors import PromptgenError
from promptgen.llm.client import LLMClient, LLMRequest
from tests.conftest import run_cli


@pytest.fixture
def two_sets(cli):
    assert cli("describe", "cifar10", "--source", "wordnet").exit_code == 0
    assert cli("describe", "cifar10", "--source", "wordnet").exit_code == 0
    return cli


def test_versions_lists_every_version_with_status_and_size(two_sets):
    rows = json.loads(two_sets("versions", "cifar10", "--json").stdout)
    assert [(r["ref"], r["status"], r["records"]) for r in rows] == [
        ("cifar10/wordnet@v1", "complete", 10), ("cifar10/wordnet@v2", "complete", 10)]
    assert rows[1]["parent"] == "cifar10/wordnet@v1"
    table = two_sets("versions", "cifar10").stdout
    assert "cifar10/wordnet@v2" in table and "complete" in table


def test_show_filters_by_class_and_suggests_close_names(two_sets):
    records = json.loads(two_sets("show", "cifar10/wordnet@v1", "--class", "cat", "--json").stdout)
    assert [r["class_name"] for r in records] == ["cat"] and records[0]["text"].startswith("cat: ")
    result = two_sets("show", "cifar10/wordnet", "--class", "cta")
    assert result.exit_code == 2 and "did you mean 'cat'" in result.stderr
    text = two_sets("show", "cifar10/wordnet").stdout
    assert "[3] cat" in text and "(wordnet/gloss; " in text
    manifest = json.loads(two_sets("show", "cifar10/wordnet@v2", "--manifest").stdout)
    assert manifest["version"] == 2 and manifest["source"] == "wordnet"
    listing = json.loads(two_sets("show", "cifar10", "--json").stdout)
    assert "wordnet" in listing["sets"] and "dclip-published" not in listing["sets"]


def test_show_errors_name_what_exists(cli):
    result = cli("show", "cifar10/nothing")
    assert result.exit_code == 2 and "no prompt set cifar10/nothing" in result.stderr
    cli("describe", "cifar10", "--source", "wordnet")
    result = cli("show", "cifar10/wordnet@v7")
    assert result.exit_code == 2 and "versions: v1" in result.stderr
    result = cli("show", "cifar10/wordnet@latest")
    assert result.exit_code == 2 and "@v1" in result.stderr


def test_root_comes_from_option_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTGEN_HOME", str(tmp_path / "home"))
    paths = json.loads(run_cli("paths", "--json").stdout)
    assert paths["root"] == str(tmp_path / "home") and paths["cache"] == str(tmp_path / "home" / "cache")
    assert run_cli("describe", "cifar10", "--source", "wordnet").exit_code == 0
    assert (tmp_path / "home/prompts/cifar10/wordnet/v1.jsonl").exists()
    paths = json.loads(run_cli("paths", "--json", "--root", str(tmp_path / "other")).stdout)
    assert paths["root"] == str(tmp_path / "other")


def test_templates_command_lists_builtin_and_user_templates(cli, root):
    (root / "prompts" / "templates").mkdir(parents=True)
    (root / "prompts" / "templates" / "colors.v1.json").write_text(json.dumps(
        {"questions": [{"id": "color", "text": "What color is {a} {c}?"}], "sampling": {"n": 1}}))
    rows = {t["ref"] for t in json.loads(cli("templates", "--json").stdout)}
    assert {"cupl@v1", "cupl-base@v1", "dclip@v1", "colors@v1"} <= rows


def test_user_template_drives_a_describe_run(cli, fake_llm, root):
    (root / "prompts" / "templates").mkdir(parents=True)
    (root / "prompts" / "templates" / "colors.v1.json").write_text(json.dumps(
        {"questions": [{"id": "color", "text": "What color is {a} {c}?"}], "sampling": {"n": 2, "max_tokens": 20}}))
    result = cli("describe", "cifar10", "--style", "colors", "--model", "openai/test", "--api-base", fake_llm.url,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    asked = {body["messages"][-1]["content"] for body in fake_llm.state.requests}
    assert "What color is an airplane?" in asked and len(asked) == 10
    manifest = json.loads((root / "prompts/cifar10/colors/v1.manifest.json").read_text())
    assert manifest["template"]["ref"] == "colors@v1" and manifest["sampling"]["n"] == 2


def test_openai_transport_is_refused_for_other_providers():
    client = LLMClient("anthropic/claude-3-5-haiku-20241022", transport="openai", progress=False)
    with pytest.raises(PromptgenError, match="OpenAI-compatible"):
        client.transport


def test_run_inside_an_event_loop_points_to_arun(fake_llm, tmp_path):
    client = LLMClient("openai/test", api_base=fake_llm.url, progress=False)
    request = LLMRequest.make([{"role": "user", "content": "hi"}], {"max_tokens": 5})

    async def inside() -> int:
        with pytest.raises(PromptgenError, match="arun"):
            client.run([request], lambda r, a: None)
        stats = await client.arun([request], lambda r, a: None)
        return stats.sent

    assert asyncio.run(inside()) == 1
