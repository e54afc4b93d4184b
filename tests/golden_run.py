"""The golden run: tests/golden/pipeline.toml (every stage, builder and output kind on cifar10,
the fake LLM server, the tiny random CLIP model) plus the exports, in a fresh root.

`run_golden(root)` returns every file the run wrote, normalised: the root's and the checkout's
paths and the times a run stamps are replaced by placeholders, and head tensors are shown as their
values (torch.save's bytes are not the output: the numbers are). Nothing else is touched, so a refactor
that changes one byte of a record, a manifest, a head or a result fails `tests/test_golden.py`.

    python -m tests.golden_run --write   # rewrite tests/golden/out/ (only for an intended change)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

CHECKOUT = Path(__file__).resolve().parent.parent
GOLDEN = CHECKOUT / "tests" / "golden"
OUT = GOLDEN / "out"
# a run's own times and durations; everything else must match byte for byte
TIME_KEYS = ("seconds", "wall_s", "elapsed_s", "latency_s", "duration_s", "pid")
FIXED_TIME = "2000-01-01T00:00:00"
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
# a fixed port: the server's URL is part of every cache key, so of every record's request_key
GOLDEN_PORT = 47613
# a run's identity (run ids, pids) and its command lines: kept to test that they load, not compared
NOT_COMPARED = ("logs/runs.jsonl", "pipelines/golden.json")
CUPL_FILE = {"airplane": ["An airplane has wings.", "An airplane flies.", "An airplane flies."],
             "cat": ["A cat has whiskers."], "ship": ["A ship floats on water."]}


def _inputs(workdir: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    features = workdir / "features.npz"
    np.savez(features, features=rng.normal(size=(60, 64)).astype("float32"), labels=np.arange(60) % 10)
    cupl_file = workdir / "cupl.json"
    cupl_file.write_text(json.dumps(CUPL_FILE, indent=1))
    return {"features": str(features), "cupl_file": str(cupl_file)}


def run_golden(root: Path) -> dict[str, str]:
    """Run the golden job in `root` (created empty) and return {relative path: normalised text}."""
    from promptgen.cli import main
    from promptgen.testing.fake_server import FakeLLMServer
    from click.testing import CliRunner

    workdir = root.parent / (root.name + "-inputs")
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(workdir)
    with FakeLLMServer(port=GOLDEN_PORT) as server:
        toml = (GOLDEN / "pipeline.toml").read_text().format(api_base=server.url, **inputs)
        pipeline = workdir / "golden.toml"
        pipeline.write_text(toml)

        def cli(*args: str) -> str:
            result = CliRunner().invoke(main, [*args, "--root", str(root)], catch_exceptions=False)
            if result.exit_code != 0:
                raise AssertionError(f"promptgen {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
            return result.output

        cli("run", str(pipeline))
        for fmt, set_name in (("cupl", "cupl-base"), ("dclip", "dclip"), ("fudd", "differential"),
                              ("clip-benchmark", "cupl-base")):
            cli("export", f"cifar10/{set_name}", "--format", fmt, "-o", str(root / "exports" / f"{set_name}.{fmt}.json"))
    # the checkout's path is in manifests (a template's file): a clone elsewhere writes the same
    return _collect(root, {str(root): "{root}", str(workdir): "{inputs}", str(CHECKOUT): "{checkout}"})


def _collect(root: Path, replace: dict[str, str]) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or relative.startswith("cache/") or path.name.endswith(".lock"):
            continue
        if path.suffix == ".pt":
            import torch

            tensor = torch.load(path, map_location="cpu", weights_only=True)
            text = json.dumps({"shape": list(tensor.shape), "dtype": str(tensor.dtype),
                               "values": [float(x).hex() for x in tensor.flatten().tolist()]}) + "\n"
        elif path.suffix == ".png":  # matplotlib's bytes vary with its version: the plot's presence is the output
            text = "<png>\n"
        else:
            text = path.read_text(encoding="utf-8")
        for old, new in sorted(replace.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(old, new)
        files[relative] = _normalise(relative, text)
    return files


def _normalise(relative: str, text: str) -> str:
    """Times out: every ISO timestamp becomes FIXED_TIME (in its own format, so the files still
    load), numbers under TIME_KEYS become 0."""
    text = _TIMESTAMP.sub(lambda m: FIXED_TIME + re.sub(r"\d", "0", m.group(1) or "") + (m.group(2) or ""), text)
    if relative.endswith(".json"):
        return json.dumps(_strip_times(json.loads(text)), indent=1, ensure_ascii=False, sort_keys=False) + "\n"
    if relative.endswith(".jsonl"):
        lines = [json.dumps(_strip_times(json.loads(line)), ensure_ascii=False) + "\n"
                 for line in text.splitlines() if line.strip()]
        # a request journal is written in the order answers arrive, which concurrency makes vary
        return "".join(sorted(lines) if relative.endswith(".requests.jsonl") else lines)
    return text


def _strip_times(value: object) -> object:
    if isinstance(value, dict):
        return {k: (0 if k in TIME_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool) else _strip_times(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def write_golden() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        files = run_golden(Path(tmp) / "root")
    shutil.rmtree(OUT, ignore_errors=True)
    for relative, text in files.items():
        (OUT / relative).parent.mkdir(parents=True, exist_ok=True)
        (OUT / relative).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files under {OUT}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite tests/golden/out/")
    sys.exit(write_golden() if parser.parse_args().write else parser.print_help() or 0)
