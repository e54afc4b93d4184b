"""The differentiate stage (FuDD) end to end, through the CLI, against the fake server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from promptgen.classes import load_dataset
from promptgen.testing.fake_server import FakeLLMServer, Fault, pair_answer
from tests.conftest import TINY_ARGS, run_cli

CIFAR10 = load_dataset("cifar10").names


@pytest.fixture
def fake_llm():
    """conftest's fake server, but stopped within 50 ms instead of 500 ms (this file starts many)."""
    server = FakeLLMServer()
    threading.Thread(target=server._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.stop()


def set_dir(root: Path, dataset: str = "cifar10", set_name: str = "differential") -> Path:
    return root / "prompts" / dataset / set_name


def records(root: Path, version: int, dataset: str = "cifar10") -> list[dict]:
    path = set_dir(root, dataset) / f"v{version}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def manifest(root: Path, version: int, dataset: str = "cifar10") -> dict:
    return json.loads((set_dir(root, dataset) / f"v{version}.manifest.json").read_text())


def differentiate(cli, server, *extra: str, dataset: str = "cifar10"):
    return cli("differentiate", dataset, "--model", "openai/test", "--api-base", server.url, "--no-progress",
               "--backoff", "0.01", *TINY_ARGS, *extra)


def question(first: str, second: str) -> str:
    """The part of the pair question that names the pair (and only that pair)."""
    return f"Object 1: {first}\nObject 2: {second}\n"


def pair_of(body: dict) -> tuple[str, str] | None:
    """The (first, second) class names a request body asks about."""
    for message in body["messages"]:
        if message["role"] == "user" and "Object 1: " in message["content"]:
            lines = message["content"].splitlines()
            first = next(line for line in lines if line.startswith("Object 1: "))[len("Object 1: "):]
            second = next(line for line in lines if line.startswith("Object 2: "))[len("Object 2: "):]
            return first, second
    return None


def is_repair(body: dict) -> bool:
    return any(m["role"] == "assistant" for m in body["messages"])


def expected_pair_records(i: int, j: int, answer: str) -> list[tuple]:
    """(class_index, other_class_index, attribute, attribute_index, text) per record of one answer."""
    rows = []
    for position, item in enumerate(json.loads(answer)["differences"]):
        rows.append((i, j, item["attribute"], position, item["object_1"]))
        rows.append((j, i, item["attribute"], position, item["object_2"]))
    return rows


def record_rows(rows: list[dict], pair: str) -> list[tuple]:
    return [(r["class_index"], r["other_class_index"], r["attribute"], r["attribute_index"], r["text"])
            for r in rows if r["pair"] == pair]


# -- 1. cost: one request per distinct pair ---------------------------------------------------------------------


def test_all_pairs_sends_one_request_per_pair_and_writes_one_record_per_pair_attribute_class(cli, fake_llm, root):
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 45
    asked = Counter(pair_of(body) for body in fake_llm.state.requests)
    expected_pairs = {(CIFAR10[i], CIFAR10[j]) for i in range(10) for j in range(i + 1, 10)}
    assert set(asked) == expected_pairs and max(asked.values()) == 1, "each unordered pair once, lower index first"
    rows = records(root, 1)
    assert len({r["id"] for r in rows}) == len(rows), "record ids are unique"
    total_attributes = 0
    for i in range(10):
        for j in range(i + 1, 10):
            key = f"{i}_{j}"
            answer = pair_answer(CIFAR10[i], CIFAR10[j])
            expected = expected_pair_records(i, j, answer)
            assert record_rows(rows, key) == expected, key
            total_attributes += len(expected) // 2
            for r in (r for r in rows if r["pair"] == key):
                assert r["pair_classes"] == [i, j] and r["stage"] == "differentiate" and r["kind"] == "sentence"
                assert r["class_name"] == CIFAR10[r["class_index"]]
                assert r["other_class_name"] == CIFAR10[r["other_class_index"]]
                assert "salvaged" not in r
    assert len(rows) == 2 * total_attributes
    meta = manifest(root, 1)
    assert meta["status"] == "complete" and meta["stage"] == "differentiate"
    assert meta["counts"]["records"] == len(rows) and meta["counts"]["attributes"] == total_attributes
    assert meta["counts"]["requests_sent_this_run"] == 45 and meta["counts"]["repairs"] == 0
    assert meta["pairs"]["pairs"] == 45 and meta["pairs"]["all_pairs"] == 45 and meta["pairs"]["method"] == "all"
    assert meta["pairs"]["answered"] == 45 and meta["pairs"]["queried"] == 45 and meta["pairs"]["reused"] == 0
    assert meta["failed_pairs"] == [] and sum(meta["rejected"].values()) == 0
    saved = json.loads((set_dir(root) / "v1.pairs.json").read_text())
    assert [tuple(p[:2]) for p in saved["list"]] == [(i, j) for i in range(10) for j in range(i + 1, 10)]
    journal = (set_dir(root) / "v1.requests.jsonl").read_text().splitlines()
    assert len(journal) == 45

    fake_llm.reset_counts()
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 0, "a rerun is answered from the cache"
    assert records(root, 2) == rows
    meta = manifest(root, 2)
    assert meta["pairs"]["reused"] == 45 and meta["pairs"]["queried"] == 0
    assert meta["counts"]["requests_sent_this_run"] == 0 and meta["counts"]["cache_hits_this_run"] == 45


def test_max_pairs_asks_exactly_that_many(cli, fake_llm, root):
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "7")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 7
    meta = manifest(root, 1)
    assert meta["pairs"]["pairs"] == 7 and meta["pairs"]["all_pairs"] == 45
    assert meta["pairs"]["dropped_over_max_pairs"] == 38 and meta["pairs"]["queried"] == 7
    assert {r["pair"] for r in records(root, 1)} == {f"0_{j}" for j in range(1, 8)}


# -- 2. pairs from images ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_head(tiny_clip):
    """The head the CLI builds by default (--initial photo) for cifar10 with the tiny model."""
    from promptgen.clip.embed import TextEncoder
    from promptgen.clip.heads import build_head
    from promptgen.clip.sources import source_from_templates

    classes = load_dataset("cifar10")
    head = build_head("template", encoder=TextEncoder(tiny_clip, None), classes=classes,
                      sources=[source_from_templates("photo", classes)])
    return head.weights


def make_features(head: torch.Tensor, path: Path, *, unlabelled: bool = False, dim: int | None = None) -> tuple:
    """Images near their class's head column (plus noise): some labels unknown, some wrong."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 240)
    columns = torch.nn.functional.normalize(head.float(), dim=0).T.numpy()
    features = (columns[labels] + 0.1 * rng.standard_normal((240, 64))).astype(np.float32)
    labels[::7] = -1
    labels[1::9] = (labels[1::9] + 5) % 10
    if unlabelled:
        labels[:] = -1
    if dim is not None:
        features = features[:, :dim]
    np.savez(path, features=features, labels=labels.astype(np.int64))
    return torch.from_numpy(features), torch.from_numpy(labels.astype(np.int64))


def test_pairs_from_images_match_the_library_and_a_larger_k_asks_only_the_new_pairs(cli, fake_llm, root, tmp_path,
                                                                                   photo_head):
    from promptgen.clip.pairs import pairs_from_images

    path = tmp_path / "features.npz"
    features, labels = make_features(photo_head, path)
    k2 = pairs_from_images(features, photo_head, 2, labels=labels)
    k3 = pairs_from_images(features, photo_head, 3, labels=labels)
    assert set(k2.pairs) < set(k3.pairs) and len(k2.pairs) < 45, "the fixture must leave pairs out"
    chunked = pairs_from_images(features, photo_head, 3, labels=labels, chunk=17)
    assert (chunked.pairs, chunked.scores, chunked.stats["topk_recall"]) == \
        (k3.pairs, k3.scores, k3.stats["topk_recall"]), "counting in chunks changes nothing"

    result = differentiate(cli, fake_llm, "--features", str(path), "--k", "2")
    assert result.exit_code == 0, result.output
    meta = manifest(root, 1)
    assert meta["pairs"]["method"] == "images" and meta["pairs"]["k"] == 2
    assert meta["pairs"]["pairs"] == len(k2.pairs) and meta["pairs"]["queried"] == len(k2.pairs)
    saved = json.loads((set_dir(root) / "v1.pairs.json").read_text())
    assert [tuple(p[:2]) for p in saved["list"]] == k2.pairs
    assert fake_llm.request_count == len(k2.pairs)
    assert {r["pair"] for r in records(root, 1)} == {f"{i}_{j}" for i, j in k2.pairs}
    assert meta["pairs"]["topk_recall"] == pytest.approx(k2.stats["topk_recall"])
    assert meta["pairs"]["labelled_images"] == int((labels >= 0).sum())

    fake_llm.reset_counts()
    plan = json.loads(differentiate(cli, fake_llm, "--features", str(path), "--k", "3", "--dry-run", "--json").stdout)
    new = len(set(k3.pairs) - set(k2.pairs))
    assert plan["planned_requests"] == len(k3.pairs) and plan["requests"] == new and plan["cached"] == len(k2.pairs)
    assert fake_llm.request_count == 0
    result = differentiate(cli, fake_llm, "--features", str(path), "--k", "3")
    assert result.exit_code == 0, result.output
    meta = manifest(root, 2)
    assert meta["pairs"]["pairs"] == len(k3.pairs)
    assert fake_llm.request_count == new == meta["pairs"]["queried"]
    assert meta["pairs"]["reused"] == len(k2.pairs)
    assert {pair_of(body) for body in fake_llm.state.requests} == \
        {(CIFAR10[i], CIFAR10[j]) for i, j in set(k3.pairs) - set(k2.pairs)}


def test_min_count_and_topk_recall_in_a_dry_run(cli, fake_llm, root, tmp_path, photo_head):
    from promptgen.clip.pairs import pairs_from_images

    path = tmp_path / "features.npz"
    features, labels = make_features(photo_head, path)
    some = json.loads(differentiate(cli, fake_llm, "--features", str(path), "--k", "3", "--dry-run", "--json").stdout)
    fewer = json.loads(differentiate(cli, fake_llm, "--features", str(path), "--k", "3", "--min-count", "6",
                                     "--dry-run", "--json").stdout)
    expected = pairs_from_images(features, photo_head, 3, labels=labels, min_count=6)
    assert fewer["pairs"]["pairs"] == len(expected.pairs) < some["pairs"]["pairs"]
    assert fewer["pairs"]["dropped_below_min_count"] == some["pairs"]["pairs"] - fewer["pairs"]["pairs"] > 0
    assert fewer["planned_requests"] == len(expected.pairs)
    assert some["pairs"]["topk_recall"] == pytest.approx(pairs_from_images(features, photo_head, 3,
                                                                           labels=labels).stats["topk_recall"])
    assert 0 < some["pairs"]["topk_recall"] < 1, "some labels in the fixture are wrong"

    unlabelled = tmp_path / "unlabelled.npz"
    make_features(photo_head, unlabelled, unlabelled=True)
    plan = json.loads(differentiate(cli, fake_llm, "--features", str(unlabelled), "--k", "3", "--dry-run",
                                    "--json").stdout)
    assert plan["pairs"]["topk_recall"] is None and plan["pairs"]["labelled_images"] == 0
    assert plan["pairs"]["pairs"] == some["pairs"]["pairs"], "labels do not change the pairs"
    assert fake_llm.request_count == 0 and not set_dir(root).exists()


# -- 3. dry run ------------------------------------------------------------------------------------------------


def test_dry_run_counts_and_prices_pairs_and_sends_nothing(cli, fake_llm, root):
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "10", "--price", "1,2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "10 distinct pairs" in result.output and "of 45 possible" in result.output
    assert "C(C-1)/2 for 10 classes" in result.output
    assert "requests to send: 10" in result.output and "[--price]" in result.output
    assert "all 45 pairs would cost about $" in result.output and "nothing was sent" in result.output
    as_json = json.loads(differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "10", "--price", "1,2",
                                       "--dry-run", "--json").stdout)
    assert as_json["pairs"]["all_pairs"] == 45 and as_json["pairs"]["pairs"] == 10
    assert as_json["planned_requests"] == 10 and as_json["requests"] == 10
    assert as_json["max_completion_tokens"] == 600 * 10
    assert as_json["cost_usd"] == pytest.approx((as_json["prompt_tokens"] * 1 + 6000 * 2) / 1e6)
    assert as_json["all_pairs_cost_usd"] == pytest.approx(as_json["cost_usd"] / 10 * 45)
    assert as_json["structured"] == "prompt"
    everything = json.loads(differentiate(cli, fake_llm, "--pairs-from", "all", "--dry-run", "--json").stdout)
    assert everything["pairs"]["pairs"] == 45 and everything["planned_requests"] == 45
    assert fake_llm.request_count == 0
    assert not (root / "prompts" / "cifar10").exists(), "a dry run writes no version"


# -- 4. malformed answers --------------------------------------------------------------------------------------


def test_a_truncated_answer_gets_one_repair_request_with_the_bad_answer(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("truncated", match=question("cat", "dog"), times=1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 46
    repairs = [body for body in fake_llm.state.requests if is_repair(body)]
    assert len(repairs) == 1
    full = pair_answer("cat", "dog")
    messages = repairs[0]["messages"]
    assert messages[-2] == {"role": "assistant", "content": full[: len(full) // 2]}
    assert messages[-1]["role"] == "user" and "{error}" not in messages[-1]["content"]
    assert "JSON" in messages[-1]["content"] and pair_of(repairs[0]) == ("cat", "dog")
    meta = manifest(root, 1)
    assert meta["pairs"]["answered"] == 45 and meta["pairs"]["salvaged"] == 0 and meta["pairs"]["failed"] == 0
    assert meta["counts"]["repairs"] == 1 and meta["counts"]["reasked_after_unusable_answer"] == 0
    assert meta["counts"]["requests"] == 46 and meta["counts"]["requests_sent_this_run"] == 46
    rows = records(root, 1)
    assert record_rows(rows, "3_5") == expected_pair_records(3, 5, full)
    assert not any(r.get("salvaged") for r in rows)


def test_json_in_prose_and_code_fences_is_parsed_without_repair(cli, fake_llm, root):
    answer = pair_answer("bird", "frog")
    wrapped = f"Sure! Here is the JSON you asked for:\n```json\n{answer}\n```\nLet me know if you need more."
    fake_llm.configure(faults=[Fault("text", match=question("bird", "frog"), times=-1, text=wrapped)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 45
    meta = manifest(root, 1)
    assert meta["counts"]["repairs"] == 0 and meta["counts"]["reasked_after_unusable_answer"] == 0
    assert meta["pairs"]["answered"] == 45
    assert record_rows(records(root, 1), "2_6") == expected_pair_records(2, 6, answer)


def test_an_empty_answer_is_asked_again(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("empty", match=question("deer", "horse"), times=1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 46
    deer_horse = [body for body in fake_llm.state.requests if pair_of(body) == ("deer", "horse")]
    assert len(deer_horse) == 2 and not any(is_repair(body) for body in deer_horse), "nothing to repair in ''"
    assert deer_horse[0] != deer_horse[1], "the re-ask is a new request (seed / temperature), not a cache hit"
    meta = manifest(root, 1)
    assert meta["counts"]["reasked_after_unusable_answer"] == 1 and meta["counts"]["repairs"] == 0
    assert meta["pairs"]["answered"] == 45 and meta["failed_pairs"] == []
    assert len(record_rows(records(root, 1), "4_7")) >= 6


def test_bad_attributes_are_rejected_and_counted_by_reason(cli, fake_llm, root):
    good = {"attribute": "ears", "object_1": "a photo of a cat, with pointed ears.",
            "object_2": "a photo of a deer, with large upright ears."}
    bad = [
        {"attribute": "swapped", "object_1": "a photo of a deer, with antlers.",
         "object_2": "a photo of a cat, with whiskers."},
        {"attribute": "identical", "object_1": "A photo of an animal with four legs.",
         "object_2": "a photo of an animal, with four legs"},
        {"attribute": "one sided", "object_1": "a photo of a cat, curled up.", "object_2": ""},
        {"attribute": "names other", "object_1": "a photo of a cat, which is smaller than a deer.",
         "object_2": "a photo of a deer, in a forest."},
        {"attribute": "about another class", "object_1": "a photo of a dog, with floppy ears.",
         "object_2": "a photo of a deer, with a short tail."},
        {"attribute": "refusal", "object_1": "I'm sorry, I cannot describe that.",
         "object_2": "a photo of a deer, grazing."},
        {"attribute": "too long", "object_1": "a photo of a cat, " + "very " * 70 + "fluffy.",
         "object_2": "a photo of a deer, sleek."},
        dict(good),
    ]
    text = json.dumps({"differences": [good] + bad})
    fake_llm.configure(faults=[Fault("text", match=question("cat", "deer"), times=-1, text=text)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 45, "a usable answer is neither repaired nor asked again"
    meta = manifest(root, 1)
    assert meta["rejected"] == {"one_sided": 1, "identical": 1, "swapped": 1, "names_other_class": 1,
                                "about_other_class": 1, "refusal": 1, "too_long": 1, "duplicate": 1}
    assert record_rows(records(root, 1), "3_4") == [(3, 4, "ears", 0, good["object_1"]),
                                                     (4, 3, "ears", 0, good["object_2"])]


def _nested_names(cli, server, tmp_path: Path, pair: tuple[str, str], differences: list[dict]):
    """A run over the class list cat / wild cat / dog (pairs 0_1, 0_2, 1_2) in which `pair` answers
    `differences`."""
    classes = tmp_path / "cats.txt"
    classes.write_text("cat\nwild cat\ndog\n")
    server.configure(faults=[Fault("text", match=question(*pair), times=-1,
                                   text=json.dumps({"differences": differences}))])
    return differentiate(cli, server, "--classes", str(classes), "--pairs-from", "all", dataset="cats")


def test_a_sentence_naming_the_other_class_is_rejected_when_that_name_contains_its_own(cli, fake_llm, root,
                                                                                        tmp_path):
    good = {"attribute": "ears", "object_1": "a photo of a cat, with rounded ears.",
            "object_2": "a photo of a wild cat, with tufted ears."}
    # class 0's sentence names class 1 ("wild cat"); the mirror image (class 1's sentence naming "cat") is rejected
    leaky = {"attribute": "size", "object_1": "a photo of a cat, smaller than a wild cat.",
             "object_2": "a photo of a wild cat, with long legs."}
    mirror = {"attribute": "fur", "object_1": "a photo of a cat, with short fur.",
              "object_2": "a photo of a wild cat, bigger than a cat."}
    result = _nested_names(cli, fake_llm, tmp_path, ("cat", "wild cat"), [good, leaky, mirror])
    assert result.exit_code == 0, result.output
    meta = manifest(root, 1, "cats")
    assert record_rows(records(root, 1, "cats"), "0_1") == [(0, 1, "ears", 0, good["object_1"]),
                                                            (1, 0, "ears", 0, good["object_2"])], \
        "the cat sentence that names 'wild cat' must not be kept as a description of cat"
    assert meta["rejected"]["names_other_class"] == 2


def test_a_sentence_about_a_class_whose_name_is_inside_a_pair_members_name_is_about_another_class(
        cli, fake_llm, root, tmp_path):
    good = {"attribute": "ears", "object_1": "a photo of a wild cat, with tufted ears.",
            "object_2": "a photo of a dog, with floppy ears."}
    # the dog's sentence is about "cat", a third class of the list (not "wild cat", the pair member)
    about_cat = {"attribute": "pose", "object_1": "a photo of a wild cat, stalking prey.",
                 "object_2": "a photo of a cat, curled up on a sofa."}
    # naming "wild cat" inside a sentence about the pair is fine and not a third class
    inside = {"attribute": "habitat", "object_1": "a photo of a wild cat, in tall grass.",
              "object_2": "a photo of a dog, in a garden."}
    result = _nested_names(cli, fake_llm, tmp_path, ("wild cat", "dog"), [good, about_cat, inside])
    assert result.exit_code == 0, result.output
    rows = records(root, 1, "cats")
    assert [r["attribute"] for r in rows if r["pair"] == "1_2"] == ["ears", "ears", "habitat", "habitat"], \
        "the sentence about 'cat' must not be kept as a description of dog"
    assert manifest(root, 1, "cats")["rejected"]["about_other_class"] == 1


def test_a_sentence_about_a_class_whose_name_contains_the_pair_members_name_is_about_another_class(
        cli, fake_llm, root, tmp_path):
    good = {"attribute": "ears", "object_1": "a photo of a cat, with rounded ears.",
            "object_2": "a photo of a dog, with floppy ears."}
    # the cat's sentence is about "wild cat", a third class; "cat" appears only inside that name
    about_wild_cat = {"attribute": "place", "object_1": "a photo of a wild cat, in tall grass.",
                      "object_2": "a photo of a dog, on a leash."}
    result = _nested_names(cli, fake_llm, tmp_path, ("cat", "dog"), [good, about_wild_cat])
    assert result.exit_code == 0, result.output
    rows = records(root, 1, "cats")
    assert [r["text"] for r in rows if r["pair"] == "0_2"] == [good["object_1"], good["object_2"]], \
        "a sentence about 'wild cat' must not be kept as a description of cat"
    assert manifest(root, 1, "cats")["rejected"]["about_other_class"] == 1


def test_a_pair_without_any_usable_answer_fails_within_the_retry_budget(cli, fake_llm, root):
    fake_llm.configure(faults=[
        Fault("text", match=question("ship", "truck"), times=-1, text="Ships float and trucks drive; no JSON here."),
        Fault("text", match="Your previous answer could not be used", times=-1,
              text="Still no JSON, sorry about that."),
    ])
    result = differentiate(cli, fake_llm, "--pairs-from", "all")
    assert result.exit_code == 3, result.output
    assert "failed_pairs" in result.stderr
    meta = manifest(root, 1)
    assert meta["status"] == "complete", "an unusable answer is not a transport failure"
    assert meta["pairs"]["failed"] == 1 and meta["pairs"]["answered"] == 44
    (failed,) = meta["failed_pairs"]
    assert failed["pair"] == "8_9" and failed["classes"] == [8, 9] and failed["class_names"] == ["ship", "truck"]
    assert isinstance(failed["reason"], str) and "JSON" in failed["reason"] and failed["attempts"] == 3
    ship_truck = [body for body in fake_llm.state.requests if pair_of(body) == ("ship", "truck")]
    asks = [body for body in ship_truck if not is_repair(body)]
    repairs = [body for body in ship_truck if is_repair(body)]
    assert len(asks) == 3, "answer_retries=2: three asks"
    assert 1 <= len(repairs) <= len(asks), "at most one repair per ask"
    assert fake_llm.request_count == 44 + len(ship_truck)
    rows = records(root, 1)
    assert not record_rows(rows, "8_9")
    assert {r["pair"] for r in rows} == {f"{i}_{j}" for i in range(10) for j in range(i + 1, 10)} - {"8_9"}


def test_a_pair_whose_answers_are_all_rejected_fails_after_the_reasks(cli, fake_llm, root):
    text = json.dumps({"differences": [
        {"attribute": "a", "object_1": "a photo of an automobile on a road.", "object_2": "a photo of an airplane."},
        {"attribute": "b", "object_1": "a photo of a frog.", "object_2": "a photo of a frog."}]})
    fake_llm.configure(faults=[Fault("text", match=question("airplane", "automobile"), times=-1, text=text)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--answer-retries", "1")
    assert result.exit_code == 3, result.output
    meta = manifest(root, 1)
    (failed,) = meta["failed_pairs"]
    assert failed["pair"] == "0_1" and "no attribute survived" in failed["reason"] and failed["attempts"] == 2
    asked = [body for body in fake_llm.state.requests if pair_of(body) == ("airplane", "automobile")]
    assert len(asked) == 2 and not any(is_repair(body) for body in asked), "complete JSON is not repaired"
    assert meta["rejected"]["swapped"] == 2 and meta["rejected"]["identical"] == 2
    assert meta["counts"]["reasked_after_unusable_answer"] == 1
    assert len({r["pair"] for r in records(root, 1)}) == 44


def test_cut_off_answers_without_repair_keep_the_complete_attributes(cli, fake_llm, root):
    from promptgen.testing.fake_server import _sample_index, default_answer
    from promptgen.parsing import parse_pair_answer

    fake_llm.configure(faults=[Fault("truncated", match=question("automobile", "truck"), times=-1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--no-repair")
    assert result.exit_code == 0, result.output
    asked = [body for body in fake_llm.state.requests if pair_of(body) == ("automobile", "truck")]
    assert len(asked) == 3 and not any(is_repair(body) for body in asked)
    meta = manifest(root, 1)
    assert meta["pairs"]["salvaged"] == 1 and meta["pairs"]["answered"] == 44 and meta["failed_pairs"] == []
    assert meta["counts"]["repairs"] == 0 and meta["counts"]["reasked_after_unusable_answer"] == 2
    # what the server sent for each ask, and the complete attributes in it
    salvageable = []
    for body in asked:
        full = default_answer(body["messages"], _sample_index(body, 0))
        parsed = parse_pair_answer(full[: len(full) // 2], "automobile", "truck")
        assert not parsed.complete
        salvageable.append([(a.attribute, a.first, a.second) for a in parsed.attributes])
    best = max(len(s) for s in salvageable)
    assert best >= 1
    rows = [r for r in records(root, 1) if r["pair"] == "1_9"]
    assert rows and all(r["salvaged"] is True for r in rows)
    kept = [(rows[n]["attribute"], rows[n]["text"], rows[n + 1]["text"]) for n in range(0, len(rows), 2)]
    assert kept in salvageable and len(kept) == best, "the answer with the most complete attributes is kept"
    assert not any(r.get("salvaged") for r in records(root, 1) if r["pair"] != "1_9")


# -- 5. structured output --------------------------------------------------------------------------------------


def test_structured_schema_sends_the_templates_json_schema(cli, fake_llm, root):
    from promptgen.templates import load_template

    schema = load_template("fudd", root).schema
    assert schema["required"] == ["differences"]
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "5", "--structured", "schema")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 5
    for body in fake_llm.state.requests:
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "differences", "schema": schema, "strict": True}}
    assert manifest(root, 1)["job"]["structured"] == "schema"
    for number, mode in ((2, "prompt"), (3, "auto")):
        fake_llm.reset_counts()
        result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "5", "--structured", mode,
                               "--draw", str(number))
        assert result.exit_code == 0, result.output
        assert fake_llm.request_count == 5
        assert not any("response_format" in body for body in fake_llm.state.requests), mode
        assert manifest(root, number)["job"]["structured"] == "prompt"
    fake_llm.reset_counts()
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "2", "--structured", "auto",
                           "--model", "openai/gpt-4o-mini")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 2
    assert all(body["response_format"]["type"] == "json_schema" for body in fake_llm.state.requests), \
        "auto uses the schema where litellm reports support"
    assert manifest(root, 4)["job"]["structured"] == "schema"


# -- 6. interruption and resume --------------------------------------------------------------------------------


def _journal_lines(root: Path) -> int:
    path = set_dir(root, "cifar100") / "v1.requests.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


PAIRS_300 = ("--pairs-from", "all", "--max-pairs", "300")


@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_minus_9_then_resume_gives_the_uninterrupted_records_with_nothing_asked_twice(tmp_path):
    with FakeLLMServer() as server:
        reference = tmp_path / "reference"
        assert run_cli("differentiate", "cifar100", "--model", "openai/test", "--api-base", server.url,
                       "--no-progress", *PAIRS_300, root=reference).exit_code == 0
        expected = records(reference, 1, "cifar100")
        server.reset_counts()
        server.configure(latency=0.05)
        root = tmp_path / "interrupted"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "promptgen", "differentiate", "cifar100", "--model", "openai/test", "--api-base",
             server.url, "--concurrency", "4", "--no-progress", "--root", str(root), *PAIRS_300],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while _journal_lines(root) < 30 and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        done = _journal_lines(root)
        assert 0 < done < 300, "the kill must land mid-run"
        assert manifest(root, 1, "cifar100")["status"] == "running"
        journal = set_dir(root, "cifar100") / "v1.requests.jsonl"
        answered = {json.loads(line)["request"]["messages"][-1]["content"] for line in journal.read_text().splitlines()}
        server.configure(latency=0)
        sent_before = server.request_count
        result = run_cli("differentiate", "cifar100", "--model", "openai/test", "--api-base", server.url,
                         "--no-progress", "--resume", root=root)
        assert result.exit_code == 0, result.output
        asked = Counter(body["messages"][-1]["content"] for body in server.state.requests)
        repeated = {q for q, times in asked.items() if times > 1}
        assert not repeated & answered, "an answered request was sent again"
        assert len(repeated) <= 4 and max(asked.values()) <= 2, "only requests in flight at the kill are re-sent"
        assert len(asked) == 300 and server.request_count == 300 + len(repeated)
        assert server.request_count - sent_before <= 300 - len(answered) + 4
        assert records(root, 1, "cifar100") == expected
        meta = manifest(root, 1, "cifar100")
        assert meta["status"] == "complete" and meta["pairs"]["answered"] == 300
        # every pair was paid for while making v1, before or after the kill; only an answer cached in the
        # instant between its cache write and its journal line (in flight at the kill) can look reused
        assert meta["pairs"]["queried"] + meta["pairs"]["reused"] == 300 and meta["pairs"]["reused"] <= 4
        assert not (set_dir(root, "cifar100") / "v2.manifest.json").exists()

        # the cache is lost: the answers paid for are in v1's journal, so a new version asks nothing
        shutil.rmtree(root / "cache")
        server.reset_counts()
        result = run_cli("differentiate", "cifar100", "--model", "openai/test", "--api-base", server.url,
                         "--no-progress", *PAIRS_300, root=root)
        assert result.exit_code == 0, result.output
        assert server.request_count == 0
    assert records(root, 2, "cifar100") == expected
    meta = manifest(root, 2, "cifar100")
    assert meta["pairs"]["reused"] == 300 and meta["counts"]["requests_sent_this_run"] == 0


# -- 7. bad input ----------------------------------------------------------------------------------------------


def _usage_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "fix:" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_bad_input_gets_clear_errors_and_sends_nothing(cli, fake_llm, root, tmp_path, photo_head):
    path = tmp_path / "features.npz"
    make_features(photo_head, path)
    _usage_error(differentiate(cli, fake_llm, "--features", str(path), "--k", "11"), "k=11", "10 classes")
    _usage_error(differentiate(cli, fake_llm, "--features", str(path), "--k", "1"), "k=1", "too small")
    _usage_error(differentiate(cli, fake_llm, "--pairs-from", "images"), "--features", "--images")
    _usage_error(differentiate(cli, fake_llm, "--pairs-from", "all", "--style", "cupl"), "one class", "pair template")
    _usage_error(cli("describe", "cifar10", "--style", "fudd", "--model", "openai/test", "--api-base", fake_llm.url),
                 "pairs of classes", "differentiate")
    narrow = tmp_path / "narrow.npz"
    make_features(photo_head, narrow, dim=32)
    _usage_error(differentiate(cli, fake_llm, "--features", str(narrow)), "dimension 32", "64")
    _usage_error(cli("differentiate", "cifar10", "--pairs-from", "all", *TINY_ARGS), "--model")
    assert fake_llm.request_count == 0
    assert not set_dir(root).exists(), "nothing written"


# -- 8. secrets ------------------------------------------------------------------------------------------------


def test_api_key_appears_nowhere_on_disk_or_in_output(cli, fake_llm, root, monkeypatch):
    secret = "gw-credential-DIFFERENTIATE-0123456789"
    monkeypatch.setenv("MY_GATEWAY", secret)
    fake_llm.configure(faults=[Fault("echo_auth", match=question("cat", "horse"), times=-1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-attempts", "2", "--api-key-env",
                           "MY_GATEWAY")
    assert result.exit_code == 3, result.output
    assert fake_llm.state.auth_tokens == {secret}
    assert secret not in result.output and secret not in result.stderr
    for path in root.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="ignore"), path
    meta = manifest(root, 1)
    assert meta["status"] == "partial"
    (failed,) = meta["failed_pairs"]
    assert failed["pair"] == "3_7" and failed["reason"].startswith("request failed")
    assert "[REDACTED]" in failed["reason"]
    journal = [json.loads(line) for line in (set_dir(root) / "v1.requests.jsonl").read_text().splitlines()]
    errors = [entry["error"] for entry in journal if entry["status"] == "failed"]
    assert errors and all("[REDACTED]" in e for e in errors)


# -- review fixes -------------------------------------------------------------------------------------------------

def test_a_pair_whose_request_fails_is_neither_queried_nor_reused_and_resume_finishes_it(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("500", match=question("cat", "horse"), times=-1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-attempts", "1")
    assert result.exit_code == 3, result.output
    meta = manifest(root, 1)
    assert meta["status"] == "partial"
    assert meta["pairs"]["queried"] == 44 and meta["pairs"]["reused"] == 0 and meta["pairs"]["unanswered"] == 1
    assert meta["counts"]["failed_requests"] == 1 and meta["counts"]["requests"] == 45
    assert [f["pair"] for f in meta["failed_pairs"]] == ["3_7"]
    fake_llm.configure(faults=[])
    fake_llm.reset_counts()
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--resume")
    assert result.exit_code == 0, result.output
    assert fake_llm.request_count == 1
    meta = manifest(root, 1)
    assert meta["status"] == "complete" and meta["pairs"]["queried"] == 45 and meta["pairs"]["reused"] == 0


def test_a_lost_repair_request_leaves_the_pairs_reasks(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("truncated", match=question("cat", "dog"), times=1),
                               Fault("500", match="Your previous answer could not be used", times=-1)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--max-attempts", "1")
    assert result.exit_code == 0, result.output
    meta = manifest(root, 1)
    assert meta["status"] == "complete" and meta["pairs"]["answered"] == 45 and meta["pairs"]["salvaged"] == 0
    assert meta["counts"]["repairs"] == 1 and meta["counts"]["failed_requests"] == 1
    assert meta["counts"]["reasked_after_unusable_answer"] == 1
    cat_dog = [b for b in fake_llm.state.requests if pair_of(b) == ("cat", "dog")]
    assert len(cat_dog) == 3 and sum(is_repair(b) for b in cat_dog) == 1


@pytest.mark.slow
def test_a_deeply_nested_answer_does_not_crash_the_run(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("text", match=question("cat", "dog"), times=-1, text="[" * 50_000)])
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--answer-retries", "0", "--no-repair")
    assert result.exit_code == 3, result.output
    meta = manifest(root, 1)
    assert meta["status"] == "complete" and [f["pair"] for f in meta["failed_pairs"]] == ["3_5"]
    assert "nested too deeply" in meta["failed_pairs"][0]["reason"]


def test_resume_refuses_other_retry_settings(cli, fake_llm, root):
    fake_llm.configure(faults=[Fault("500", match=question("cat", "horse"), times=-1)])
    assert differentiate(cli, fake_llm, "--pairs-from", "all", "--max-attempts", "1").exit_code == 3
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--resume", "--answer-retries", "5")
    assert result.exit_code == 2 and "answer_retries" in result.stderr and "fix:" in result.stderr


def test_the_report_prices_this_run_apart_from_reused_answers(cli, fake_llm, root):
    first = differentiate(cli, fake_llm, "--pairs-from", "all", "--price", "1000,1000")
    assert first.exit_code == 0
    worth = manifest(root, 1)["cost_usd"]
    assert worth > 0 and f"cost this run: ${worth:.4f}" in first.output
    second = differentiate(cli, fake_llm, "--pairs-from", "all", "--price", "1000,1000")
    assert "cost this run: $0.0000" in second.output and f"worth ${worth:.4f}" in second.output


def test_reask_failed_asks_only_the_failed_pairs_again(cli, fake_llm, root):
    rejected = json.dumps({"differences": [{"attribute": "x", "object_1": "same", "object_2": "same"}]})
    fake_llm.configure(faults=[Fault("text", match=question("cat", "dog"), times=3, text=rejected)])
    assert differentiate(cli, fake_llm, "--pairs-from", "all").exit_code == 3
    assert [f["pair"] for f in manifest(root, 1)["failed_pairs"]] == ["3_5"]
    assert fake_llm.request_count == 47  # 44 pairs + 3 asks of cat/dog
    fake_llm.reset_counts()
    # a plain rerun replays the cached unusable answers: nothing is sent, the pair still fails
    assert differentiate(cli, fake_llm, "--pairs-from", "all").exit_code == 3
    assert fake_llm.request_count == 0
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--reask-failed")
    assert result.exit_code == 0, result.output
    assert [pair_of(b) for b in fake_llm.state.requests] == [("cat", "dog")]
    meta = manifest(root, 3)
    assert meta["failed_pairs"] == [] and meta["pairs"]["reasked_pairs"] == 1
    assert meta["job"]["pair_draws"] == {"3_5": 1}
    assert {r["pair"] for r in records(root, 3)} == {f"{i}_{j}" for i in range(10) for j in range(i + 1, 10)}
    fake_llm.reset_counts()
    # later versions keep the re-asked pair's draw, so its good answer is reused
    assert differentiate(cli, fake_llm, "--pairs-from", "all").exit_code == 0
    assert fake_llm.request_count == 0 and manifest(root, 4)["failed_pairs"] == []
    result = differentiate(cli, fake_llm, "--pairs-from", "all", "--reask-failed")
    assert result.exit_code == 2 and "no pair that failed" in result.stderr


def test_route_options_that_do_nothing_are_refused(cli, fake_llm, root):
    for extra in (("--pairs-from", "all", "--k", "3"), ("--pairs-from", "text", "--min-count", "2"),
                  ("--pairs-from", "all", "--partners", "3")):
        result = differentiate(cli, fake_llm, *extra)
        assert result.exit_code == 2 and "does nothing" in result.stderr.replace("do(es)", "does"), extra
    assert fake_llm.request_count == 0


def test_describe_job_refuses_a_pair_template():
    from promptgen.errors import PromptgenError
    from promptgen.stages.describe import DescribeJob
    from promptgen.templates import load_template

    with pytest.raises(PromptgenError, match="pairs of classes"):
        DescribeJob(load_dataset("cifar10"), load_template("fudd"), "x")


def test_a_pair_list_out_of_order_is_refused():
    from promptgen.pairs import PairPlan
    from promptgen.errors import PromptgenError
    from promptgen.stages.differentiate import DifferentiateJob
    from promptgen.templates import load_template

    for pairs in ([(5, 3)], [(1, 2), (1, 2)], [(0, 10)]):
        plan = PairPlan("file", 10, pairs, [0.0] * len(pairs))
        with pytest.raises(PromptgenError, match="lower class index first"):
            DifferentiateJob(load_dataset("cifar10"), load_template("fudd"), "differential", plan)


def test_show_prints_a_differential_set_by_pair(cli, fake_llm, root):
    assert differentiate(cli, fake_llm, "--pairs-from", "all", "--max-pairs", "9").exit_code == 0
    shown = cli("show", "cifar10/differential", "--class", "cat")
    assert shown.exit_code == 0
    assert "[0_3] airplane / cat" in shown.output
    answer = json.loads(pair_answer("airplane", "cat"))["differences"][0]
    assert f"  - {answer['attribute']}: [airplane] {answer['object_1']}" in shown.output
    assert f"  - {answer['attribute']}: [cat] {answer['object_2']}" in shown.output
    assert "[0_1]" not in shown.output, "pairs without the class are not shown"
