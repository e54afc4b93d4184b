"""`promptgen run PIPELINE.toml`: units keyed by their inputs, skipped when unchanged, rerun when
an input changed (and only what reads it), references pinned, bad files refused before anything
runs, failures isolated, the run log adding up, and the shipped examples working."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
TINY = ("--override", "defaults.clip-model=promptgen-tiny", "--override", "defaults.pretrained=random")


def write_pipeline(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def plan(root: Path, pipeline: Path, *extra: str) -> dict[str, dict]:
    result = run_cli("run", pipeline, "--plan", "--json", *extra, root=root)
    assert result.exit_code == 0, result.output
    return {u["unit"]: u for u in json.loads(result.stdout)["units"]}


def run(root: Path, pipeline: Path, *extra: str, code: int = 0) -> dict[str, dict]:
    result = run_cli("run", pipeline, "--json", *extra, root=root)
    assert result.exit_code == code, result.output
    return {u["unit"]: u for u in json.loads(result.stdout)["units"]}


def actions(units: dict[str, dict]) -> dict[str, str]:
    return {k: u["action"] for k, u in units.items()}


LLM_PIPELINE = """
    name = "p"
    datasets = ["cifar10"]

    [defaults]
    model = "openai/test"
    api-base = "{url}"
    no-progress = true
    clip-model = "promptgen-tiny"
    pretrained = "random"

    [[steps]]
    name = "cupl"
    command = "describe"
    style = "cupl"
    draw = {draw}

    [[steps]]
    name = "syn"
    command = "synonyms"
    source = "wordnet"

    [[steps]]
    name = "head-cupl"
    command = "head"
    builder = "cupl"
    set = "cupl"

    [[steps]]
    name = "head-real"
    command = "head"
    builder = "real"
    set = "synonyms"
    scorer = "frequency"
"""


@pytest.fixture
def llm_pipeline(tmp_path: Path, fake_llm):
    def make(draw: int = 0, extra: str = "") -> Path:
        return write_pipeline(tmp_path / "p.toml", LLM_PIPELINE.format(url=fake_llm.url, draw=draw) + extra)
    return make


def test_a_rerun_skips_every_unchanged_unit_and_sends_nothing(root, llm_pipeline, fake_llm):
    pipeline = llm_pipeline()
    first = run(root, pipeline)
    assert set(actions(first).values()) == {"run"} and len(first) == 4
    sent = fake_llm.request_count
    assert sent == 50  # cifar10 x CuPL's 5 questions, n in one request
    state = json.loads((root / "pipelines" / "p.json").read_text())
    assert {u: s["status"] for u, s in state["units"].items()} == dict.fromkeys(first, "done")
    assert state["units"]["cifar10/cupl"]["output"]["set"] == "cifar10/cupl@v1"
    head = root / "pipelines" / "p" / "cifar10" / "head-cupl.pt"
    assert state["units"]["cifar10/head-cupl"]["output"]["path"] == str(head) and head.is_file()

    assert set(actions(plan(root, pipeline)).values()) == {"skip"}
    again = run(root, pipeline)
    assert set(actions(again).values()) == {"skip"}
    assert fake_llm.request_count == sent
    assert not (root / "prompts" / "cifar10" / "cupl" / "v2.manifest.json").exists()


@pytest.mark.slow
def test_a_changed_input_reruns_it_and_what_reads_it_and_nothing_else(root, llm_pipeline, fake_llm):
    run(root, llm_pipeline())
    head_before = (root / "pipelines" / "p" / "cifar10" / "head-cupl.pt").read_bytes()
    changed = llm_pipeline(draw=1)  # new samples: new descriptions
    planned = plan(root, changed)
    assert actions(planned) == {"cifar10/cupl": "run", "cifar10/syn": "skip", "cifar10/head-cupl": "after",
                                "cifar10/head-real": "skip"}
    assert "option draw" in planned["cifar10/cupl"]["reason"]
    units = run(root, changed)
    assert actions(units) == {"cifar10/cupl": "run", "cifar10/syn": "skip", "cifar10/head-cupl": "run",
                              "cifar10/head-real": "skip"}
    assert units["cifar10/cupl"]["output"]["set"] == "cifar10/cupl@v2"
    assert "input set cupl" in units["cifar10/head-cupl"]["reason"]
    assert (root / "pipelines" / "p" / "cifar10" / "head-cupl.pt").read_bytes() != head_before


def test_a_step_that_reruns_to_the_same_content_does_not_rerun_what_reads_it(root, llm_pipeline, fake_llm):
    """Outputs are addressed by content: a new version with identical records changes nothing downstream."""
    run(root, llm_pipeline())
    sent = fake_llm.request_count
    # how a step runs is not part of its key
    assert set(actions(plan(root, llm_pipeline(), "--override", "steps.cupl.concurrency=3",
                            "--override", "defaults.no-progress=false", "--override", "defaults.batch-poll=1"))
               .values()) == {"skip"}
    # a keyed option that happens not to change the answers: a new version with the same records
    units = run(root, llm_pipeline(), "--override", "steps.cupl.answer-retries=3")
    assert actions(units) == {"cifar10/cupl": "run", "cifar10/syn": "skip", "cifar10/head-cupl": "skip",
                              "cifar10/head-real": "skip"}
    assert units["cifar10/cupl"]["output"]["set"] == "cifar10/cupl@v2"
    assert fake_llm.request_count == sent  # the answers came from the cache


def test_editing_a_query_template_reruns_the_stage_that_used_it(root, tmp_path, fake_llm):
    templates = root / "prompts" / "templates"
    templates.mkdir(parents=True)
    source = json.loads((REPO / "prompts" / "templates" / "cupl-base.v1.json").read_text())
    source["name"] = "mine"
    (templates / "mine.v1.json").write_text(json.dumps(source))
    pipeline = write_pipeline(tmp_path / "t.toml", f"""
        datasets = ["cifar10"]
        [[steps]]
        command = "describe"
        style = "mine"
        model = "openai/test"
        api-base = "{fake_llm.url}"
        no-progress = true
    """)
    run(root, pipeline)
    assert actions(plan(root, pipeline)) == {"cifar10/describe": "skip"}
    source["questions"][0]["text"] = source["questions"][0]["text"].replace("{c}", "the {c}")
    (templates / "mine.v1.json").write_text(json.dumps(source))
    planned = plan(root, pipeline)
    assert planned["cifar10/describe"]["action"] == "run" and "template" in planned["cifar10/describe"]["reason"]


def test_a_deleted_or_altered_output_is_made_again(root, llm_pipeline):
    pipeline = llm_pipeline()
    run(root, pipeline)
    head = root / "pipelines" / "p" / "cifar10" / "head-real.pt"
    original = head.read_bytes()
    head.write_bytes(b"not a head")
    planned = plan(root, pipeline)
    assert planned["cifar10/head-real"]["action"] == "run" and "changed" in planned["cifar10/head-real"]["reason"]
    assert planned["cifar10/head-cupl"]["action"] == "skip"
    run(root, pipeline)
    assert head.read_bytes() == original


def test_sets_are_pinned_to_the_version_the_pipeline_wrote(root, llm_pipeline, fake_llm):
    """A version made by hand after the pipeline ran does not leak into the pipeline's head."""
    pipeline = llm_pipeline()
    run(root, pipeline)
    result = run_cli("describe", "cifar10", "--style", "cupl", "--model", "openai/test", "--api-base", fake_llm.url,
                     "--draw", "5", "--no-progress", root=root)
    assert result.exit_code == 0
    sidecar = json.loads((root / "pipelines" / "p" / "cifar10" / "head-cupl.json").read_text())
    assert "cupl@v1" in json.dumps(sidecar)
    assert actions(plan(root, pipeline))["cifar10/head-cupl"] == "skip"


BAD_FILES = {
    "unknown option": ('[[steps]]\ncommand = "describe"\nstlye = "cupl"\n', "unknown option(s) stlye", "takes:"),
    "unknown command": ('[[steps]]\ncommand = "summon"\n', "unknown command 'summon'", "use one of"),
    "duplicate names": ('[[steps]]\ncommand = "describe"\n[[steps]]\ncommand = "describe"\n',
                        "two steps are named 'describe'", "unique"),
    "managed option": ('[[steps]]\ncommand = "head"\noutput = "x.pt"\n', "which the pipeline manages", "drop them"),
    "no steps": ("", "no [[steps]]", "add at least one"),
    "flag with a value": ('[[steps]]\ncommand = "describe"\nsource = "wordnet"\nno-progress = 1\n',
                          "is a flag and takes true or false", "no-progress = true"),
    "bad choice": ('[[steps]]\ncommand = "describe"\nsource = "oracle"\n', "'oracle' is not one of", "--help"),
    "a typo in defaults": ('[defaults]\napi-bse = "http://x/v1"\n[[steps]]\ncommand = "describe"\n',
                           "[defaults] sets api-bse, which none", "api-base"),
    "unknown template": ('[[steps]]\ncommand = "describe"\nsource = "wordnet"\n[[steps]]\ncommand = "synonyms"\n'
                         'source = "llm"\nstyle = "synonymz"\nmodel = "openai/x"\n', "unknown template 'synonymz'", ""),
    "two steps write one set": ('[[steps]]\nname = "a"\ncommand = "describe"\nsource = "wordnet"\n[[steps]]\n'
                                'name = "b"\ncommand = "describe"\nsource = "wordnet"\n',
                                "steps 'a' and 'b' both write set 'wordnet'", "another set name"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_pipeline_is_refused_before_anything_runs(root, tmp_path, case):
    body, message, hint = BAD_FILES[case]
    pipeline = write_pipeline(tmp_path / "bad.toml", 'datasets = ["cifar10"]\n' + body)
    result = run_cli("run", pipeline, root=root)
    assert result.exit_code == 2, result.output
    assert message in result.output and hint in result.output
    assert "Traceback" not in result.output
    assert not (root / "prompts").exists() and not (root / "pipelines" / "bad.json").exists()


def test_unknown_dataset_invalid_toml_and_missing_file_are_clear_errors(root, tmp_path):
    unknown = write_pipeline(tmp_path / "u.toml", 'datasets = ["nosuch"]\n[[steps]]\ncommand = "describe"\n'
                                                  'source = "wordnet"\n')
    result = run_cli("run", unknown, root=root)
    assert result.exit_code == 2 and "nosuch" in result.output and not (root / "prompts").exists()
    broken = write_pipeline(tmp_path / "b.toml", 'datasets = ["cifar10"\n')
    result = run_cli("run", broken, root=root)
    assert result.exit_code == 2 and "is not valid TOML" in result.output
    result = run_cli("run", tmp_path / "absent.toml", root=root)
    assert result.exit_code == 2 and "does not exist" in result.output
    result = run_cli("run", unknown, "--override", "steps.nope.style=x", root=root)
    assert result.exit_code == 2 and "no step named 'nope'" in result.output


@pytest.mark.slow
def test_a_failed_unit_blocks_what_reads_it_and_the_rest_goes_on(root, tmp_path, fake_llm):
    pipeline = write_pipeline(tmp_path / "f.toml", f"""
        datasets = ["cifar10", "cifar100"]
        [defaults]
        model = "openai/test"
        api-base = "{fake_llm.url}"
        no-progress = true
        clip-model = "promptgen-tiny"
        pretrained = "random"
        [[steps]]
        name = "cupl"
        command = "describe"
        style = "cupl-base"
        [[steps]]
        name = "wn"
        command = "describe"
        source = "wordnet"
        [[steps]]
        name = "head"
        command = "head"
        builder = "cupl"
        set = "cupl-base"
    """)
    fake_llm.configure(faults=[{"kind": "401", "match": "airplane", "times": -1}])
    units = run(root, pipeline, code=2)
    assert units["cifar10/cupl"]["exit_code"] == 2
    assert units["cifar10/head"]["action"] == "blocked"
    assert units["cifar10/wn"]["action"] == "run" and units["cifar10/wn"]["exit_code"] == 0
    assert all(units[f"cifar100/{s}"]["exit_code"] == 0 for s in ("cupl", "wn", "head"))
    fake_llm.configure(faults=[])
    planned = plan(root, pipeline)
    assert actions(planned) == {"cifar10/cupl": "resume", "cifar10/wn": "skip", "cifar10/head": "after",
                                "cifar100/cupl": "skip", "cifar100/wn": "skip", "cifar100/head": "skip"}
    assert planned["cifar10/cupl"]["reason"] == "failed: continue v1"
    again = run(root, pipeline)
    assert actions(again) == {"cifar10/cupl": "resume", "cifar10/wn": "skip", "cifar10/head": "run",
                              "cifar100/cupl": "skip", "cifar100/wn": "skip", "cifar100/head": "skip"}
    # the failed run's version was continued, not left behind for a new one
    assert again["cifar10/cupl"]["output"]["set"] == "cifar10/cupl-base@v1"
    assert again["cifar10/head"]["exit_code"] == 0


def test_a_second_run_of_the_same_pipeline_is_refused_while_the_first_holds_it(root, llm_pipeline):
    import fcntl

    lock_path = root / "pipelines" / ".p.lock"
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "a+") as handle:
        handle.write("pid 4242")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("run", llm_pipeline(), root=root)
    assert result.exit_code == 2 and "being run by pid 4242" in result.output
    assert not (root / "prompts").exists()


def test_the_run_log_nests_steps_under_the_pipeline_and_counts_each_once(root, llm_pipeline, fake_llm):
    run(root, llm_pipeline(), "--override", "defaults.price=1,2")
    log = [json.loads(line) for line in (root / "logs" / "runs.jsonl").read_text().splitlines()]
    ends = [e for e in log if e["event"] == "end"]
    pipeline_run = next(e for e in ends if e["command"] == "run")
    steps = [e for e in ends if e.get("parent") == pipeline_run["run"]]
    assert [e["command"] for e in steps] == ["describe", "synonyms", "head", "head"]
    assert pipeline_run["steps"] == 4
    assert pipeline_run["requests_sent"] == sum(e["requests_sent"] for e in steps) == fake_llm.request_count == 50
    assert pipeline_run["cost_usd"] == pytest.approx(sum(e["cost_usd"] or 0 for e in steps)) and \
        pipeline_run["cost_usd"] > 0
    result = run_cli("runs", "--json", root=root)
    totals = json.loads(result.stdout)["totals"]
    assert totals["total"]["requests_sent"] == 50  # not 100: the pipeline's sum is not counted again
    assert totals["by_dataset"]["cifar10"]["requests_sent"] == 50
    assert totals["by_command"]["describe"]["cost_usd"] == pytest.approx(pipeline_run["cost_usd"])
    assert "run" not in totals["by_command"]


def test_options_and_references_reach_the_commands(root, tmp_path, fake_llm):
    """Lists repeat an option, flags are flags, a step name becomes the file that step wrote."""
    rng = np.random.default_rng(0)
    features = tmp_path / "f.npz"
    np.savez(features, features=rng.normal(size=(40, 64)).astype("float32"), labels=np.arange(40) % 10)
    pipeline = write_pipeline(tmp_path / "e.toml", f"""
        datasets = ["cifar10"]
        [defaults]
        clip-model = "promptgen-tiny"
        pretrained = "random"
        [[steps]]
        name = "wn"
        command = "describe"
        source = "wordnet"
        [[steps]]
        name = "h"
        command = "head"
        builder = "cupl"
        set = "wordnet"
        [[steps]]
        name = "ev"
        command = "eval"
        features = "{features}"
        head = ["h"]
        build = ["template:photo", "cupl:wordnet"]
        [[steps]]
        name = "au"
        command = "audit"
        eval = ["ev"]
        baseline = "h"
        no-embed = true
    """)
    units = run(root, pipeline)
    results = json.loads(Path(units["cifar10/ev"]["output"]["path"]).read_text())
    names = json.dumps(results)
    assert "h.pt" in names and "cupl:wordnet@v1" in names and "template:photo" in names
    audit = json.loads((Path(units["cifar10/au"]["output"]["path"]) / "audit.json").read_text())
    assert audit["evaluation"]
    # new features: eval and the audit that reads its results run again, the rest is kept
    np.savez(features, features=rng.normal(size=(40, 64)).astype("float32"), labels=np.arange(40) % 10)
    assert actions(plan(root, pipeline)) == {"cifar10/wn": "skip", "cifar10/h": "skip", "cifar10/ev": "run",
                                             "cifar10/au": "after"}


@pytest.mark.slow
def test_the_wordnet_example_plans_every_builtin_dataset_and_runs(root):
    from promptgen.classes import list_datasets

    example = REPO / "examples" / "wordnet-all.toml"
    planned = plan(root, example, *TINY)
    datasets = {u.split("/")[0] for u in planned}
    assert datasets == set(list_datasets())
    assert len(planned) == 5 * len(datasets)
    units = run(root, example, *TINY, "--override", "datasets=cifar10,cars")
    assert all(u["exit_code"] == 0 for u in units.values()) and len(units) == 10
    assert (root / "pipelines" / "wordnet-all" / "cars" / "audit" / "report.html").is_file()
    audit = json.loads((root / "pipelines" / "wordnet-all" / "cars" / "audit" / "audit.json").read_text())
    assert [s["ref"] for s in audit["skipped_sets"]] == ["cars/wordnet"]  # WordNet knows no car models
    again = run(root, example, *TINY, "--override", "datasets=cifar10,cars")
    assert set(actions(again).values()) == {"skip"}


@pytest.mark.slow
def test_the_cupl_example_runs_against_a_local_server(root, fake_llm):
    example = REPO / "examples" / "cupl-llm.toml"
    overrides = [*TINY, "--override", "defaults.model=openai/test", "--override", f"defaults.api-base={fake_llm.url}",
                 "--override", "steps.eval.limit=100", "--override", "datasets=fashion-mnist"]
    units = run(root, example, *overrides)
    assert actions(units) == {f"fashion-mnist/{s}": "run" for s in ("cupl", "head-cupl", "eval", "audit")}
    results = json.loads(Path(units["fashion-mnist/eval"]["output"]["path"]).read_text())
    assert len(results["heads"]) == 3


def test_a_version_made_by_hand_after_a_failed_run_is_not_taken_for_the_pipelines(root, tmp_path, fake_llm):
    pipeline = write_pipeline(tmp_path / "h.toml", f"""
        datasets = ["cifar10"]
        [[steps]]
        name = "cupl"
        command = "describe"
        style = "cupl-base"
        model = "openai/test"
        api-base = "{fake_llm.url}"
        no-progress = true
    """)
    fake_llm.configure(faults=[{"kind": "401", "match": "airplane", "times": -1}])
    run(root, pipeline, code=2)
    fake_llm.configure(faults=[])
    by_hand = run_cli("describe", "cifar10", "--style", "cupl-base", "--model", "openai/test", "--api-base",
                      fake_llm.url, "--draw", "5", "--no-progress", root=root)
    assert by_hand.exit_code == 0 and "cupl-base/v2.jsonl" in by_hand.output
    assert plan(root, pipeline)["cifar10/cupl"]["reason"] == "failed: continue v1"
    units = run(root, pipeline)
    assert units["cifar10/cupl"]["output"]["set"] == "cifar10/cupl-base@v1"
    state = json.loads((root / "pipelines" / "h.json").read_text())["units"]["cifar10/cupl"]
    assert state["output"]["records_sha256"] == json.loads(
        (root / "prompts" / "cifar10" / "cupl-base" / "v1.manifest.json").read_text())["records_sha256"]


def test_credentials_in_options_reach_no_state_log_or_output(root, tmp_path):
    secret_url = "http://alice:p@ss-hunter2secret@127.0.0.1:9/v1?api-key=QUERYSECRET&password=PWSECRET"
    pipeline = write_pipeline(tmp_path / "s.toml", f"""
        datasets = ["cifar10"]
        [defaults]
        api-base = "{secret_url}"
        [[steps]]
        command = "describe"
        source = "wordnet"
    """)
    result = run_cli("run", pipeline, "--override", f"defaults.api-base={secret_url}&x=1", root=root)
    assert result.exit_code == 0, result.output
    again = run_cli("run", pipeline, "--plan", root=root)
    for text in (result.output, again.output):
        assert "hunter2secret" not in text and "QUERYSECRET" not in text and "PWSECRET" not in text
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"hunter2secret" not in data and b"QUERYSECRET" not in data and b"PWSECRET" not in data, path
    # a quote inside a credential value does not break the state file
    quoted = run_cli("run", pipeline, "--plan", "--override", 'defaults.api-base=http://h:9/v1?key=ab"c', root=root)
    assert quoted.exit_code == 0, quoted.output
    assert "127.0.0.1:9" in (root / "pipelines" / "s.json").read_text()  # the host stays, for "changed: ..."


def test_every_reference_to_a_set_is_keyed_apart(root, tmp_path):
    """sets = ["mine"] and against = "mine@v1" are two inputs: a new "mine" reruns the audit."""
    source = tmp_path / "mine.json"
    pipeline = write_pipeline(tmp_path / "r.toml", f"""
        datasets = ["cifar10"]
        [[steps]]
        name = "imp"
        command = "import"
        file = "{source}"
        format = "cupl"
        set = "mine"
        [[steps]]
        name = "au"
        command = "audit"
        sets = ["mine"]
        against = "mine@v1"
        no-embed = true
    """)
    from promptgen.classes import load_dataset

    names = load_dataset("cifar10").names

    def write(word: str) -> None:
        source.write_text(json.dumps({n: [f"a {word} photo of a {n}."] for n in names}))

    write("first")
    run_cli("import", "cifar10", source, "--format", "cupl", "--set", "mine", root=root)  # v1, by hand
    write("second")
    assert actions(run(root, pipeline)) == {"cifar10/imp": "run", "cifar10/au": "run"}  # v2 against v1
    write("third")
    units = run(root, pipeline)
    assert units["cifar10/imp"]["output"]["set"] == "cifar10/mine@v3"
    assert units["cifar10/au"]["action"] == "run", "the audit kept its report of v2"


def test_a_set_of_another_dataset_is_read_from_that_dataset(root, tmp_path):
    """DATASET/SET: pinned to the version the pipeline wrote there (whatever the dataset order), or,
    for a set no step writes, the store's latest version, keyed by its content."""
    from promptgen.classes import load_dataset

    names = load_dataset("cifar10").names
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({n: [f"a photo of a {n}, up close."] for n in names}))
    assert run_cli("import", "cifar10", mine, "--format", "cupl", "--set", "mine", root=root).exit_code == 0
    mini = tmp_path / "mini.txt"
    mini.write_text("cat\ndog\ntruck\n")
    pipeline = write_pipeline(tmp_path / "x.toml", f"""
        datasets = ["mini", "cifar10"]
        [defaults]
        clip-model = "promptgen-tiny"
        pretrained = "random"
        [[steps]]
        name = "wn"
        command = "describe"
        datasets = ["cifar10"]
        source = "wordnet"
        [[steps]]
        name = "h"
        command = "head"
        datasets = ["mini"]
        builder = "cupl"
        set = "cifar10/wordnet"
        classes = "{mini}"
        [[steps]]
        name = "h2"
        command = "head"
        datasets = ["mini"]
        builder = "cupl"
        set = "cifar10/mine"
    """)
    units = run(root, pipeline)
    for unit, ref in (("mini/h", "cifar10/wordnet@v1"), ("mini/h2", "cifar10/mine@v1")):
        sidecar = json.dumps(json.loads(Path(units[unit]["output"]["path"]).with_suffix(".json").read_text()))
        assert ref in sidecar and "mini/" not in sidecar
    # new versions made by hand: the pipeline's own set stays pinned, the other is read anew
    for set_name in ("wordnet", "mine"):
        mine.write_text(json.dumps({n: [f"a photo of a {n}, from afar."] for n in names}))
        assert run_cli("import", "cifar10", mine, "--format", "cupl", "--set", set_name, root=root).exit_code == 0
    planned = plan(root, pipeline)
    assert actions(planned) == {"cifar10/wn": "skip", "mini/h": "skip", "mini/h2": "run"}
    assert "cifar10/mine" in planned["mini/h2"]["reason"]


def test_a_step_that_reads_what_a_later_step_writes_is_refused(root, tmp_path):
    for body, message in (
            ('[[steps]]\nname = "h"\ncommand = "head"\nset = "wordnet"\n'
             '[[steps]]\nname = "wn"\ncommand = "describe"\nsource = "wordnet"\n',
             "step 'h' reads set 'wordnet', which step 'wn' writes after it"),
            ('[[steps]]\nname = "ev"\ncommand = "eval"\nimages = "fashion-mnist:test"\nhead = ["h"]\n'
             '[[steps]]\nname = "h"\ncommand = "head"\n',
             "step 'ev' reads the file of step 'h', which comes after it")):
        pipeline = write_pipeline(tmp_path / "fw.toml", 'datasets = ["cifar10"]\n' + body)
        result = run_cli("run", pipeline, "--plan", root=root)
        assert result.exit_code == 2 and message in result.output and "move" in result.output


def test_a_folder_that_happens_to_share_an_option_value_is_not_an_input(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "notes.txt").write_text("one")
    pipeline = write_pipeline(tmp_path / "f.toml", """
        datasets = ["cifar10"]
        [[steps]]
        command = "describe"
        source = "wordnet"
        set = "wn"
    """)
    run(root, pipeline)
    (tmp_path / "wn" / "notes.txt").write_text("two, longer")
    assert actions(plan(root, pipeline)) == {"cifar10/describe": "skip"}


def test_files_inside_build_specs_and_template_files_count_by_content(root, tmp_path):
    rng = np.random.default_rng(1)
    features = tmp_path / "f.npz"
    np.savez(features, features=rng.normal(size=(20, 64)).astype("float32"), labels=np.arange(20) % 10)
    templates = tmp_path / "tpl.json"
    templates.write_text(json.dumps(["a photo of a {c}."]))
    pipeline = write_pipeline(tmp_path / "b.toml", f"""
        datasets = ["cifar10"]
        [defaults]
        clip-model = "promptgen-tiny"
        pretrained = "random"
        [[steps]]
        name = "h"
        command = "head"
        templates = "{templates}"
        [[steps]]
        name = "ev"
        command = "eval"
        features = "{features}"
        build = ["template:{templates}"]
    """)
    run(root, pipeline)
    templates.write_text(json.dumps(["a photo of a {c}.", "a drawing of a {c}."]))
    assert actions(plan(root, pipeline)) == {"cifar10/h": "run", "cifar10/ev": "run"}


def test_a_crash_inside_one_unit_fails_that_unit_only(root, tmp_path, monkeypatch):
    import promptgen.stages.describe as describe_stage

    real = describe_stage.describe_wordnet

    def crashing(classes, *args, **kwargs):
        if classes.dataset == "cifar10":
            raise RuntimeError("boom in the stage")
        return real(classes, *args, **kwargs)

    monkeypatch.setattr(describe_stage, "describe_wordnet", crashing)
    pipeline = write_pipeline(tmp_path / "c.toml", """
        datasets = ["cifar10", "cifar100"]
        [[steps]]
        command = "describe"
        source = "wordnet"
    """)
    result = run_cli("run", pipeline, "--json", root=root)
    assert result.exit_code == 1
    units = {u["unit"]: u for u in json.loads(result.stdout)["units"]}
    assert units["cifar10/describe"]["exit_code"] == 1 and units["cifar100/describe"]["exit_code"] == 0
    assert "RuntimeError: boom in the stage" in result.stderr
    state = json.loads((root / "pipelines" / "c.json").read_text())["units"]
    assert state["cifar10/describe"]["status"] == "failed" and state["cifar100/describe"]["status"] == "done"


def test_a_reference_to_a_step_that_skips_some_datasets_is_refused(root, tmp_path):
    pipeline = write_pipeline(tmp_path / "d.toml", """
        datasets = ["cifar10", "cifar100"]
        [[steps]]
        name = "ev"
        command = "eval"
        datasets = ["cifar10"]
        images = "fashion-mnist:test"
        build = ["template:photo"]
        [[steps]]
        name = "au"
        command = "audit"
        eval = ["ev"]
    """)
    result = run_cli("run", pipeline, root=root)
    assert result.exit_code == 2
    assert "step 'au' reads the file of step 'ev', which is not made for cifar100" in result.output
    narrowed = run_cli("run", pipeline, "--plan", "--override", "datasets=cifar10", root=root)
    assert narrowed.exit_code == 0, narrowed.output


def test_a_rerun_that_skips_everything_and_plans_add_nothing_to_the_totals(root, llm_pipeline, fake_llm):
    pipeline = llm_pipeline()
    run(root, pipeline)
    run(root, pipeline)
    plan(root, pipeline)
    totals = json.loads(run_cli("runs", "--json", root=root).stdout)["totals"]
    assert totals["total"]["runs"] == 4 and totals["total"]["requests_sent"] == 50
    log = [json.loads(line) for line in (root / "logs" / "runs.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "start" and e["command"] == "run" for e in log) == 2  # --plan is not logged


def test_narrowing_the_cupl_example_drops_its_image_step(root):
    result = run_cli("run", REPO / "examples" / "cupl-llm.toml", "--plan", "--json", "--override", "datasets=cifar10",
                     root=root)
    assert result.exit_code == 0, result.output
    assert [u["unit"] for u in json.loads(result.stdout)["units"]] == ["cifar10/cupl", "cifar10/head-cupl",
                                                                      "cifar10/audit"]
