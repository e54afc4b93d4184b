"""`promptgen --help` start-up time: this checkout against a baseline revision, measured in turns.

    .venv/bin/python benchmarks/cli_startup.py [--baseline REV] [--runs N]

The baseline is checked out into a temporary git worktree. Each turn runs `python -m promptgen
--help` once from each tree (the tree's own promptgen first on sys.path, the same interpreter and
packages), alternating so that load on a shared machine falls on both alike. Prints a table and
writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def one_run(tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "promptgen", "--help"], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="b42ef9d", help="git revision to compare with (default: before issue 15)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(baseline), args.baseline], cwd=CHECKOUT,
                       check=True)
        try:
            trees = {"baseline": baseline, "this checkout": CHECKOUT}
            for tree in trees.values():
                one_run(tree)  # warm the file cache and the bytecode of both
            times: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    times[name].append(one_run(tree))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=CHECKOUT, check=False)
    rows = {name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4), "runs": len(t)}
            for name, t in times.items()}
    ratio = rows["this checkout"]["median_s"] / rows["baseline"]["median_s"]
    print("| tree | median s | min s | runs |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['runs']} |")
    print(f"this checkout / baseline ({args.baseline}), medians: {ratio:.2f}")
    out = CHECKOUT / "benchmarks" / "results" / "cli_startup.json"
    out.write_text(json.dumps({"baseline": args.baseline, "rows": rows, "ratio": round(ratio, 3)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
