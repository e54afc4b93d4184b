"""The audit's checks on constructed sets where the right flags are known."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from promptgen.audit import checks, compare
from promptgen.audit.run import AuditOptions, TextModel, run_audit
from promptgen.errors import PromptgenError
from promptgen.parsing import name_pattern
from promptgen.store import SetRef, Store, make_record

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_set(store: Store, name: str, texts: dict[str, list[str]], *, kind: str = "sentence",
              manifest: dict | None = None, dataset: str = "cifar10", template: str | None = None,
              extra: dict | None = None) -> str:
    classes = store.classes(dataset)
    records = []
    for class_name, class_texts in texts.items():
        c = classes.names.index(class_name)
        for n, text in enumerate(class_texts):
            records.append(make_record(class_index=c, class_name=class_name, stage="import", kind=kind, text=text,
                                       template=template, sample_index=n, request_key=None, model=None,
                                       **(extra or {})))
    info = store.write_version(dataset, name, records, {"stage": "import", "text_kind": kind,
                                                       "classes": {"count": len(classes), "hash": classes.hash},
                                                       **(manifest or {})}, classes)
    return str(info.ref)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path)


def audit_set(store: Store, ref: str) -> checks.AuditSet:
    return checks.load_audit_set(store, SetRef.parse(ref), store.classes("cifar10"))


def plain(n: int = 3) -> dict[str, list[str]]:
    """n texts per class that name no class and collide with no other class's texts."""
    return {c: [f"pattern {c[::-1]} number {i}" for i in range(n)] for c in CIFAR}


# -- leakage -----------------------------------------------------------------------------------

def test_leaks_flag_texts_naming_another_class_with_plurals_and_not_the_own_name(store):
    texts = plain()
    texts["cat"] = ["a cat chasing a bird", "a cat among frogs", "a cat, which is not a catfish", "a cat"]
    texts["automobile"] = ["an automobile parked near trucks", "an automobile"]
    texts["dog"] = ["a dog with a doghouse", "a hotdog stand"]  # "doghouse"/"hotdog" are not "dog"
    aset = audit_set(store, write_set(store, "leaky", texts))
    flagged = {r["text"]: [c["class_name"] for c in r["names"]] for r in checks.leaks(aset, store.classes("cifar10"))}
    assert flagged == {"a cat chasing a bird": ["bird"], "a cat among frogs": ["frog"],
                       "an automobile parked near trucks": ["truck"]}


def test_a_leak_carries_what_finds_the_record_again(store):
    ref = write_set(store, "leaky", {**plain(), "cat": ["a cat chasing a bird"]}, template="q1")
    aset = audit_set(store, ref)
    (flag,) = checks.leaks(aset, store.classes("cifar10"))
    record = next(r for r in aset.records if r["text"] == "a cat chasing a bird")
    assert flag["id"] == record["id"] and flag["set"] == ref == "cifar10/leaky@v1"
    assert (flag["class_index"], flag["class_name"], flag["template"]) == (3, "cat", "q1")


def test_class_name_matcher_with_plurals_prefers_the_longest_name():
    from promptgen.classes import ClassList, class_name_matcher

    classes = ClassList(dataset="x", names=("cat", "wild cat", "sea lion", "lion"))
    assert class_name_matcher(classes)("two sea lions and a lion") == {3}  # plurals are opt-in
    named = class_name_matcher(classes, plurals=True)
    assert named("a wild cat in the grass") == {1}
    assert named("a cat, unlike a wild cat") == {0, 1}
    assert named("two sea lions and a lion") == {2, 3}
    assert named("wild-cats") == {1}


# -- shared texts, name-only texts ---------------------------------------------------------------

def test_texts_equal_once_the_class_name_is_masked_are_one_collision(store):
    texts = plain()
    texts["dog"] = ["A photo of a dog on grass.", "a dog"]
    texts["deer"] = ["a photo of a DEER on grass", "four legs"]
    texts["horse"] = ["four legs"]
    aset = audit_set(store, write_set(store, "shared", texts))
    collisions, name_only = checks.shared_texts(aset, store.classes("cifar10"))
    groups = {g["text"]: sorted(c["class_name"] for c in g["classes"]) for g in collisions}
    assert groups == {"a photo of a {c} on grass": ["deer", "dog"], "four legs": ["deer", "horse"]}
    assert [r["text"] for r in name_only] == ["a dog"]
    # a template-like text is shared by all ten classes
    texts = {c: [f"a {c} seen from afar"] for c in CIFAR}
    aset = audit_set(store, write_set(store, "template-like", texts))
    collisions, _ = checks.shared_texts(aset, store.classes("cifar10"))
    assert len(collisions) == 1 and len(collisions[0]["classes"]) == 10 and len(collisions[0]["records"]) == 10


def test_synonym_sets_collide_on_names_without_masking(store):
    classes = store.classes("cifar10")
    texts = {"automobile": ["automobile", "car", "motorcar"], "truck": ["truck", "Car"], "cat": ["cat", "kitty"]}
    ref = write_set(store, "syn", texts, kind="synonym", extra={"source": "wordnet"})
    aset = audit_set(store, ref)
    assert aset.is_synonyms
    collisions, name_only = checks.shared_texts(aset, classes)
    assert [(g["text"], [c["class_name"] for c in g["classes"]]) for g in collisions] == [("car", ["automobile", "truck"])]
    assert name_only == []


# -- over-length ---------------------------------------------------------------------------------

def test_over_length_counts_clip_tokens_of_the_text_clip_sees(store):
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    count = checks.token_counter(tokenizer)
    long_text = " ".join(["striped"] * 80)
    exactly = " ".join(["striped"] * 75)  # 75 words + start + end = 77: fits
    assert count(exactly) == 77 and count(long_text) == 82
    texts = {**plain(), "cat": [long_text, exactly]}
    # a descriptor is embedded as "{c}, which has {d}": 75 words become too long
    texts_d = {**plain(), "dog": [exactly]}
    aset = audit_set(store, write_set(store, "long", texts))
    assert [(f["text"], f["tokens"]) for f in checks.over_length(aset, count, 77)] == [(long_text, 82)]
    aset_d = audit_set(store, write_set(store, "long-d", texts_d, kind="descriptor"))
    (flag,) = checks.over_length(aset_d, count, 77)
    assert flag["clip_text"] == f"dog, which has {exactly}" and flag["tokens"] == 81  # dog , which has
    # token counts agree with the tokenizer itself: the 77th token of a flagged text is not the end token
    tokens = tokenizer([long_text])[0]
    assert int(tokens[-1]) == tokenizer.eot_token_id and int((tokens != 0).sum()) == 77


# -- statistics and coverage --------------------------------------------------------------------

def test_statistics_count_texts_per_class_drops_and_the_classes_with_too_few(store):
    texts = plain(4)
    texts["cat"] = ["one cat text"]
    del texts["ship"]
    manifest = {"dropped": {"empty": 2, "refusal": 1, "duplicate": 0},
                "dropped_per_class": {"3": {"refusal": 1, "empty": 2}},
                "tokens": {"prompt": 100, "completion": 50}, "cost_usd": 0.25,
                "failures": [{"reason": "request failed"}, {"reason": "unusable answer"}, {"reason": "request failed"}]}
    aset = audit_set(store, write_set(store, "stats", texts, manifest=manifest))
    stats = checks.set_statistics(aset, store.classes("cifar10"), min_texts=3)
    assert stats["records"] == 33 and stats["classes_with_texts"] == 9
    assert stats["texts_per_class"] == {"min": 0, "median": 4.0, "mean": 3.3, "max": 4}
    assert [(c["class_name"], c["texts"]) for c in stats["too_few"]] == [("cat", 1), ("ship", 0)]
    assert stats["dropped_total"] == 3 and stats["dropped_per_class"] == {"3": {"refusal": 1, "empty": 2}}
    assert stats["failures"] == 3 and stats["failure_reasons"] == {"request failed": 2, "unusable answer": 1}
    assert stats["cost_usd"] == 0.25 and stats["tokens"] == {"prompt": 100, "completion": 50}


def test_statistics_report_the_repeats_a_set_keeps(store):
    """Repeats stay in a set (CuPL and DCLIP count each one); the audit counts them per class."""
    texts = plain(2)
    texts["cat"] = ["A cat.", "A cat.", "A cat.", "A dog?"]
    texts["dog"] = ["A dog.", "A dog."]
    aset = audit_set(store, write_set(store, "repeats", texts))
    stats = checks.set_statistics(aset, store.classes("cifar10"), min_texts=1)
    assert stats["repeated_texts"] == 3 and stats["repeats_per_class"] == {"3": 2, "5": 1}
    assert len({r["id"] for r in aset.records}) == len(aset.records)  # each repeat has its own id


def test_template_coverage_names_the_classes_a_question_missed(store):
    classes = store.classes("cifar10")
    records = []
    for c, name in enumerate(CIFAR):
        for question in ("looks", "find") if name != "frog" else ("looks",):
            records.append(make_record(class_index=c, class_name=name, stage="describe", kind="sentence",
                                       text=f"{question} {name}", template=question, sample_index=0,
                                       request_key=None, model=None))
    store.write_version("cifar10", "cov", records, {"stage": "describe", "text_kind": "sentence",
                                                    "classes": {"count": 10, "hash": classes.hash},
                                                    "template": {"ref": "cupl@v1", "questions": [
                                                        "looks", "find", "never"]}}, classes)
    coverage = {t["template"]: t for t in checks.template_coverage(audit_set(store, "cifar10/cov@v1"), classes)}
    assert coverage["looks"]["coverage"] == 1.0 and coverage["looks"]["missing"] == []
    assert coverage["find"]["classes"] == 9 and coverage["find"]["missing"] == ["frog"]
    assert coverage["never"]["classes"] == 0 and coverage["never"]["missing_count"] == 10


# -- embedding checks with planted vectors -------------------------------------------------------

class Planted:
    """An encoder that knows a vector for each text; any other text gets a fixed random vector."""

    def __init__(self, dim: int = 32) -> None:
        self.dim, self.vectors, self.calls = dim, {}, 0
        self.generator = torch.Generator().manual_seed(0)

    def set(self, text: str, vector: torch.Tensor) -> None:
        self.vectors[text] = F.normalize(vector.float(), dim=-1)

    def __call__(self, texts):
        self.calls += 1
        out = []
        for text in texts:
            if text not in self.vectors:
                self.vectors[text] = F.normalize(torch.randn(self.dim, generator=self.generator), dim=-1)
            out.append(self.vectors[text])
        return torch.stack(out)


def basis(i: int, dim: int = 32) -> torch.Tensor:
    v = torch.zeros(dim)
    v[i] = 1
    return v


def one_text_each(store: Store, name: str, overrides: dict[str, list[str]]) -> tuple[checks.AuditSet, Planted]:
    """A set with one text per class (its own basis vector, naming no class) except `overrides`."""
    texts = {c: [f"{c[::-1]} alone"] for c in CIFAR} | overrides
    encode = Planted()
    for c, class_name in enumerate(CIFAR):
        encode.set(f"{class_name[::-1]} alone", basis(c))
    return audit_set(store, write_set(store, name, texts)), encode


def test_near_duplicates_closer_to_other_name_diversity_and_similar_pairs(store):
    classes = store.classes("cifar10")
    texts = {c: [f"{c[::-1]} text one", f"{c[::-1]} text two"] for c in CIFAR}
    texts["cat"] = ["whiskers and a tail", "a small feline"]
    texts["dog"] = ["whiskers and a tall", "barks"]
    aset = audit_set(store, write_set(store, "emb", texts))
    encode = Planted()
    for c, name in enumerate(CIFAR):
        encode.set(f"a photo of a {name}.", basis(c))
        for sign, t in zip((1, -1), texts[name]):
            encode.set(t, basis(c) + sign * 0.3 * basis(20 + c))
    # cat's texts point at "dog"; dog's "whiskers and a tall" nearly equals cat's "whiskers and a tail"
    encode.set("whiskers and a tail", basis(5) + 0.1 * basis(30))
    encode.set("a small feline", basis(5) + 0.2 * basis(3))
    encode.set("whiskers and a tall", basis(5) + 0.1 * basis(30) + 0.02 * basis(31))
    result = checks.embedding_checks(aset, classes, encode, threshold=0.99, top=10)
    pairs = [(p["a"]["text"], p["b"]["text"]) for p in result["near_duplicates"]]
    assert result["near_duplicate_count"] == 1 and pairs == [("whiskers and a tail", "whiskers and a tall")]
    assert result["near_duplicates"][0]["cosine"] == pytest.approx(
        float(F.normalize(basis(5) + 0.1 * basis(30), dim=0) @ F.normalize(basis(5) + 0.1 * basis(30) + 0.02 * basis(31), dim=0)), abs=1e-5)
    closer = result["closer_to_other_name"]
    assert [(c["class_name"], c["nearest_class_name"]) for c in closer] == [("cat", "dog")]
    assert closer[0]["own_name_rank"] == 2 and closer[0]["margin"] < 0
    # diversity against the brute-force mean of pairwise cosines
    for c, name in enumerate(CIFAR):
        vectors = torch.stack([encode.vectors[t] for t in texts[name]])
        expected = float(vectors[0] @ vectors[1])
        assert result["diversity"]["per_class"][c] == pytest.approx(expected, abs=1e-5)
    assert result["diversity"]["least_diverse"][0]["class_name"] == "cat"  # its two texts are the most alike
    # the most similar pair of class means is cat/dog
    top = result["similar_pairs"][0]
    assert {top["a"]["class_name"], top["b"]["class_name"]} == {"cat", "dog"}
    assert top["a"]["class_index"] < top["b"]["class_index"]


def test_near_duplicates_ignore_texts_of_one_class_and_the_threshold_is_inclusive(store):
    classes = store.classes("cifar10")
    aset, encode = one_text_each(store, "one-class", {"cat": ["same thing", "same thing again"],
                                                      "dog": ["other thing"]})
    encode.set("same thing", basis(10))
    encode.set("same thing again", basis(10))
    encode.set("other thing", basis(10) + 0.5 * basis(11))
    cos = float(F.normalize(basis(10) + 0.5 * basis(11), dim=0)[10])
    result = checks.embedding_checks(aset, classes, encode, threshold=cos - 1e-6, top=10)
    assert result["near_duplicate_count"] == 2  # cat's two texts with dog's one; not cat with cat
    assert {p["b"]["text"] for p in result["near_duplicates"]} | {p["a"]["text"] for p in result["near_duplicates"]} \
        == {"same thing", "same thing again", "other thing"}
    assert checks.embedding_checks(aset, classes, encode, threshold=cos + 1e-3, top=10)["near_duplicate_count"] == 0


def test_near_duplicate_search_is_chunk_independent_and_keeps_the_best(store):
    texts = {c: [f"{c} number {i}" for i in range(30)] for c in CIFAR}
    aset = audit_set(store, write_set(store, "many", texts))
    generator = torch.Generator().manual_seed(1)
    shared = torch.randn(32, generator=generator)
    encode = Planted()
    for name in CIFAR:
        for i in range(30):
            noise = torch.randn(32, generator=generator)
            encode.set(f"object number {i}", shared + 0.3 * noise)
    patterns = {c: name_pattern(n) for c, n in enumerate(CIFAR)}
    small = checks._near_duplicates(aset, patterns, encode, 0.0, 5, chunk=7)
    large = checks._near_duplicates(aset, patterns, encode, 0.0, 5, chunk=4096)
    assert small == large
    # masked texts are shared by all classes, so the 30 unique texts are all cross-class: 30*29/2 pairs
    assert small["count"] == 435 and len(small["pairs"]) == 5
    assert [p["cosine"] for p in small["pairs"]] == sorted((p["cosine"] for p in small["pairs"]), reverse=True)


# -- evaluation ----------------------------------------------------------------------------------

def results_file(classes, heads: list[dict]) -> dict:
    return {"format": "promptgen.eval/1", "dataset": classes.dataset,
            "classes": {"count": len(classes), "hash": classes.hash, "names": list(classes.names)},
            "heads": heads}


def head_result(name: str, accuracy: list[float], confusions=(), builder="template", sets=()) -> dict:
    return {"head": name, "images": 100, "top1": sum(accuracy) / len(accuracy), "top5": 1.0,
            "mean_per_class_recall": sum(accuracy) / len(accuracy), "per_class_accuracy": accuracy,
            "support": [10] * len(accuracy), "confusions": [list(c) for c in confusions],
            "info": {"builder": builder, "sources": [{"set": s} for s in sets]}}


def test_evaluation_deltas_against_the_baseline_and_most_confused_pairs():
    from promptgen.classes import load_dataset

    classes = load_dataset("cifar10")
    base = [0.5] * 10
    better = [0.5] * 10
    better[3], better[5] = 0.9, 0.2
    data = results_file(classes, [head_result("photo", base),
                                  head_result("cupl", better, confusions=[(3, 5, 4), (5, 3, 2), (1, 9, 3)])])
    summary = compare.evaluation_summary(data, classes, None, top=5)
    assert summary["baseline"] == "photo"
    cupl = summary["heads"][1]
    assert cupl["per_class_delta"][3] == pytest.approx(0.4) and cupl["per_class_delta"][5] == pytest.approx(-0.3)
    assert (cupl["improved"], cupl["worsened"]) == (1, 1)
    assert [c["class_name"] for c in cupl["most_worsened"]] == ["dog"]
    assert [c["class_name"] for c in cupl["most_improved"]] == ["cat"]
    confused = [({p["a"]["class_name"], p["b"]["class_name"]}, p["images"]) for p in cupl["most_confused"]]
    assert confused == [({"cat", "dog"}, 6), ({"automobile", "truck"}, 3)]
    summary = compare.evaluation_summary(data, classes, "cupl", top=5)
    assert summary["heads"][0]["per_class_delta"][3] == pytest.approx(-0.4)
    with pytest.raises(PromptgenError, match="no head 'nope'"):
        compare.evaluation_summary(data, classes, "nope", top=5)


def test_results_for_another_class_list_are_refused():
    from promptgen.classes import load_dataset

    classes = load_dataset("cifar10")
    other = load_dataset("cifar100")
    data = results_file(other, [head_result("photo", [0.5] * 100)])
    with pytest.raises(PromptgenError, match="another class list") as error:
        compare.evaluation_summary(data, classes, None, top=5)
    assert "100 classes instead of 10" in str(error.value)
    with pytest.raises(PromptgenError, match="not a results file"):
        compare.evaluation_summary({"heads": []}, classes, None, top=5)


def test_evaluate_heads_records_the_confusion_cells():
    from promptgen.clip.evaluate import evaluate_heads
    from promptgen.clip.heads import Head

    generator = torch.Generator().manual_seed(3)
    features = torch.randn(200, 8, generator=generator)
    labels = torch.randint(0, 5, (200,), generator=generator)
    weights = F.normalize(torch.randn(8, 5, generator=generator), dim=0)
    (result,) = evaluate_heads(features, labels, [Head(weights, {"name": "h"})], 5, chunk=33)
    predicted = (F.normalize(features, dim=-1) @ weights).argmax(dim=1)
    expected = {}
    for t, p in zip(labels.tolist(), predicted.tolist()):
        if t != p:
            expected[(t, p)] = expected.get((t, p), 0) + 1
    assert {(t, p): n for t, p, n in result["confusions"]} == expected
    assert sum(n for *_, n in result["confusions"]) == 200 - round(result["top1"] * 200)
    counts = [n for *_, n in result["confusions"]]
    assert counts == sorted(counts, reverse=True)


# -- version diff --------------------------------------------------------------------------------

def test_version_diff_counts_texts_classes_and_manifest_changes(store):
    classes = store.classes("cifar10")
    old_texts = {c: [f"{c} a", f"{c} b"] for c in CIFAR if c != "ship"}
    new_texts = {c: [f"{c} a", f"{c} b"] for c in CIFAR if c != "truck"}
    new_texts["cat"] = ["cat a", "cat c", "cat d"]
    write_set(store, "diff", old_texts, manifest={"model": {"model": "gpt-4o-mini"}})
    write_set(store, "diff", new_texts, manifest={"model": {"model": "gpt-4o"}})
    old, new = audit_set(store, "cifar10/diff@v1"), audit_set(store, "cifar10/diff@v2")
    diff = compare.version_diff(new, old, classes, top=10)
    assert [c["class_name"] for c in diff["classes_added"]] == ["ship"]
    assert [c["class_name"] for c in diff["classes_removed"]] == ["truck"]
    cat = next(c for c in diff["per_class"] if c["class_name"] == "cat")
    assert (cat["added"], cat["removed"], cat["kept"]) == (2, 1, 1)
    assert diff["texts_added"] == 2 + 2 and diff["texts_removed"] == 1 + 2 and diff["classes_changed"] == 3
    assert {"field": "model.model", "old": "gpt-4o-mini", "new": "gpt-4o"} in diff["manifest_changes"]
    evaluation = {"heads": [{"head": "old", "builder": "cupl", "sets": ["cifar10/diff@v1"], "top1": 0.5,
                             "per_class_accuracy": [0.5] * 10},
                            {"head": "new", "builder": "cupl", "sets": ["cifar10/diff@v2"], "top1": 0.6,
                             "per_class_accuracy": [0.6] * 9 + [0.4]}]}
    diff = compare.version_diff(new, old, classes, top=10, evaluation=evaluation)
    (accuracy,) = diff["accuracy"]
    assert accuracy["delta_top1"] == pytest.approx(0.1)
    assert accuracy["per_class_delta"][9] == pytest.approx(-0.1)
    assert [c["class_name"] for c in accuracy["most_worsened"]] == ["truck"]


# -- bad input -----------------------------------------------------------------------------------

def test_a_set_of_another_dataset_an_empty_set_and_a_foreign_class_list_are_errors(store):
    write_set(store, "empty", {})
    with pytest.raises(PromptgenError, match="is empty"):
        audit_set(store, "cifar10/empty@v1")
    with pytest.raises(PromptgenError, match="is a set of pets, not of cifar10"):
        checks.load_audit_set(store, SetRef("pets", "dclip-published"), store.classes("cifar10"))
    # a set made for cifar100 but stored under cifar10's name
    other = store.classes("cifar100")
    records = [make_record(class_index=0, class_name="apple", stage="import", kind="sentence", text="red",
                           template=None, sample_index=0, request_key=None, model=None)]
    store.write_version("cifar10", "foreign", records, {"stage": "import", "text_kind": "sentence",
                                                        "classes": {"count": 100, "hash": other.hash}})
    with pytest.raises(PromptgenError, match="another class list"):
        audit_set(store, "cifar10/foreign@v1")


def test_run_audit_builds_one_document_whose_totals_add_up(store):
    texts = plain()
    texts["cat"] = ["a cat chasing a bird", "a cat near a dog", "a cat"]
    ref = write_set(store, "doc", texts)
    second = write_set(store, "doc2", {**plain(), "frog": ["a frog on a ship"]})
    classes = store.classes("cifar10")
    import open_clip

    text_model = TextModel(Planted(), checks.token_counter(open_clip.get_tokenizer("ViT-B-32")), 77)
    audit = run_audit(store, classes, [SetRef.parse(ref), SetRef.parse(second)], text_model, options=AuditOptions(top=5))
    assert [s["ref"] for s in audit["sets"]] == [ref, second]
    assert [s["summary"]["leaks"] for s in audit["sets"]] == [2, 1]
    assert audit["totals"]["leaks"] == 3 and audit["totals"]["records"] == 30 + 28
    assert audit["sets"][0]["leaked_names"] == [{"class_index": 2, "class_name": "bird", "texts": 1},
                                                {"class_index": 5, "class_name": "dog", "texts": 1}]
    json.dumps(audit)  # the document is plain JSON
    with pytest.raises(PromptgenError, match="named twice"):
        run_audit(store, classes, [SetRef.parse(ref), SetRef.parse(ref)], lambda: pytest.fail("loaded a model"))


# -- review findings -----------------------------------------------------------------------------

def test_a_near_duplicate_pair_shows_texts_of_two_different_classes(store):
    """A text cat and dog share is near cat's own variant: the pair shown must be dog's text against
    cat's variant, not cat's copy against cat's variant."""
    classes = store.classes("cifar10")
    aset, encode = one_text_each(store, "shared-near", {"cat": ["has soft fur", "has soft furs"],
                                                        "dog": ["has soft fur"]})
    encode.set("has soft fur", basis(12))
    encode.set("has soft furs", basis(12) + 0.01 * basis(13))
    result = checks.embedding_checks(aset, classes, encode, threshold=0.99, top=10)
    assert result["near_duplicate_count"] == 1
    (pair,) = result["near_duplicates"]
    assert pair["a"]["class_name"] != pair["b"]["class_name"]
    assert {(pair["a"]["class_name"], pair["a"]["text"]), (pair["b"]["class_name"], pair["b"]["text"])} == \
        {("dog", "has soft fur"), ("cat", "has soft furs")}


def test_possessives_name_the_class():
    from promptgen.classes import class_name_matcher, load_dataset

    named = class_name_matcher(load_dataset("cifar10"), plurals=True)
    assert named("a cat with a dog's tail") == {3, 5}
    assert named("two dogs' ears on a cat") == {3, 5}
    assert named("a cat's whiskers") == {3}


def test_synonym_counts_agree_between_the_statistics_and_the_names_section(store):
    classes = store.classes("cifar10")
    texts = {c: [c, c.upper()] for c in CIFAR}  # only the official name, in two spellings
    texts["cat"] = ["cat", "kitty", "Kitty", "puss"]
    aset = audit_set(store, write_set(store, "names", texts, kind="synonym", extra={"source": "llm"}))
    stats = checks.set_statistics(aset, classes, 1)
    summary = checks.synonym_summary(aset, classes, 10)
    assert stats["per_class_counts"][3] == 2 and sum(stats["per_class_counts"]) == 2
    assert len(stats["too_few"]) == summary["classes_without_other_names_count"] == 9


def test_failed_pairs_count_as_failures_and_show_their_classes(store):
    classes = store.classes("cifar10")
    records = []
    for c, other, attribute in ((3, 5, "ears"), (5, 3, "ears")):
        records.append(make_record(class_index=c, class_name=CIFAR[c], stage="differentiate", kind="sentence",
                                   text=f"a {CIFAR[c]} with some ears", template="fudd", sample_index=0,
                                   request_key=None, model=None, pair="3_5", pair_classes=[3, 5],
                                   other_class_index=other, other_class_name=CIFAR[other], attribute=attribute))
    store.write_version("cifar10", "differential", records, {
        "stage": "differentiate", "text_kind": "sentence", "classes": {"count": 10, "hash": classes.hash},
        "failed_pairs": [{"pair": "0_2", "classes": [0, 2], "reason": "no usable attribute"}]}, classes)
    aset = audit_set(store, "cifar10/differential@v1")
    assert aset.is_differential
    assert checks.set_statistics(aset, classes, 1)["failures"] == 1
    summary = checks.differential_summary(aset, classes, 10)
    assert summary["pairs_answered"] == 1 and summary["pairs_failed"] == 1
    assert summary["failed_pairs"] == [{"pair": "0_2", "reason": "no usable attribute", "classes": [
        {"class_index": 0, "class_name": "airplane"}, {"class_index": 2, "class_name": "bird"}]}]


def test_against_the_audited_version_names_the_other_versions(store):
    ref = write_set(store, "versions", plain())
    write_set(store, "versions", plain(4))
    classes = store.classes("cifar10")
    with pytest.raises(PromptgenError) as error:
        run_audit(store, classes, [SetRef.parse(ref)], lambda: pytest.fail("loaded a model"),
                  against=[SetRef.parse(ref)])
    assert "version under audit" in error.value.message and "versions: v2" in error.value.hint


def test_manifest_diff_keeps_non_ascii_and_escapes_markup(store):
    from promptgen.audit.report import render_html, render_markdown

    write_set(store, "m", plain(), manifest={"model": {"model": "café & <x>"}})
    write_set(store, "m", plain(), manifest={"model": {"model": "naïve"}})
    classes = store.classes("cifar10")
    import open_clip

    audit = run_audit(store, classes, [SetRef.parse("cifar10/m@v2")],
                      TextModel(None, checks.token_counter(open_clip.get_tokenizer("ViT-B-32")), 77),
                      against=[SetRef.parse("cifar10/m@v1")])
    html, markdown = render_html(audit), render_markdown(audit)
    assert "&#34;café &amp; &lt;x&gt;&#34;" in html and "&#34;naïve&#34;" in html and "\\u00e9" not in html
    assert "café &amp; &lt;x&gt;" in markdown and "<x>" not in markdown


def test_per_class_tokens_and_cost_come_from_the_request_journal(store):
    ref = write_set(store, "journalled", plain())
    aset = audit_set(store, ref)
    assert checks.per_class_usage(aset, 10) is None  # an import has no journal
    lines = [{"key": "a", "class_index": 3, "response": {"usage": {"prompt_tokens": 10, "completion_tokens": 5},
                                                         "cost_usd": 0.5}},
             {"key": "b", "class_index": 3, "response": {"usage": {"prompt_tokens": 1, "completion_tokens": 2},
                                                         "cost_usd": 0.25}},
             {"key": "c", "class_index": 4, "response": None, "error": "timeout"},
             {"key": "d", "class_index": 6, "response": {"usage": {"prompt_tokens": 7}, "cost_usd": None}}]
    aset.info.journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn', encoding="utf-8")
    usage = checks.per_class_usage(aset, 10)
    assert usage["prompt_tokens"][3] == 11 and usage["completion_tokens"][3] == 7 and usage["cost_usd"][3] == 0.75
    assert usage["prompt_tokens"][4] == 0 and usage["cost_usd"][4] == 0.0
    assert usage["prompt_tokens"][6] == 7 and usage["cost_usd"][6] is None  # unknown price stays unknown
