"""`promptgen count-names` on its engines (worker processes, Spark), --resume, and the LLM relevance
check through the fake server. The matching rule and the caption files are in test_count_names.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import promptgen.counting.corpus as corpus
import promptgen.counting.engines as engines
from promptgen.counting.engines import check_spark_master
from promptgen.counting.job import CountSettings, plan_count, run_count
from promptgen.errors import PromptgenError
from promptgen.name_counts import load_counts_set
from promptgen.stages.synonyms import load_candidates
from promptgen.store import Store
from promptgen.testing.fake_server import Fault
from tests.conftest import CHECKOUT, run_cli
from tests.count_helpers import (DATASET, NAMES, corrupt_row_group, count_names, counts, journal, manifest,
                                 random_captions, records_bytes, reference_counts, set_dir, write_captions,
                                 write_names)

ALL_NAMES = [name for class_name, others in NAMES.items() for name in [class_name, *others]]


@pytest.fixture
def named(root, tmp_path):
    write_names(root, tmp_path)
    return root


def parquet_of_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "c.parquet", rows: int = 400,
                     seed: int = 3, **extra) -> tuple[Path, list]:
    """A parquet file of 25-row row groups, counted in parts of 50 rows (8 parts for 400 rows)."""
    monkeypatch.setattr(corpus, "PART_ROWS", 50)
    captions = random_captions(rows, seed, nulls=True)
    return write_captions(tmp_path / name, captions, row_group_size=25, **extra), captions


def part_entries(root: Path, version: int = 1) -> list[dict]:
    return [entry for entry in journal(root, version) if entry.get("event") == "part"]


# -- 4. engines --------------------------------------------------------------------------------------

def test_worker_processes_write_the_records_of_one_process(cli, named, tmp_path, monkeypatch):
    path, captions = parquet_of_parts(tmp_path, monkeypatch)
    assert count_names(cli, path, extra=("--workers", "1")).exit_code == 0
    result = count_names(cli, path, extra=("--workers", "2"))
    assert result.exit_code == 0, result.output
    assert records_bytes(named, 1) == records_bytes(named, 2)
    meta = manifest(named, 2)
    assert meta["counting"]["workers"] == 2 and meta["counting"]["parts"] == 8
    assert meta["corpus"]["rows_scanned"] == 400
    assert counts(named, 2) == reference_counts(captions, ALL_NAMES)


@pytest.mark.slow
def test_spark_writes_the_records_and_samples_of_the_embedded_engine(cli, named, tmp_path, monkeypatch, fake_llm):
    """Both engines on the same parts, with the relevance check: the same records byte for byte,
    and the same captions asked about (each run in its own root, so neither reuses the other's
    answers from the LLM cache)."""
    path, captions = parquet_of_parts(tmp_path, monkeypatch)
    relevance = ("--relevance", "3", "--model", "openai/test", "--api-base", fake_llm.url)

    def asked() -> list[str]:
        questions = sorted(body["messages"][-1]["content"] for body in fake_llm.state.requests)
        fake_llm.reset_counts()
        return questions

    result = count_names(cli, path, extra=("--workers", "2", *relevance))
    assert result.exit_code == 0, result.output
    embedded = asked()
    spark_root = tmp_path / "spark-root"
    write_names(spark_root, tmp_path)
    result = run_cli("count-names", DATASET, "--captions", str(path), "--no-progress", "--engine", "spark",
                     "--spark-master", "local[2]", *relevance, root=spark_root)
    assert result.exit_code == 0, result.output
    assert asked() == embedded and len(embedded) > 30
    assert records_bytes(spark_root) == records_bytes(named)
    meta = manifest(spark_root)
    assert meta["counting"]["engine"] == "spark" and meta["counting"]["spark_master"] == "local[2]"
    assert meta["counting"]["workers"] == 2 and meta["counting"]["parts"] == 8
    assert counts(spark_root) == reference_counts(captions, ALL_NAMES)


def test_an_unreachable_spark_master_fails_fast_naming_it(cli, named, tmp_path, monkeypatch):
    def no_jvm(master):
        raise AssertionError(f"a Spark session was started for {master}")

    monkeypatch.setattr(engines, "_spark_session", no_jvm)
    path = write_captions(tmp_path / "c.txt", ["a dog"])
    started = time.monotonic()
    result = count_names(cli, path, extra=("--engine", "spark", "--spark-master", "spark://127.0.0.1:1"))
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    assert "cannot reach the Spark master spark://127.0.0.1:1" in result.stderr and "--spark-master" in result.stderr
    with pytest.raises(PromptgenError, match=r"127\.0\.0\.1:1: .*127\.0\.0\.1:2: "):
        check_spark_master("spark://127.0.0.1:1,127.0.0.1:2", timeout=2)


def test_unknown_spark_master_schemes_are_refused(cli, named, tmp_path):
    path = write_captions(tmp_path / "c.txt", ["a dog"])
    result = count_names(cli, path, extra=("--engine", "spark", "--spark-master", "mesos://127.0.0.1:5050"))
    assert result.exit_code == 2
    assert "unknown Spark master 'mesos://127.0.0.1:5050'" in result.stderr and "local[*]" in result.stderr
    for master in ("local", "local[*]", "local[3]", "local[2,4]", "yarn"):
        check_spark_master(master, timeout=0.01)  # no address to reach: accepted as they are
    for master in ("local[x]", "localhost", "http://127.0.0.1:7077", ""):
        with pytest.raises(PromptgenError, match="unknown Spark master"):
            check_spark_master(master, timeout=0.01)


# -- 5. resume ---------------------------------------------------------------------------------------

def interrupted_after(root: Path, inputs: list[Path], parts: int, **settings) -> None:
    """count-names run in-process until `parts` parts are journalled, then Ctrl-C (as the
    progress callback of run_count)."""
    store = Store(root)
    classes = store.classes(DATASET)
    candidates, info = load_candidates(store, "synonyms", classes)
    plan = plan_count(classes, candidates, [str(info.ref)],
                      CountSettings([str(p) for p in inputs], workers=1, **settings))

    def stop(result, done, total):
        if done == parts:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_count(plan, store, on_part=stop)


def test_an_interrupted_count_resumes_with_the_parts_left(cli, named, tmp_path, monkeypatch):
    path, _ = parquet_of_parts(tmp_path, monkeypatch)
    interrupted_after(named, [path], 1)
    assert len(part_entries(named)) == 1 and "interrupted" in cli("versions", DATASET).output
    result = count_names(cli, path, extra=("--workers", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert "resumed: 1 of 8 parts were already counted; 7 scanned now" in result.output
    meta = manifest(named)
    assert meta["status"] == "complete"
    assert (meta["counting"]["parts_resumed"], meta["counting"]["parts_this_run"]) == (1, 7)
    assert meta["corpus"]["rows_scanned"] == 400
    scanned = [entry["part"] for entry in part_entries(named)]
    assert len(scanned) == len(set(scanned)) == 8, "every part scanned once, over both runs"
    assert count_names(cli, path, extra=("--workers", "1")).exit_code == 0
    assert records_bytes(named, 1) == records_bytes(named, 2)
    assert manifest(named, 2)["counting"]["parts_resumed"] == 0


def test_a_strict_failure_resumes_once_the_file_is_fixed(cli, named, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PART_ROWS", 10)
    first = write_captions(tmp_path / "a.parquet", [f"dog {i}" for i in range(40)], row_group_size=10)
    second = write_captions(tmp_path / "b.parquet", [f"red cat {i}" for i in range(40)], row_group_size=10)
    corrupt_row_group(second, 3)
    result = count_names(cli, first, second, extra=("--workers", "1", "--strict"))
    assert result.exit_code == 2
    assert f"cannot read {second}" in result.stderr and "--resume" in result.stderr
    assert [bool(entry["error"]) for entry in part_entries(named)] == [False] * 7 + [True]
    write_captions(second, [f"red cat {i}" for i in range(40)], row_group_size=10)  # fixed
    result = count_names(cli, first, second, extra=("--workers", "1", "--strict", "--resume"))
    assert result.exit_code == 0, result.output
    meta = manifest(named)
    assert meta["status"] == "complete" and meta["corpus"]["files_unreadable"] == 0
    assert (meta["counting"]["parts_resumed"], meta["counting"]["parts_this_run"]) == (4, 4), \
        "the parts of the unchanged file are reused; the fixed file is scanned again"
    assert meta["corpus"]["rows_scanned"] == 80 and counts(named)["dog"] == 40 and counts(named)["red cat"] == 40
    assert count_names(cli, first, second, extra=("--workers", "1")).exit_code == 0
    assert records_bytes(named, 1) == records_bytes(named, 2)


def test_resume_reads_again_a_part_that_failed(cli, named, tmp_path, monkeypatch):
    """Without --strict a failed part is journalled with its error and the set is partial (exit 3);
    --resume tries the part again (a network blip, a file being copied) and keeps the parts read."""
    first = write_captions(tmp_path / "a.txt", ["a dog", "hot dog"])
    second = write_captions(tmp_path / "b.txt", ["red cat", "a dog"])
    real_read = corpus.read_part

    def flaky(part, *args, **kwargs):
        if part.file.url.endswith("b.txt"):
            raise corpus.CorpusError("connection reset")
        return real_read(part, *args, **kwargs)

    monkeypatch.setattr(engines, "read_part", flaky)
    result = count_names(cli, first, second, extra=("--workers", "1"))
    assert result.exit_code == 3 and "connection reset" in result.stderr and "--resume" in result.stderr
    assert manifest(named)["status"] == "partial" and manifest(named)["corpus"]["files_unreadable"] == 1
    assert [bool(e["error"]) for e in part_entries(named)] == [False, True]
    monkeypatch.setattr(engines, "read_part", real_read)
    result = count_names(cli, first, second, extra=("--workers", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert "resumed: 1 of 2 parts were already counted; 1 scanned now" in result.output
    meta = manifest(named)
    assert meta["status"] == "complete"
    assert meta["corpus"]["files_unreadable"] == 0 and meta["corpus"]["rows_scanned"] == 4
    assert counts(named)["dog"] == 3 and counts(named)["red cat"] == 1


def test_resume_refuses_a_changed_column(cli, named, tmp_path, monkeypatch):
    path, captions = parquet_of_parts(tmp_path, monkeypatch, extra_columns={"caption": [None] * 400})
    interrupted_after(named, [path], 2)
    result = count_names(cli, path, extra=("--workers", "1", "--resume", "--column", "caption"))
    assert result.exit_code == 2
    assert "different settings (column)" in result.stderr and "'TEXT', now 'caption'" in result.stderr
    result = count_names(cli, path, extra=("--workers", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert manifest(named)["counting"]["parts_resumed"] == 2
    assert counts(named) == reference_counts(captions, ALL_NAMES)
    result = count_names(cli, path, extra=("--resume",))
    assert result.exit_code == 2 and "nothing to resume" in result.stderr


_SLOW_COUNT = """
import sys, time
import promptgen.counting.corpus as corpus
import promptgen.counting.engines as engines
corpus.PART_ROWS = 50
delay, scan = float(sys.argv[1]), engines.scan_part
def slow_scan(part, job):
    time.sleep(delay)
    return scan(part, job)
engines.scan_part = slow_scan
from promptgen.cli import main
main(sys.argv[2:], prog_name="promptgen")
"""


@pytest.mark.subprocess
@pytest.mark.slow
def test_ctrl_c_stops_a_count_that_resume_finishes(cli, named, tmp_path, monkeypatch):
    """A real SIGINT to a running count-names (each part made slow), then a --resume in a process
    of its own: the parts journalled before the signal are not scanned again."""
    path, _ = parquet_of_parts(tmp_path, monkeypatch)
    args = ["count-names", DATASET, "--captions", str(path), "--workers", "1", "--no-progress", "--root", str(named)]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    process = subprocess.Popen([sys.executable, "-c", _SLOW_COUNT, "0.3", *args], cwd=CHECKOUT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not part_entries(named):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no part was journalled"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    done = len(part_entries(named))
    assert 1 <= done < 8
    resumed = subprocess.run([sys.executable, "-c", _SLOW_COUNT, "0", *args, "--resume"], cwd=CHECKOUT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    meta = manifest(named)
    assert meta["status"] == "complete"
    assert (meta["counting"]["parts_resumed"], meta["counting"]["parts_this_run"]) == (done, 8 - done)
    assert count_names(cli, path, extra=("--workers", "1")).exit_code == 0
    assert records_bytes(named, 1) == records_bytes(named, 2)


# -- 6. relevance --------------------------------------------------------------------------------------

REL = "relev"
REL_NAMES = {"zorblax": ["zorb"], "quokka": [], "flurp": []}
REL_CAPTIONS = ([f"zorblax photo {i}" for i in range(6)] + [f"zorblax logo {i}" for i in range(4)]
                + [f"a quokka smiling {i}" for i in range(12)] + ["zorb ball 0", "zorb ball 1", "a zorb logo"]
                + ["nothing here", "a logo alone"])


@pytest.fixture
def relevance_corpus(root, tmp_path) -> Path:
    write_names(root, tmp_path, REL_NAMES, dataset=REL)
    return write_captions(tmp_path / "rel.txt", REL_CAPTIONS)


def judge(cli, fake_llm, path: Path, samples: int, *extra: str):
    return count_names(cli, path, dataset=REL, extra=("--relevance", str(samples), "--model", "openai/test",
                                                      "--api-base", fake_llm.url, "--backoff", "0.01", *extra))


_QUESTION = re.compile(r'^Does the "(?P<name>.*?)" in "(?P<caption>.*)", refer to the visual concept: "(?P<c>.*)"\?$')


def questions(fake_llm) -> list[dict]:
    return [_QUESTION.match(body["messages"][-1]["content"]).groupdict() for body in fake_llm.state.requests]


def rel_records(root: Path, version: int = 1) -> dict[str, dict]:
    path = root / "prompts" / REL / "counts" / f"v{version}.jsonl"
    return {r["text"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_relevance_keeps_counts_raw_and_scales_them_by_the_share_of_yes(cli, root, relevance_corpus, fake_llm):
    result = judge(cli, fake_llm, relevance_corpus, 10)
    assert result.exit_code == 0, result.output
    rows = rel_records(root)
    found = {name: (r["count"], r["judged"], r["relevant"], r.get("relevance"), r.get("scaled_count"))
             for name, r in rows.items()}
    assert found == {"zorblax": (10, 10, 6, 0.6, 6.0), "zorb": (3, 3, 2, pytest.approx(2 / 3), pytest.approx(2.0)),
                     "quokka": (12, 10, 10, 1.0, 12.0), "flurp": (0, 0, 0, None, None)}
    asked = questions(fake_llm)
    assert fake_llm.request_count == len(asked) == 23
    for question in asked:
        assert re.search(rf"\b{question['name']}\b", question["caption"]) and question["c"] in REL_NAMES
    meta = json.loads((root / "prompts" / REL / "counts" / "v1.manifest.json").read_text())
    assert meta["relevance"] == {"samples_per_name": 10, "names_checked": 3, "judged": 23, "relevant": 18,
                                 "unanswered": 0, "unusable": 0}
    assert meta["tokens"]["prompt"] > 0 and meta["tokens"]["completion"] > 0
    assert meta["network"] is True and meta["model"]["model"] == "openai/test"
    assert meta["template"]["name"] == "caption-relevance"
    assert "relevance: 23 captions judged for 3 names, 18 about their class" in result.output
    store = Store(root)
    per_class, _ = load_counts_set(store, "counts", store.classes(REL))
    assert per_class == [[("zorblax", 6.0), ("zorb", pytest.approx(2.0))], [("quokka", 12.0)], [("flurp", 0.0)]]


def test_relevance_through_the_batch_api_gives_the_online_records(cli, root, relevance_corpus, fake_llm, tmp_path):
    """--batch: the questions go as one batch job, journalled in the counts version; the records
    are those of online asking."""
    result = judge(cli, fake_llm, relevance_corpus, 10, "--batch", "--batch-poll", "0.02", "--price", "1,2")
    assert result.exit_code == 0, result.output
    journal_lines = [json.loads(line) for line in
                     (root / "prompts" / REL / "counts" / "v1.requests.jsonl").read_text().splitlines()]
    assert any(line.get("event") == "batch" for line in journal_lines)
    assert sum(1 for line in journal_lines if line.get("status") == "ok") == 23
    meta = json.loads((root / "prompts" / REL / "counts" / "v1.manifest.json").read_text())
    assert meta["batches"] and meta["cost_usd"] > 0
    online_root = tmp_path / "online"
    write_names(online_root, tmp_path, REL_NAMES, dataset=REL)
    online = run_cli("count-names", REL, "--captions", str(relevance_corpus), "--no-progress", "--relevance", "10",
                     "--model", "openai/test", "--api-base", fake_llm.url, "--backoff", "0.01", root=online_root)
    assert online.exit_code == 0, online.output
    assert rel_records(root) == rel_records(online_root)


def test_at_most_n_captions_are_judged_per_name(cli, root, relevance_corpus, fake_llm):
    result = judge(cli, fake_llm, relevance_corpus, 3)
    assert result.exit_code == 0, result.output
    asked: dict[str, list[str]] = {}
    for question in questions(fake_llm):
        asked.setdefault(question["name"], []).append(question["caption"])
    assert {name: len(set(captions)) for name, captions in asked.items()} == {"zorblax": 3, "zorb": 3, "quokka": 3}
    assert fake_llm.request_count == 9
    for name, record in rel_records(root).items():
        if name == "flurp":
            continue
        relevant = sum(1 for caption in asked[name] if not re.search(r"\blogo\b", caption))
        assert (record["judged"], record["relevant"]) == (3, relevant), name
        assert record["scaled_count"] == pytest.approx(record["count"] * relevant / 3), name


def test_a_rerun_and_a_resume_ask_nothing_again(cli, root, relevance_corpus, fake_llm):
    assert judge(cli, fake_llm, relevance_corpus, 10).exit_code == 0
    assert fake_llm.request_count == 23
    fake_llm.reset_counts()
    assert judge(cli, fake_llm, relevance_corpus, 10).exit_code == 0
    assert fake_llm.request_count == 0, "a rerun takes every answer from the cache"
    records_dir = root / "prompts" / REL / "counts"
    assert (records_dir / "v2.jsonl").read_bytes() == (records_dir / "v1.jsonl").read_bytes()
    # a fresh draw whose questions about logos fail: a partial version; --resume asks only those again
    fake_llm.reset_counts()
    fake_llm.configure(faults=[Fault("500", match="logo", times=-1)])
    result = judge(cli, fake_llm, relevance_corpus, 10, "--draw", "1", "--max-attempts", "1")
    assert result.exit_code == 3, result.output
    assert fake_llm.request_count == 23
    meta = json.loads((records_dir / "v3.manifest.json").read_text())
    assert meta["status"] == "partial" and meta["relevance"]["unanswered"] == 5
    fake_llm.configure(faults=[])
    fake_llm.reset_counts()
    for changed in (("--draw", "2"), ("--draw", "1", "--model", "openai/other")):  # the answers depend on them
        refused = count_names(cli, relevance_corpus, dataset=REL, extra=(
            "--relevance", "10", "--model", "openai/test", "--api-base", fake_llm.url, "--resume", *changed))
        assert refused.exit_code == 2 and "different settings" in refused.stderr, refused.output
    assert fake_llm.request_count == 0
    result = judge(cli, fake_llm, relevance_corpus, 10, "--draw", "1", "--resume")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 5 and all("logo" in q["caption"] for q in questions(fake_llm))
    meta = json.loads((records_dir / "v3.manifest.json").read_text())
    assert meta["status"] == "complete" and meta["counting"]["parts_resumed"] == 1
    assert (records_dir / "v3.jsonl").read_bytes() == (records_dir / "v1.jsonl").read_bytes()


def test_dry_run_prices_the_questions_and_neither_scans_nor_sends(cli, root, relevance_corpus, fake_llm, monkeypatch):
    def no_scan(part, job):
        raise AssertionError("a dry run scanned a part")

    monkeypatch.setattr(engines, "scan_part", no_scan)
    result = judge(cli, fake_llm, relevance_corpus, 3, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{REL}: 4 names of 3 classes in 1 file(s), 1 part(s)" in result.output
    assert "relevance, at most: 12 questions (3 captions x 4 names" in result.output
    assert "requests to send: 12" in result.output and "prompt tokens:" in result.output
    assert "cost:" in result.output and "nothing was scanned or sent (--dry-run)" in result.output
    assert fake_llm.request_count == 0 and not set_dir(root, dataset=REL).exists()
    result = count_names(cli, relevance_corpus, dataset=REL, extra=("--dry-run",))
    assert result.exit_code == 0 and "counting asks no LLM" in result.output
    assert not set_dir(root, dataset=REL).exists()


# -- 7. in a pipeline ---------------------------------------------------------------------------------

def test_a_pipeline_counts_again_when_a_file_matching_its_glob_is_added(root, tmp_path):
    """--captions 'shards/*.txt' is keyed by the files the glob matches, so a new shard is counted
    and an unchanged corpus is skipped."""
    shards = tmp_path / "shards"
    shards.mkdir()
    write_captions(shards / "a.txt", ["a dog", "red cat"])
    run_cli("synonyms", "cifar10", "--source", "wordnet", root=root)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f'name = "p"\ndatasets = ["cifar10"]\n\n[[steps]]\nname = "count"\ncommand = "count-names"\n'
                        f'captions = ["{shards}/*.txt"]\nworkers = 1\n', encoding="utf-8")

    def units() -> dict[str, str]:
        result = run_cli("run", pipeline, "--json", root=root)
        assert result.exit_code == 0, result.output
        return {u["unit"]: u["action"] for u in json.loads(result.stdout)["units"]}

    assert units() == {"cifar10/count": "run"}
    assert units() == {"cifar10/count": "skip"}
    write_captions(shards / "b.txt", ["a dog"])
    assert units() == {"cifar10/count": "run"}
    meta = json.loads((root / "prompts" / "cifar10" / "counts" / "v2.manifest.json").read_text())
    assert meta["corpus"]["rows_scanned"] == 3


@pytest.mark.slow
def test_a_spark_task_that_fails_is_a_clear_error(cli, named, tmp_path, monkeypatch):
    """Executors without the driver's Python (a cluster node lacking the venv) fail their tasks: an
    error naming the fix, not a Py4J traceback; the version stays resumable."""
    monkeypatch.setenv("PYSPARK_PYTHON", str(tmp_path / "no-such-python"))
    path = write_captions(tmp_path / "c.txt", ["a dog"])
    result = count_names(cli, path, extra=("--engine", "spark", "--spark-master", "local[1]"))
    assert result.exit_code == 2, result.output
    assert "a Spark task failed" in result.stderr and "PYSPARK_PYTHON" in result.stderr
    assert "Traceback" not in result.stderr
    assert "interrupted" in cli("versions", DATASET).output
