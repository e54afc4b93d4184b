"""`promptgen audit` end to end: a constructed cifar10 set whose flags are known, audited with the
tiny random CLIP model, and its reports read back the way a user reads them -- report.html in
headless Chromium (flags shown, injected markup inert, plots loaded offline), report.md as table
rows, audit.json against the HTML and against the planted facts -- plus --eval (deltas, baseline,
confused pairs recounted from our own argmax), --against (version diff), --no-embed, `promptgen
show --id`, and bad input refused cleanly before any report is written."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import statistics
from collections import Counter
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from promptgen.audit.report import _f3, _num, _pct, _signed_pct, _usd
from promptgen.store import Store, make_record
from tests.conftest import TINY_ARGS, run_cli

DATASET = "cifar10"
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

INJECTION = ("<script>document.title='PWNED'</script>"
             "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><b>bold</b>")
INJECTED_TEXT = "an airplane above a ship " + INJECTION          # also names "ship": a leak, so it is listed
LONG_TEXT = "the automobile is " + " ".join(["gleaming"] * 100) + "."
CAT_LEAK = "a cat chasing a bird"
PIPE_TEXT = "a dog with a horse | a cat"                         # names cat and horse; a pipe inside a cell
DOG_SHARED, DEER_SHARED = "a photo of a dog on grass.", "a photo of a deer on grass."
NAME_ONLY = "a photo of a frog."

# per class, in class order; no plain text names another class (plurals included)
MIXED = {
    "airplane": ["an airplane with two jet engines.", "an airplane parked at the gate.",
                 "an airplane leaving a white trail.", INJECTED_TEXT],
    "automobile": ["an automobile with four doors.", "an automobile stuck in traffic.",
                   "an automobile with a red paint job.", LONG_TEXT],
    "bird": ["a bird with bright feathers.", "a bird perched on a branch.", "a bird with a curved beak."],
    "cat": ["a cat with pointed ears.", "a cat curled up asleep.", "a cat with long whiskers.", CAT_LEAK],
    "deer": ["a deer with large antlers.", "a deer in a snowy forest.", "a deer with a white tail.", DEER_SHARED,
             "a deer drinking from a stream at dusk."],
    "dog": ["a dog wagging its tail.", "a dog fetching a stick.", "a dog with floppy ears.", DOG_SHARED, PIPE_TEXT],
    "frog": ["a frog with webbed feet.", "a frog on a lily pad.", "a frog with bulging eyes.", NAME_ONLY],
    "horse": ["a horse with a flowing mane.", "a horse drinking from a stream at dawn."],   # near-duplicate of deer's
    "ship": ["a ship with tall masts."],
    "truck": [],
}
MIXED_MANIFEST = {"dropped": {"duplicate": 2, "empty": 1}, "failures": [{"reason": "timeout"}],
                  "cost_usd": 0.0123, "tokens": {"prompt": 1234, "completion": 567}, "model": {"model": "fake-llm"}}
# text -> the classes it names besides its own
LEAKS = {INJECTED_TEXT: [(8, "ship")], CAT_LEAK: [(2, "bird")], PIPE_TEXT: [(3, "cat"), (7, "horse")]}

SUMMARY_KEYS = ["records", "classes_with_texts", "dropped", "failures", "too_few", "over_length", "leaks",
                "shared_texts", "name_only", "near_duplicates", "closer_to_other_name", "diversity_median",
                "cost_usd"]
EMBEDDING_KEYS = ["near_duplicates", "closer_to_other_name", "diversity_median"]
# what the constructed set must give, counted by hand from MIXED and MIXED_MANIFEST
PLANTED = {"records": 32, "classes_with_texts": 9, "dropped": 3, "failures": 1, "too_few": 3, "over_length": 1,
           "leaks": 3, "shared_texts": 2, "name_only": 1, "cost_usd": 0.0123}

DESC = {
    "airplane": ["a jet with swept wings.", "a propeller plane on a runway."],
    "automobile": ["a sedan with shiny hubcaps.", "a hatchback in a parking lot."],
    "bird": ["a sparrow on a fence.", "a parrot with green feathers."],
    "cat": ["a tabby licking its paw.", "a kitten with blue eyes."],
    "deer": ["a fawn with white spots.", "a stag in the woods."],
    "dog": ["a puppy chewing a toy.", "a retriever by a lake."],
    "frog": ["a green amphibian on a leaf.", "a toad in the mud."],
    "horse": ["a stallion in a paddock.", "a pony with a braided mane."],
    "ship": ["a cargo vessel at sea.", "a sailing vessel with white sails."],
    "truck": ["a lorry hauling gravel.", "a dump vehicle at a quarry."],
}


# ---------------------------------------------------------------------------------------------- helpers

def write_set(store: Store, name: str, texts: dict[str, list[str]], **manifest_extra) -> tuple:
    """A complete cifar10 version of `texts`, written as an import; returns (info, records)."""
    classes = store.classes(DATASET)
    records = [make_record(class_index=c, class_name=n, stage="import", kind="sentence", text=t, template=None,
                           sample_index=0, request_key=None, model=None)
               for c, n in enumerate(classes.names) for t in texts.get(n, [])]
    manifest = {"stage": "import", "text_kind": "sentence",
                "classes": {"count": len(classes), "hash": classes.hash}, **manifest_extra}
    info = store.write_version(DATASET, name, records, manifest, classes=classes)
    return info, records


def embed(clip, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings straight from the model (not through the package's encoder)."""
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(clip.tokenizer(list(texts))).double(), dim=-1)


def clip_tokens(text: str) -> int:
    """Tokens of CLIP's BPE, start and end included."""
    from open_clip.tokenizer import SimpleTokenizer

    return len(SimpleTokenizer().encode(text)) + 2


def md_cells(line: str) -> list[str]:
    """Cells of a GFM table row: split at pipes not escaped with a backslash."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def assert_clean_error(result, out: Path, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors, result.output
    assert any(line.strip().startswith("fix:") for line in lines), result.output
    for needle in needles:
        assert needle in errors[0], result.output
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def loaded(driver, image) -> bool:
    return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)


# ---------------------------------------------------------------------------------------------- fixtures

def _binary(env: str, name: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path or not Path(path).is_file():
        pytest.fail(f"{name} not found (${env} unset and no {name} on PATH): the audit report tests open "
                    f"report.html in headless Chromium. Run ./scripts/test, which installs them, or install "
                    f"Debian's chromium and chromium-driver (or point {env} at the binary).")
    return path


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; Selenium Manager never touches the network."""
    chromium = _binary("PROMPTGEN_CHROMIUM", "chromium")
    chromedriver = _binary("PROMPTGEN_CHROMEDRIVER", "chromedriver")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):
    """The constructed set `mixed`, audited once with the tiny model."""
    base = tmp_path_factory.mktemp("audit-mixed")
    root = base / "root"
    store = Store(root)
    info, records = write_set(store, "mixed", MIXED, **MIXED_MANIFEST)
    out = base / "report"
    result = run_cli("audit", DATASET, "--sets", "mixed", "-o", out, *TINY_ARGS, root=root)
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    return SimpleNamespace(root=root, store=store, info=info, records=records, out=out, result=result, audit=audit,
                           ids={r["text"]: r["id"] for r in records})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_clip):
    """Set `desc`, image features planted from our own photo and CuPL heads, `promptgen eval` of both
    heads, and two audits of the results (default baseline, --baseline cupl)."""
    base = tmp_path_factory.mktemp("audit-eval")
    root = base / "root"
    store = Store(root)
    write_set(store, "desc", DESC)
    # the two heads, computed here from the model: photo = e("a photo of a {c}."), cupl = normalised mean
    photo = embed(tiny_clip, [f"a photo of a {n}." for n in NAMES]).T
    cupl = F.normalize(torch.stack([embed(tiny_clip, DESC[n]).mean(dim=0) for n in NAMES]), dim=-1).T
    rows, labels = [], []
    for c in range(len(NAMES)):
        for vector in (photo[:, c], photo[:, c], cupl[:, c], cupl[:, c], photo[:, c] + cupl[:, c]):
            rows.append(vector)
            labels.append(c)
    for true, looks_like, count in ((3, photo[:, 5], 3), (8, cupl[:, 0], 2), (1, photo[:, 9] + cupl[:, 9], 2)):
        rows += [looks_like] * count             # planted confusions: cat as dog, ship as airplane, car as truck
        labels += [true] * count
    features = F.normalize(torch.stack(rows), dim=-1)
    labels_t = torch.tensor(labels)
    predictions = {}
    for name, weights in (("photo", photo), ("cupl", cupl)):
        logits = features @ weights
        top2 = logits.topk(2, dim=1).values
        # far from ties: float32 in the package cannot turn an argmax around
        assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-4, name
        predictions[name] = logits.argmax(dim=1)
    feature_file = base / "features.npz"
    np.savez(feature_file, features=features.float().numpy(), labels=labels_t.numpy())
    results_file = base / "results.json"
    result = run_cli("eval", DATASET, "--features", feature_file, "--build", "template:photo,name=photo",
                     "--build", "cupl:desc,name=cupl", *TINY_ARGS, "-o", results_file, root=root)
    assert result.exit_code == 0, result.output
    results = json.loads(results_file.read_text(encoding="utf-8"))
    audits = {}
    for key, extra in (("default", ()), ("cupl", ("--baseline", "cupl"))):
        out = base / f"report-{key}"
        result = run_cli("audit", DATASET, "--sets", "desc", "--eval", results_file, *extra, "--no-embed", "-o", out,
                         *TINY_ARGS, root=root)
        assert result.exit_code == 0, result.output
        audits[key] = SimpleNamespace(out=out, result=result,
                                      audit=json.loads((out / "audit.json").read_text(encoding="utf-8")))
    return SimpleNamespace(root=root, store=store, labels=labels_t, predictions=predictions, results=results,
                           results_file=results_file, audits=audits, base=base)


@pytest.fixture(scope="module")
def diffed(tmp_path_factory: pytest.TempPathFactory, tiny_clip):
    """grow@v1 and grow@v2: v2 adds two texts to bird, drops one of ship's, names another model;
    CuPL heads of both versions evaluated on features made of the texts' own embeddings."""
    base = tmp_path_factory.mktemp("audit-diff")
    root = base / "root"
    store = Store(root)
    v1 = {n: [f"a {n} number {k}." for k in range(3)] for n in NAMES}
    v2 = {n: list(t) for n, t in v1.items()}
    v2["bird"] += ["a bird on a wire.", "a bird in flight."]
    v2["ship"].remove("a ship number 1.")
    write_set(store, "grow", v1, model={"model": "model-a"})
    write_set(store, "grow", v2, model={"model": "model-b"})
    texts = [(c, t) for c, n in enumerate(NAMES) for t in dict.fromkeys(v1[n] + v2[n])]
    feature_file = base / "features.npz"
    np.savez(feature_file, features=embed(tiny_clip, [t for _, t in texts]).float().numpy(),
             labels=np.array([c for c, _ in texts]))
    results_file = base / "results.json"
    result = run_cli("eval", DATASET, "--features", feature_file, "--build", "cupl:grow@v1,name=v1",
                     "--build", "cupl:grow@v2,name=v2", *TINY_ARGS, "-o", results_file, root=root)
    assert result.exit_code == 0, result.output
    out = base / "report"
    result = run_cli("audit", DATASET, "--sets", "grow@v2", "--against", "grow@v1", "--eval", results_file,
                     "--no-embed", "-o", out, *TINY_ARGS, root=root)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(root=root, base=base, out=out, result=result,
                           results=json.loads(results_file.read_text(encoding="utf-8")),
                           audit=json.loads((out / "audit.json").read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------- 1. the set

def test_audit_json_lists_every_planted_flag(mixed) -> None:
    (s,) = mixed.audit["sets"]
    assert s["ref"] == "cifar10/mixed@v1" and mixed.audit["embedding_checks"] is True
    assert {r["text"]: [(c["class_index"], c["class_name"]) for c in r["names"]] for r in s["leaks"]} == LEAKS
    for r in s["leaks"]:
        assert r["id"] == mixed.ids[r["text"]] and r["set"] == "cifar10/mixed@v1" and r["template"] == "import"
    assert s["leaked_names"] and {(c["class_name"], c["texts"]) for c in s["leaked_names"]} == \
        {("ship", 1), ("bird", 1), ("cat", 1), ("horse", 1)}
    (over,) = s["over_length"]
    assert over["id"] == mixed.ids[LONG_TEXT] and over["tokens"] == clip_tokens(LONG_TEXT) > 77
    (group,) = s["collisions"]
    assert group["text"] == "a photo of a {c} on grass"
    assert [c["class_name"] for c in group["classes"]] == ["deer", "dog"]
    assert sorted(r["id"] for r in group["records"]) == sorted([mixed.ids[DOG_SHARED], mixed.ids[DEER_SHARED]])
    assert [r["id"] for r in s["name_only"]] == [mixed.ids[NAME_ONLY]]
    assert [(c["class_name"], c["texts"]) for c in s["stats"]["too_few"]] == [("horse", 2), ("ship", 1), ("truck", 0)]
    assert s["stats"]["per_class_counts"] == [len(MIXED[n]) for n in NAMES]


@pytest.mark.browser
def test_report_html_in_chromium_shows_flags_and_keeps_markup_inert(mixed, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get((mixed.out / "report.html").as_uri())
    assert browser.title == "promptgen audit: cifar10"          # the injected script did not run
    assert browser.find_element(By.ID, "title").text == "promptgen audit: cifar10"

    leak = browser.find_element(By.ID, f"leak-0-{mixed.ids[CAT_LEAK]}")
    assert leak.is_displayed()
    assert "[3] cat" in leak.text and CAT_LEAK in leak.text and "[2] bird" in leak.text
    assert mixed.ids[CAT_LEAK] in leak.text and "cifar10/mixed@v1" in leak.text
    pipe = browser.find_element(By.ID, f"leak-0-{mixed.ids[PIPE_TEXT]}")
    assert pipe.is_displayed() and PIPE_TEXT in pipe.text and "[3] cat, [7] horse" in pipe.text

    over = browser.find_element(By.ID, f"over-0-{mixed.ids[LONG_TEXT]}")
    assert over.is_displayed() and "[1] automobile" in over.text
    assert over.find_elements(By.TAG_NAME, "td")[-1].text == str(clip_tokens(LONG_TEXT))

    injected = browser.find_element(By.ID, f"leak-0-{mixed.ids[INJECTED_TEXT]}")
    assert injected.is_displayed()
    assert "<script>document.title='PWNED'</script>" in injected.text
    assert INJECTION in injected.find_element(By.CSS_SELECTOR, "td.text").text
    assert injected.find_elements(By.CSS_SELECTOR, "td.text b") == []
    assert injected.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return document.body.getAttribute('data-pwned')") is None
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 0      # the report has no scripts at all

    # self-contained: every image is an inlined PNG that loaded, nothing else is fetched
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images, "the diversity plot is missing"
    for image in images:
        assert image.get_attribute("src").startswith("data:image/png;base64,")
        assert loaded(browser, image), image.get_attribute("alt")
    assert browser.find_elements(By.CSS_SELECTOR, "link, iframe, object, embed") == []
    for element in browser.find_elements(By.CSS_SELECTOR, "[href]"):
        assert element.get_attribute("href").startswith((mixed.out / "report.html").as_uri() + "#")
    # the inlined diversity plot is the PNG written beside report.md
    diversity = browser.find_element(By.CSS_SELECTOR, "img[alt^='distribution of per-class']")
    data = diversity.get_attribute("src").split(",", 1)[1]
    assert base64.b64decode(data) == (mixed.out / "diversity.png").read_bytes()


def _brute_force_embedding_figures(clip, records: list[dict], threshold: float = 0.95) -> dict:
    """The embedding checks recomputed from the model: per-class diversity (mean pairwise cosine),
    classes whose text centroid is nearer another class's "a photo of a {c}." than their own, and
    near-duplicate pairs of texts of different classes (own name masked as "object")."""
    vectors = embed(clip, [r["text"] for r in records])
    labels = torch.tensor([r["class_index"] for r in records])
    names = embed(clip, [f"a photo of a {n}." for n in NAMES])
    diversity: list[float | None] = []
    closer: dict[str, tuple] = {}
    for c in range(len(NAMES)):
        own = vectors[labels == c]
        diversity.append(statistics.mean(float(a @ b) for a, b in combinations(own, 2)) if len(own) >= 2 else None)
        if len(own):
            similarity = F.normalize(own.sum(dim=0), dim=0) @ names.T
            others = similarity.clone()
            others[c] = -2.0
            assert abs(float(others.max() - similarity[c])) > 1e-4   # no near-tie to get wrong
            if others.max() > similarity[c]:
                closer[NAMES[c]] = (float(similarity[c]), NAMES[int(others.argmax())], float(others.max()))
    # texts equal once masked are one text (the exact collisions, not near-duplicates); a text of
    # one class cannot be a near-duplicate of another text of the same class
    groups: dict[str, list[dict]] = {}
    masked_of: dict[str, str] = {}
    for r in records:
        masked = re.sub(rf"(?<!\w){re.escape(r['class_name'])}(?!\w)", "object", r["text"], flags=re.IGNORECASE)
        key = " ".join(re.sub(r"[^\w{}']+", " ", masked.casefold()).split())
        groups.setdefault(key, []).append(r)
        masked_of.setdefault(key, masked)
    keys = list(groups)
    masked_vectors = embed(clip, [masked_of[k] for k in keys])
    near: dict[frozenset, float] = {}
    for i, j in combinations(range(len(keys)), 2):
        owners = [{r["class_index"] for r in groups[k]} for k in (keys[i], keys[j])]
        if len(owners[0]) == 1 and owners[0] == owners[1]:
            continue
        cosine = float(masked_vectors[i] @ masked_vectors[j])
        assert abs(cosine - threshold) > 1e-4, (keys[i], keys[j], cosine)
        if cosine >= threshold:
            near[frozenset((groups[keys[i]][0]["id"], groups[keys[j]][0]["id"]))] = cosine
    present = [d for d in diversity if d is not None]
    return {"near_duplicates": near, "closer": closer, "diversity": diversity,
            "diversity_median": statistics.median(present)}


@pytest.mark.browser
def test_summary_cells_match_audit_json_and_the_planted_facts(mixed, browser, tiny_clip) -> None:
    from selenium.webdriver.common.by import By

    summary = mixed.audit["sets"][0]["summary"]
    browser.get((mixed.out / "report.html").as_uri())
    formats = {"diversity_median": _f3, "cost_usd": _usd}
    for key in SUMMARY_KEYS:
        cell = browser.find_element(By.ID, f"sum-0-{key}").text
        assert cell == formats.get(key, _num)(summary[key]), key
    # the planted facts, independently of the report code
    for key, value in PLANTED.items():
        assert summary[key] == value, key
    expected_cells = {"records": "32", "classes_with_texts": "9", "dropped": "3", "failures": "1", "too_few": "3",
                      "over_length": "1", "leaks": "3", "shared_texts": "2", "name_only": "1", "cost_usd": "$0.0123"}
    for key, text in expected_cells.items():
        assert browser.find_element(By.ID, f"sum-0-{key}").text == text, key
    # the embedding figures, recomputed from the model
    figures = _brute_force_embedding_figures(tiny_clip, mixed.records)
    embedding = mixed.audit["sets"][0]["embedding"]
    planted = frozenset((mixed.ids["a deer drinking from a stream at dusk."],
                         mixed.ids["a horse drinking from a stream at dawn."]))
    assert planted in figures["near_duplicates"]
    assert summary["near_duplicates"] == embedding["near_duplicate_count"] == len(figures["near_duplicates"])
    reported = {frozenset((p["a"]["id"], p["b"]["id"])): p["cosine"] for p in embedding["near_duplicates"]}
    assert reported == pytest.approx(figures["near_duplicates"], abs=1e-4)
    assert summary["closer_to_other_name"] == len(figures["closer"]) >= 1
    closer = {c["class_name"]: c for c in embedding["closer_to_other_name"]}
    assert closer.keys() == figures["closer"].keys()
    for name, (own, nearest, nearest_cosine) in figures["closer"].items():
        assert closer[name]["nearest_class_name"] == nearest
        assert [closer[name]["own_cosine"], closer[name]["nearest_cosine"]] == \
            pytest.approx([own, nearest_cosine], abs=1e-4)
    assert embedding["diversity"]["per_class"] == pytest.approx(figures["diversity"], abs=1e-4)
    assert summary["diversity_median"] == pytest.approx(figures["diversity_median"], abs=1e-4)
    # totals of a one-set audit are the set's figures
    assert mixed.audit["totals"]["leaks"] == 3 and mixed.audit["totals"]["records"] == 32


def test_markdown_report_escapes_markup_and_table_pipes(mixed) -> None:
    text = (mixed.out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# promptgen audit: cifar10\n")
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text
    tables = md_tables(text)
    assert len(tables) >= 5
    for table in tables:   # no text adds or removes a column
        width = len(md_cells(table[0]))
        assert set(table[1].replace("|", "").replace(":", "")) == {"-"}, table[1]
        for row in table[2:]:
            assert len(md_cells(row)) == width, row
    rows = {r: next(line for line in text.splitlines() if f"`{mixed.ids[r]}`" in line and line.startswith("|"))
            for r in (PIPE_TEXT, CAT_LEAK)}
    cells = md_cells(rows[PIPE_TEXT])
    assert len(cells) == 6
    assert cells[1:] == [f"`{mixed.ids[PIPE_TEXT]}`", "[5] dog", "import", r"a dog with a horse \| a cat",
                         "[3] cat, [7] horse"]
    assert md_cells(rows[CAT_LEAK])[2:] == ["[3] cat", "import", CAT_LEAK, "[2] bird"]
    summary = next(t for t in tables if t[0].startswith("| set | texts |"))
    cells = md_cells(summary[2])
    assert cells[0] == r"cifar10/mixed@v1" and cells[1:10] == ["32", "9", "3", "1", "3", "1", "3", "2", "1"]
    assert cells[-1] == "$0.0123"
    assert (mixed.out / "diversity.png").is_file() and "![diversity of each set's texts](diversity.png)" in text


def test_printed_summary_lists_the_set_and_the_files(mixed) -> None:
    lines = mixed.result.stdout.splitlines()
    assert lines[0] == "cifar10: 10 classes, 1 set(s); embeddings from promptgen-tiny (random:seed=0)"
    header = lines[1].split()
    assert header[:2] == ["set", "texts"] and "leaks" in header
    row = next(line for line in lines if line.startswith("cifar10/mixed@v1 "))
    summary = mixed.audit["sets"][0]["summary"]
    assert row.split() == ["cifar10/mixed@v1", "32", "3", _num(summary["repeats"]), "1", "3", "1", "3", "2",
                           _num(summary["near_duplicates"]), _num(summary["closer_to_other_name"]),
                           _f3(summary["diversity_median"])]
    stdout = mixed.result.stdout
    assert f"leak      {mixed.ids[CAT_LEAK]}  [3] cat: {CAT_LEAK} -> names bird" in stdout
    assert f"too long  {mixed.ids[LONG_TEXT]}  [1] automobile: {clip_tokens(LONG_TEXT)} tokens" in stdout
    assert "shared    'a photo of a {c} on grass' by 2 classes (deer, dog)" in stdout
    assert "(`promptgen show cifar10/mixed@v1 --id ID`)" in stdout
    assert lines[-1] == f"wrote {mixed.out / 'report.html'}, {mixed.out / 'report.md'}, {mixed.out / 'audit.json'}"


def test_over_length_counts_tokens_not_characters(cli, root: Path, tmp_path: Path) -> None:
    """A text shorter than 77 characters can still be longer than 77 tokens: CJK characters take
    several byte-level BPE tokens each, and each digit is a token of its own (+ start and end)."""
    cjk = "a cat " + "猫" * 40                       # 46 characters
    digits = "0123456789" * 7 + "012345"           # 76 characters
    texts = {"cat": [cjk, "a cat on a mat."], "dog": [digits, "a dog on a rug."]}
    assert len(cjk) < 77 < clip_tokens(cjk) and len(digits) < 77 < clip_tokens(digits)
    _, records = write_set(Store(root), "wide", texts)
    ids = {r["text"]: r["id"] for r in records}
    out = tmp_path / "report"
    result = cli("audit", DATASET, "--sets", "wide", "--no-embed", "-o", out)
    assert result.exit_code == 0, result.output
    (s,) = json.loads((out / "audit.json").read_text(encoding="utf-8"))["sets"]
    assert {r["id"]: r["tokens"] for r in s["over_length"]} == {ids[cjk]: clip_tokens(cjk),
                                                                ids[digits]: clip_tokens(digits)}


def test_top_limits_report_rows_but_audit_json_keeps_every_flag(mixed, tiny_clip, tmp_path: Path) -> None:
    """--top 1 with a looser --near-duplicate: the report shows one row per list and says the rest
    are in audit.json, which must then hold them; of near-duplicate pairs, the closest --top."""
    out = tmp_path / "report"
    result = run_cli("audit", DATASET, "--sets", "mixed", "--top", "1", "--near-duplicate", "0.8", "-o", out,
                     *TINY_ARGS, root=mixed.root)
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    (s,) = audit["sets"]
    assert audit["settings"]["top"] == 1 and audit["settings"]["near_duplicate_cosine"] == 0.8
    html = (out / "report.html").read_text(encoding="utf-8")
    assert len(s["leaks"]) == 3 and html.count('<tr class="flag" id="leak-0-') == 1
    assert "1 of 3 shown; all are in audit.json." in html
    near = _brute_force_embedding_figures(tiny_clip, mixed.records, threshold=0.8)["near_duplicates"]
    assert len(near) >= 3
    assert s["summary"]["near_duplicates"] == s["embedding"]["near_duplicate_count"] == len(near)
    # near-duplicate pairs can run to millions: audit.json keeps the count and the --top closest, and says so
    assert f"The 1 closest of {len(near)} pairs (audit.json lists the same 1; raise --top for more)." in html
    (listed,) = s["embedding"]["near_duplicates"]
    closest = max(near.items(), key=lambda kv: kv[1])
    assert frozenset((listed["a"]["id"], listed["b"]["id"])) == closest[0]
    assert listed["cosine"] == pytest.approx(closest[1], abs=1e-4)


# ---------------------------------------------------------------------------------------------- 2. --eval

def _accuracy(labels: torch.Tensor, predictions: torch.Tensor) -> list[float]:
    return [float((predictions[labels == c] == c).float().mean()) for c in range(len(NAMES))]


def test_eval_deltas_baseline_and_confused_pairs(evaluated) -> None:
    labels, mine = evaluated.labels, evaluated.predictions
    heads = {h["head"]: h for h in evaluated.results["heads"]}
    assert list(heads) == ["photo", "cupl"]
    for name in heads:   # our own argmax gives the results' accuracies: the recount below is of the same thing
        assert heads[name]["per_class_accuracy"] == pytest.approx(_accuracy(labels, mine[name]), abs=1e-6)
        assert heads[name]["top1"] == pytest.approx(float((mine[name] == labels).float().mean()), abs=1e-6)
    accuracy = {name: heads[name]["per_class_accuracy"] for name in heads}
    assert accuracy["photo"] != accuracy["cupl"]

    for key, baseline in (("default", "photo"), ("cupl", "cupl")):
        audit = evaluated.audits[key].audit
        (evaluation,) = audit["evaluation"]
        assert evaluation["baseline"] == baseline and evaluation["source"] == "results.json"
        assert audit["settings"]["baseline"] == (None if key == "default" else "cupl")
        assert evaluation["images"] == len(labels) and evaluation["support"] == torch.bincount(labels).tolist()
        assert evaluation["baseline_accuracy"] == accuracy[baseline]
        for h in evaluation["heads"]:
            deltas = [a - b for a, b in zip(accuracy[h["head"]], accuracy[baseline])]
            assert h["per_class_delta"] == pytest.approx(deltas, abs=1e-6)
            assert h["improved"] == sum(d > 1e-9 for d in deltas) and h["worsened"] == sum(d < -1e-9 for d in deltas)
            assert h["delta_top1"] == pytest.approx(heads[h["head"]]["top1"] - heads[baseline]["top1"], abs=1e-6)
            assert [c["class_index"] for c in h["most_worsened"]] == \
                sorted((c for c in range(len(NAMES)) if deltas[c] < -1e-9), key=lambda c: (deltas[c], c))
            # confused pairs recounted from our own argmax, either direction
            wrong = mine[h["head"]] != labels
            pairs = Counter(tuple(sorted((int(t), int(p)))) for t, p in zip(labels[wrong], mine[h["head"]][wrong]))
            assert {(p["a"]["class_index"], p["b"]["class_index"]): p["images"] for p in h["most_confused"]} == pairs
            counts = [p["images"] for p in h["most_confused"]]
            assert counts == sorted(counts, reverse=True)
            support = evaluation["support"]
            for p in h["most_confused"]:
                a, b = p["a"]["class_index"], p["b"]["class_index"]
                assert p["share"] == pytest.approx(p["images"] / (support[a] + support[b]), abs=1e-6)
                assert (p["a"]["class_name"], p["b"]["class_name"]) == (NAMES[a], NAMES[b])
        baseline_head = next(h for h in evaluation["heads"] if h["head"] == baseline)
        assert set(baseline_head["per_class_delta"]) == {0} and baseline_head["delta_top1"] == 0
    confused = {(p["a"]["class_name"], p["b"]["class_name"]): p["images"]
                for p in evaluated.audits["default"].audit["evaluation"][0]["heads"][0]["most_confused"]}
    assert confused.get(("cat", "dog"), 0) >= 3     # the planted cat-as-dog images


@pytest.mark.browser
def test_eval_section_of_the_html(evaluated, browser) -> None:
    from selenium.webdriver.common.by import By

    for key, baseline in (("default", "photo"), ("cupl", "cupl")):
        run = evaluated.audits[key]
        browser.get((run.out / "report.html").as_uri())
        section = browser.find_element(By.ID, "evaluation")
        assert section.is_displayed()
        rows = browser.find_elements(By.CSS_SELECTOR, "#heads-0 tr")[1:]
        shown = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
        heads = run.audit["evaluation"][0]["heads"]
        assert [cells[0] for cells in shown] == ["photo", "cupl"]
        for cells, head in zip(shown, heads):
            mine = float((evaluated.predictions[head["head"]] == evaluated.labels).float().mean())
            assert cells[3] == _pct(head["top1"]) == f"{100 * mine:.2f}%"
            assert cells[1] == {"photo": "template", "cupl": "cupl"}[head["head"]]
            assert cells[6] == _signed_pct(head["delta_top1"])
        assert run.audit["plots"]["deltas"] == ["accuracy-delta-1.png"]
        plot = browser.find_element(By.CSS_SELECTOR, f"img[alt='per-class accuracy delta against {baseline}']")
        assert plot.is_displayed() and loaded(browser, plot)
        src = plot.get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (run.out / "accuracy-delta-1.png").read_bytes()
        assert "accuracy-delta-1.png" in (run.out / "report.md").read_text(encoding="utf-8")
    stdout = evaluated.audits["default"].result.stdout
    assert f"results.json: {len(evaluated.labels)} images, against photo:" in stdout


def test_results_without_confusion_counts_say_so(evaluated, tmp_path: Path) -> None:
    """A results file from before "confusions" existed: no pairs, a note instead of a table."""
    results = json.loads(evaluated.results_file.read_text(encoding="utf-8"))
    for head in results["heads"]:
        del head["confusions"]
    old = tmp_path / "old-results.json"
    old.write_text(json.dumps(results), encoding="utf-8")
    out = tmp_path / "report"
    result = run_cli("audit", DATASET, "--sets", "desc", "--eval", old, "--no-embed", "-o", out, *TINY_ARGS,
                     root=evaluated.root)
    assert result.exit_code == 0, result.output
    (evaluation,) = json.loads((out / "audit.json").read_text(encoding="utf-8"))["evaluation"]
    assert [h["most_confused"] for h in evaluation["heads"]] == [None, None]
    assert [h["per_class_delta"] for h in evaluation["heads"]] == \
        [h["per_class_delta"] for h in evaluated.audits["default"].audit["evaluation"][0]["heads"]]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("This results file has no confusion counts") == 2 and 'class="confused"' not in html


# ---------------------------------------------------------------------------------------------- 3. --against

@pytest.mark.browser
def test_against_diffs_two_versions(diffed, browser) -> None:
    from selenium.webdriver.common.by import By

    (diff,) = diffed.audit["diffs"]
    assert (diff["old"], diff["new"]) == ("cifar10/grow@v1", "cifar10/grow@v2")
    assert (diff["texts_added"], diff["texts_removed"], diff["classes_changed"]) == (2, 1, 2)
    assert (diff["records_old"], diff["records_new"]) == (30, 31)
    assert diff["classes_added"] == [] and diff["classes_removed"] == []
    assert [(c["class_name"], c["added"], c["removed"], c["kept"]) for c in diff["per_class"]] == \
        [("bird", 2, 0, 3), ("ship", 0, 1, 2)]
    assert diff["per_class"][0]["examples_added"] == ["a bird in flight.", "a bird on a wire."]
    assert diff["per_class"][1]["examples_removed"] == ["a ship number 1."]
    assert diff["manifest_changes"] == [{"field": "model.model", "old": "model-a", "new": "model-b"}]

    browser.get((diffed.out / "report.html").as_uri())
    section = browser.find_element(By.ID, "diffs")
    assert section.is_displayed() and section.text == "Version diff"
    assert browser.find_element(By.XPATH, "//h2[@id='diffs']/following-sibling::h3").text == \
        "cifar10/grow@v1 → cifar10/grow@v2"
    manifest_rows = browser.find_elements(By.CSS_SELECTOR, "table.manifest-diff tr")[1:]
    assert [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in manifest_rows] == \
        [["model.model", '"model-a"', '"model-b"']]
    class_rows = browser.find_elements(By.CSS_SELECTOR, "table.class-diff tr")[1:]
    assert [[td.text for td in r.find_elements(By.TAG_NAME, "td")][:4] for r in class_rows] == \
        [["[2] bird", "2", "0", "3"], ["[8] ship", "0", "1", "2"]]
    # accuracy of the heads built from each version with the same builder
    heads = {h["head"]: h for h in diffed.results["heads"]}
    (accuracy,) = diff["accuracy"]
    assert (accuracy["builder"], accuracy["old_head"], accuracy["new_head"]) == ("cupl", "v1", "v2")
    assert diff["accuracy_note"] is None
    assert accuracy["delta_top1"] == pytest.approx(heads["v2"]["top1"] - heads["v1"]["top1"], abs=1e-6)
    assert accuracy["per_class_delta"] == pytest.approx(
        [a - b for a, b in zip(heads["v2"]["per_class_accuracy"], heads["v1"]["per_class_accuracy"])], abs=1e-6)
    line = next(line for line in diffed.result.stdout.splitlines() if line.startswith("cifar10/grow@v1 -> "))
    assert line == ("cifar10/grow@v1 -> cifar10/grow@v2: 2 texts added, 1 removed in 2 classes; 1 manifest fields "
                    f"differ; cupl top-1 {_signed_pct(accuracy['delta_top1'])}")
    assert any(p.text.startswith("Accuracy (cupl): v1 ") for p in browser.find_elements(By.TAG_NAME, "p"))


def test_top_limits_the_diff_rows_but_audit_json_keeps_them(diffed) -> None:
    """--top: "Rows per list in the reports (audit.json keeps every flag)"; the report says "1 of 2
    shown; all are in audit.json"."""
    out = diffed.base / "report-top1"
    result = run_cli("audit", DATASET, "--sets", "grow@v2", "--against", "grow@v1", "--top", "1", "--no-embed",
                     "-o", out, *TINY_ARGS, root=diffed.root)
    assert result.exit_code == 0, result.output
    (diff,) = json.loads((out / "audit.json").read_text(encoding="utf-8"))["diffs"]
    html = (out / "report.html").read_text(encoding="utf-8")
    diff_table = html.split('<table class="class-diff">', 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r"<tr><td>\[\d\] \w+</td><td class=\"num\">", diff_table)) == 1  # one row in the report
    assert "1 of 2 shown; all are in audit.json." in html
    assert diff["per_class_count"] == 2
    assert [c["class_name"] for c in diff["per_class"]] == ["bird", "ship"]      # ... and both in audit.json




# ---------------------------------------------------------------------------------------------- 4. bad input

@pytest.fixture(scope="module")
def bad_world(evaluated):
    """evaluated's root plus an empty set and a results file for another class list."""
    write_set(evaluated.store, "empty", {})
    other = json.loads(evaluated.results_file.read_text(encoding="utf-8"))
    other["classes"] = {"count": len(NAMES), "hash": "0" * 64, "names": NAMES[::-1]}
    other_file = evaluated.base / "other-classes.json"
    other_file.write_text(json.dumps(other), encoding="utf-8")
    partial = json.loads(evaluated.results_file.read_text(encoding="utf-8"))
    partial["heads"][0]["per_class_accuracy"] = partial["heads"][0]["per_class_accuracy"][:3]
    partial_file = evaluated.base / "partial.json"
    partial_file.write_text(json.dumps(partial), encoding="utf-8")
    not_json = evaluated.base / "not-json.json"
    not_json.write_text("{\"format\": ", encoding="utf-8")
    return SimpleNamespace(root=evaluated.root, results=evaluated.results_file, other=other_file,
                           partial=partial_file, not_json=not_json)


BAD_INPUT = {
    "another dataset's set": (lambda w: ["--sets", "pets/dclip-published"], "names dataset 'pets'"),
    "results of another class list": (lambda w: ["--sets", "desc", "--eval", w.other], "another class list"),
    "an empty set": (lambda w: ["--sets", "empty"], "cifar10/empty@v1 is empty"),
    "against the audited version": (lambda w: ["--sets", "desc", "--against", "desc@v1"], "version under audit"),
    "an unknown baseline": (lambda w: ["--sets", "desc", "--eval", w.results, "--baseline", "nope"],
                            "no head 'nope'"),
    "a baseline without results": (lambda w: ["--sets", "desc", "--baseline", "photo"], "no --eval was given"),
    "a results file cut short": (lambda w: ["--sets", "desc", "--eval", w.partial],
                                 "has no per_class_accuracy for the 10 classes"),
    "a results file that is not JSON": (lambda w: ["--sets", "desc", "--eval", w.not_json], "is not JSON"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_clean_error_and_writes_nothing(bad_world, tmp_path: Path, case: str) -> None:
    arguments, needle = BAD_INPUT[case]
    out = tmp_path / "report"
    result = run_cli("audit", DATASET, *arguments(bad_world), "-o", out, *TINY_ARGS, root=bad_world.root)
    assert_clean_error(result, out, needle)


# ---------------------------------------------------------------------------------------------- 5. show --id

def test_show_id_prints_exactly_that_record(mixed) -> None:
    record_id = mixed.ids[CAT_LEAK]
    result = run_cli("show", "cifar10/mixed@v1", "--id", record_id, root=mixed.root)
    assert result.exit_code == 0, result.output
    assert result.stdout == ("# cifar10/mixed@v1  (complete, import, 1 texts shown)\n\n[3] cat\n"
                             f"  - {CAT_LEAK}  (import; {record_id})\n")
    stored = {r["id"]: r for r in mixed.store.read_records(mixed.info)}
    result = run_cli("show", "cifar10/mixed@v1", "--id", record_id, "--id", mixed.ids[LONG_TEXT], "--json",
                     root=mixed.root)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [stored[mixed.ids[LONG_TEXT]], stored[record_id]]   # set order


def test_show_unknown_id_is_an_error(mixed) -> None:
    result = run_cli("show", "cifar10/mixed@v1", "--id", "0123456789abcdef", root=mixed.root)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cifar10/mixed@v1 has no record '0123456789abcdef'")
    assert "fix:" in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------------------------- 6. --no-embed

@pytest.mark.browser
def test_no_embed_loads_no_model_and_says_so(mixed, browser, tmp_path: Path, monkeypatch) -> None:
    from selenium.webdriver.common.by import By

    def no_model(*args, **kwargs):
        raise RuntimeError("load_clip must not be called with --no-embed")

    monkeypatch.setattr("promptgen.clip.models.load_clip", no_model)
    with pytest.raises(RuntimeError, match="must not be called"):   # the patch is where the command loads it
        run_cli("audit", DATASET, "--sets", "mixed", "-o", tmp_path / "embedded", *TINY_ARGS, root=mixed.root)
    out = tmp_path / "report"
    result = run_cli("audit", DATASET, "--sets", "mixed", "--no-embed", "-o", out, *TINY_ARGS, root=mixed.root)
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    (s,) = audit["sets"]
    assert audit["embedding_checks"] is False and audit["model"] is None and s["embedding"] is None
    for key in SUMMARY_KEYS:
        expected = None if key in EMBEDDING_KEYS else mixed.audit["sets"][0]["summary"][key]
        assert s["summary"][key] == expected, key
    assert s["over_length"][0]["tokens"] == clip_tokens(LONG_TEXT)   # CLIP's BPE at 77 without the model
    assert result.stdout.splitlines()[0] == "cifar10: 10 classes, 1 set(s); embedding checks skipped"

    browser.get((out / "report.html").as_uri())
    for key in EMBEDDING_KEYS:
        assert browser.find_element(By.ID, f"sum-0-{key}").text == "-"
    assert browser.find_element(By.ID, "sum-0-leaks").text == "3"
    assert "embedding checks skipped (--no-embed)" in browser.find_element(By.ID, "meta").text
    assert any(p.text.startswith("Embedding checks (near-duplicates, closeness to other names, diversity, similar "
                                 "pairs) were skipped") for p in browser.find_elements(By.CSS_SELECTOR, "p.note"))
    assert browser.find_elements(By.ID, "set-0-diversity") == [] and browser.find_elements(By.TAG_NAME, "img") == []
    assert not (out / "diversity.png").exists()
    assert "_Embedding checks were skipped._" in (out / "report.md").read_text(encoding="utf-8")

    # --json: the same figures as one JSON document on stdout
    out = tmp_path / "json-report"
    result = run_cli("audit", DATASET, "--sets", "mixed", "--no-embed", "--json", "-o", out, root=mixed.root)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["files"] == {name: str(out / name) for name in ("audit.json", "report.html", "report.md")}
    assert printed["sets"] == [{"ref": "cifar10/mixed@v1", **s["summary"]}]
    assert printed["totals"]["leaks"] == 3 and printed["totals"]["records"] == 32


def test_an_unwritable_output_folder_is_a_clean_error_before_any_work(mixed, tmp_path: Path, monkeypatch) -> None:
    import promptgen.clip.models

    monkeypatch.setattr(promptgen.clip.models, "load_clip", lambda *a, **k: pytest.fail("loaded a model"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("audit", DATASET, "--sets", "mixed", "-o", blocker / "sub", *TINY_ARGS, root=mixed.root)
    assert result.exit_code == 2, result.output
    assert "error: cannot write the reports to" in result.stderr and "fix: give -o a folder" in result.stderr
    assert "Traceback" not in result.output


def test_default_audit_skips_sets_it_cannot_audit_and_says_so(bad_world, tmp_path: Path) -> None:
    """Without --sets, one empty set must not block the others: it is listed as not audited."""
    out = tmp_path / "report"
    result = run_cli("audit", DATASET, "--no-embed", "-o", out, root=bad_world.root)
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert "cifar10/empty@v1" not in [s["ref"] for s in audit["sets"]] and audit["sets"]
    assert [k["ref"] for k in audit["skipped_sets"]] == ["cifar10/empty"]
    assert "is empty" in audit["skipped_sets"][0]["reason"]
    assert "not audited: cifar10/empty" in result.stdout
    assert "Not audited: cifar10/empty" in (out / "report.html").read_text(encoding="utf-8")


def test_show_id_finds_a_record_of_another_class_only_with_that_class(mixed) -> None:
    record = next(r for r in mixed.records if r["text"] == CAT_LEAK)
    result = run_cli("show", f"{DATASET}/mixed@v1", "--id", record["id"], "--class", "dog", "--json", root=mixed.root)
    assert result.exit_code == 0 and json.loads(result.stdout) == []  # it exists, but is cat's
    result = run_cli("show", f"{DATASET}/mixed@v1", "--id", record["id"], "--class", "cat", "--json", root=mixed.root)
    assert [r["id"] for r in json.loads(result.stdout)] == [record["id"]]


@pytest.mark.slow
def test_an_llm_set_shows_tokens_and_cost_per_class_adding_up_to_the_manifest(cli, fake_llm, root: Path,
                                                                               tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_KEY_FOR_TESTS", "not-a-real-key")  # a priced model name, so costs are known
    result = cli("describe", DATASET, "--style", "dclip", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.url,
                 "--api-key-env", "FAKE_KEY_FOR_TESTS")
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    result = cli("audit", DATASET, "--sets", "dclip", "--no-embed", "-o", out)
    assert result.exit_code == 0, result.output
    (s,) = json.loads((out / "audit.json").read_text(encoding="utf-8"))["sets"]
    usage, stats = s["stats"]["per_class_usage"], s["stats"]
    assert sum(usage["prompt_tokens"]) == stats["tokens"]["prompt"] > 0
    assert sum(usage["completion_tokens"]) == stats["tokens"]["completion"] > 0
    assert sum(usage["cost_usd"]) == pytest.approx(stats["cost_usd"]) and stats["cost_usd"] > 0
    assert all(n > 0 for n in usage["prompt_tokens"])  # one question per class
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<table class="per-class-stats">') == 1 and f"{_usd(usage['cost_usd'][0])}</td>" in html
