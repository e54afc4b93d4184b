"""`promptgen.load_head`, `promptgen.classify` and `Head.as_linear`: the head files as other code
uses them, against heads whose answers are known; `import promptgen` stays free of torch."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import promptgen
from promptgen.clip.head_files import save_head
from promptgen.clip.registry import Head
from promptgen.errors import PromptgenError

REPO = Path(__file__).resolve().parents[1]
NAMES = ["heron", "otter", "maple", "kayak"]
SOURCES = [{"name": "toy/cupl@v2", "kind": "set", "texts": 12, "set": "toy/cupl@v2", "version": 2,
            "records_sha256": "sha256:" + "ab" * 32},
           {"name": "templates:photo", "kind": "templates", "texts": 4, "templates": "photo"}]
MODEL = {"arch": "promptgen-tiny", "weights": "random:seed=0", "key": "k1", "embed_dim": 8}


def planted_head() -> Head:
    """D = 8, C = 4, column c the unit vector e_c: a feature's score for class c is its c-th
    component over its norm, so the ranking is that of the first four components."""
    info = {"format": "promptgen.head/1", "name": "planted", "builder": "pooled", "created": "2000-01-01T00:00:00Z",
            "promptgen_version": promptgen.__version__, "shape": [8, 4],
            "classes": {"dataset": "toy", "count": 4, "hash": "sha256:toy", "names": NAMES},
            "model": MODEL, "sources": SOURCES, "options": {"pool": "mean"}, "prompt_counts": [4, 4, 4, 4]}
    return Head(torch.eye(8)[:, :4].contiguous(), info)


def expected_probabilities(vector: list[float]) -> list[float]:
    """softmax(100 * v / |v| @ W) for the planted head, computed without torch."""
    norm = math.sqrt(sum(x * x for x in vector))
    logits = [100 * vector[c] / norm for c in range(4)]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


# one image per row, components chosen so that the probabilities are not all 0 or 1
FEATURES = [[0.50, 0.52, 0.49, 0.47, 0.1, 0.0, 0.2, 0.0],
            [0.30, 0.28, 0.29, 0.33, 0.0, 0.4, 0.0, 0.1]]


def test_load_head_gives_weights_class_names_and_provenance(tmp_path):
    head = planted_head()
    save_head(head, tmp_path / "planted.safetensors")
    save_head(head, tmp_path / "planted-pt.pt")
    st = promptgen.load_head(str(tmp_path / "planted.safetensors"))  # a str path is fine
    pt = promptgen.load_head(tmp_path / "planted-pt.pt")
    assert st.weights.dtype == torch.float32 and torch.equal(st.weights, head.weights)
    assert st.class_names == NAMES and pt.class_names == NAMES
    provenance = st.provenance
    assert provenance["builder"] == "pooled" and provenance["dataset"] == "toy"
    assert provenance["classes_hash"] == "sha256:toy" and provenance["model"] == MODEL
    assert provenance["sets"] == [{"set": "toy/cupl@v2", "version": 2, "records_sha256": "sha256:" + "ab" * 32}]
    assert provenance["sources"] == SOURCES and provenance["options"] == {"pool": "mean"}
    assert provenance["file"] == str(tmp_path / "planted.safetensors")
    sidecar = (tmp_path / "planted.json").read_bytes()
    assert provenance["sidecar_sha256"] == "sha256:" + hashlib.sha256(sidecar).hexdigest()
    assert pt.provenance["sidecar_sha256"] is None  # a .pt records no hash of its sidecar
    assert {k: v for k, v in pt.provenance.items() if k not in ("file", "sidecar_sha256")} == \
        {k: v for k, v in provenance.items() if k not in ("file", "sidecar_sha256")}


def test_a_bare_tensor_has_no_class_names_and_only_its_file(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(torch.randn(8, 4), path)
    head = promptgen.load_head(path)
    assert head.class_names is None
    assert head.provenance["file"] == str(path)
    assert {v for k, v in head.provenance.items() if k != "file"} == {None}
    top = promptgen.classify(torch.tensor(FEATURES[0]), path, k=2)  # a path works as the head
    assert top.names == [f"class {c}" for c in top.indices.tolist()]


def test_as_linear_is_v_at_w_without_the_logit_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    head = Head(torch.randn(16, 5, generator=generator), {})
    linear = head.as_linear()
    assert isinstance(linear, torch.nn.Linear) and linear.bias is None
    assert (linear.in_features, linear.out_features) == (16, 5)
    assert torch.equal(linear.weight.detach(), head.weights.T)
    v = torch.nn.functional.normalize(torch.randn(7, 16, generator=generator), dim=-1)
    with torch.no_grad():
        out = linear(v)
    assert torch.allclose(out, v @ head.weights, atol=1e-6)
    assert torch.allclose(100 * out, head.logits(v), atol=1e-4)  # promptgen's logits: the scale is not in it
    with torch.no_grad():
        linear.weight.zero_()
    assert head.weights.abs().sum() > 0  # the layer holds a copy


def test_classify_ranks_and_scores_a_batch_as_the_formula_says() -> None:
    head = planted_head()
    top = promptgen.classify(torch.tensor(FEATURES), head, k=3)
    assert top.scores.shape == (2, 3) and top.indices.shape == (2, 3)
    assert top.names == [["otter", "heron", "maple"], ["kayak", "heron", "maple"]]
    for row, vector in enumerate(FEATURES):
        expected = expected_probabilities(vector)
        ranked = sorted(range(4), key=lambda c: -expected[c])[:3]
        assert top.indices[row].tolist() == ranked
        assert top.scores[row].tolist() == pytest.approx([expected[c] for c in ranked], rel=1e-4)
    assert 0.2 < float(top.scores[0, 0]) < 0.95  # a real distribution, not a one-hot


def test_classify_one_vector_numpy_input_and_k_beyond_the_classes() -> None:
    head = planted_head()
    single = promptgen.classify(np.array(FEATURES[1], dtype=np.float64), head, k=2)
    assert single.names == ["kayak", "heron"] and single.scores.shape == (2,)
    batch = promptgen.classify(torch.tensor(FEATURES), head, k=2)
    assert torch.allclose(single.scores, batch.scores[1]) and torch.equal(single.indices, batch.indices[1])
    scaled = promptgen.classify(np.array(FEATURES) * 37.0, head, k=2)  # features are normalised first
    assert scaled.names == batch.names and torch.allclose(scaled.scores, batch.scores)
    every = promptgen.classify(torch.tensor(FEATURES[0]), head, k=50)
    assert sorted(every.names) == sorted(NAMES) and float(every.scores.sum()) == pytest.approx(1.0)
    from_tensor = promptgen.classify(torch.tensor(FEATURES[0]), head.weights, k=1)  # make_head's tensor
    assert from_tensor.names == ["class 1"]


def test_classify_refuses_mismatched_dimensions_and_bad_k() -> None:
    head = planted_head()
    with pytest.raises(PromptgenError) as error:
        promptgen.classify(torch.randn(3, 16), head)
    assert "dimension 16, the head 8" in error.value.message and "CLIP model" in error.value.hint
    with pytest.raises(PromptgenError, match="look transposed"):
        promptgen.classify(torch.randn(8, 5), head)
    with pytest.raises(PromptgenError, match=r"shape \(2, 3, 8\)"):
        promptgen.classify(torch.randn(2, 3, 8), head)
    for k in (0, -1, 2.5):
        with pytest.raises(PromptgenError, match="positive integer"):
            promptgen.classify(torch.randn(8), head, k=k)


def test_the_readme_example_runs(tmp_path, monkeypatch) -> None:
    """The README's load_head / classify / as_linear example, run on a planted head."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Heads in your own code", 1)[1]
    block = re.search(r"\n\n((?:    .*\n|\n)+)", section).group(1)
    code = "\n".join(line[4:] for line in block.splitlines())
    assert "promptgen.load_head(" in code and "promptgen.classify(" in code and ".as_linear()" in code
    monkeypatch.chdir(tmp_path)
    save_head(planted_head(), tmp_path / "dclip.safetensors")
    namespace = {"image_features": torch.tensor(FEATURES)}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["top"].names[0][0] == "otter"
    assert torch.allclose(namespace["logits"], 100 * torch.nn.functional.normalize(torch.tensor(FEATURES), dim=-1)
                          @ planted_head().weights, atol=1e-4)


@pytest.mark.subprocess
def test_import_promptgen_does_not_import_torch() -> None:
    script = ("import sys, json\nimport promptgen\nbefore = sorted(m for m in ('torch', 'numpy', 'safetensors') "
              "if m in sys.modules)\nfrom promptgen import classify, load_head\n"
              "print(json.dumps([before, 'torch' in sys.modules, sorted(promptgen.__all__)]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    before, after, exported = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == [] and after is True  # torch comes with the first use, not with the import
    assert exported == ["__version__", "classify", "load_head"]


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'load_heads'"):
        promptgen.load_heads  # noqa: B018
