"""Describe-stage throughput against the fake LLM server with 200 ms latency, in one run.

    python benchmarks/llm_throughput.py [--latency 0.2] [--out benchmarks/results/llm_throughput.json]

Scenarios (CuPL template: 5 questions x n=10 per class, ImageNet class names):
  sequential   concurrency 1,   100 classes  (500 requests)  -- the baseline
  concurrent   concurrency 32, 1000 classes (5000 requests)
  warm         the same 1000-class job again: every answer from the cache
  warm-cli     the warm job as a fresh `promptgen describe` process (start-up included)
  litellm      concurrency 32, 1000 classes, forcing the litellm transport (cold cache)

The server runs in its own process so that it does not share the client's interpreter.
Throughput is requests per second of wall time of the whole stage (planning, HTTP, parsing,
journal, cache and records). Ratios are against the sequential run of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from promptgen.classes import load_dataset  # noqa: E402
from promptgen.llm.cache import LLMCache  # noqa: E402
from promptgen.llm.client import LLMClient, import_litellm  # noqa: E402
from promptgen.stages.describe import DescribeJob, run_describe  # noqa: E402
from promptgen.store import Store  # noqa: E402
from promptgen.templates import load_template  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "promptgen.testing.fake_server", "--port", "0",
                                "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    url = process.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
    return process, url


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU seconds of a process (this one when pid is None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_PID: int | None = None


def server_requests(url: str) -> int:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/_stats") as response:
        return json.load(response)["requests"]


def run(name: str, dataset: str, class_file: Path, root: Path, url: str, concurrency: int,
        transport: str = "auto") -> dict:
    store = Store(root)
    classes = store.classes(dataset, class_file)
    client = LLMClient("openai/test", api_base=url, cache=LLMCache(root / "cache" / "llm"), concurrency=concurrency,
                       transport=transport, progress=False)
    job = DescribeJob(classes, load_template("cupl"), "cupl")
    before = server_requests(url)
    cpu_client, cpu_server = cpu_seconds(), cpu_seconds(SERVER_PID)
    started = time.perf_counter()
    result = run_describe(job, client, store)
    seconds = time.perf_counter() - started
    cpu_client, cpu_server = cpu_seconds() - cpu_client, cpu_seconds(SERVER_PID) - cpu_server
    sent = server_requests(url) - before
    requests = result.manifest["counts"]["requests"]
    row = {"scenario": name, "classes": len(classes), "concurrency": concurrency, "transport": client.transport,
           "requests": requests, "sent_to_server": sent, "records": result.manifest["counts"]["records"],
           "seconds": round(seconds, 2), "requests_per_s": round(requests / seconds, 1),
           "client_cpu_ms_per_request": round(1000 * cpu_client / requests, 2),
           "server_cpu_ms_per_request": round(1000 * cpu_server / requests, 2)}
    print(f"  {name}: {row['requests']} requests in {row['seconds']} s", file=sys.stderr, flush=True)
    return row


def run_cli(name: str, dataset: str, root: Path, url: str, concurrency: int) -> dict:
    before = server_requests(url)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "promptgen", "describe", dataset, "--model", "openai/test", "--api-base",
                    url, "--concurrency", str(concurrency), "--no-progress", "--root", str(root)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return {"scenario": name, "classes": 1000, "concurrency": concurrency, "transport": "auto",
            "requests": 5000, "sent_to_server": server_requests(url) - before, "records": None,
            "seconds": round(seconds, 2), "requests_per_s": round(5000 / seconds, 1),
            "client_cpu_ms_per_request": None, "server_cpu_ms_per_request": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llm_throughput.json")
    parser.add_argument("--skip-litellm", action="store_true", help="leave out the litellm-transport run")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work",
                        help="where the runs' prompts/ and cache/ go (removed afterwards); like a user's project "
                             "folder. This machine's /tmp creates files ~7x slower than its project disk.")
    args = parser.parse_args()

    names = load_dataset("imagenet").names
    started = time.perf_counter()
    import_litellm()  # once, before any timing: every scenario then starts from the same state
    litellm_import_s = round(time.perf_counter() - started, 2)
    server, url = start_server(args.latency)
    global SERVER_PID
    SERVER_PID = server.pid
    rows = []
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            tmp = Path(tmp)
            small, large = tmp / "bench100.json", tmp / "bench1000.json"
            small.write_text(json.dumps(list(names[:100])))
            large.write_text(json.dumps(list(names)))
            rows.append(run("sequential", "bench100", small, tmp / "a", url, 1))
            rows.append(run("concurrent", "bench1000", large, tmp / "b", url, 32))
            rows.append(run("warm", "bench1000", large, tmp / "b", url, 32))
            rows.append(run_cli("warm-cli", "bench1000", tmp / "b", url, 32))
            if not args.skip_litellm:
                rows.append(run("litellm", "bench1000", large, tmp / "c", url, 32, transport="litellm"))
    finally:
        server.terminate()
        server.wait()

    baseline = rows[0]["requests_per_s"]
    for row in rows:
        row["x_sequential"] = round(row["requests_per_s"] / baseline, 1)
    header = f"{'scenario':<11} {'classes':>7} {'conc':>4} {'transport':<9} {'requests':>8} {'sent':>5} " \
             f"{'seconds':>8} {'req/s':>7} {'x seq':>6} {'client ms/req':>13} {'server ms/req':>13}"
    print(header)
    for r in rows:
        print(f"{r['scenario']:<11} {r['classes']:>7} {r['concurrency']:>4} {r['transport']:<9} {r['requests']:>8} "
              f"{r['sent_to_server']:>5} {r['seconds']:>8.2f} {r['requests_per_s']:>7.1f} {r['x_sequential']:>6.1f} "
              f"{str(r['client_cpu_ms_per_request'] or '-'):>13} {str(r['server_cpu_ms_per_request'] or '-'):>13}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"litellm import (outside the timings; inside warm-cli): {litellm_import_s} s")
    args.out.write_text(json.dumps({"latency_s": args.latency, "litellm_import_s": litellm_import_s,
                                    "workdir": str(args.workdir),
                                    "machine": platform.platform(),
                                    "cpus": os.cpu_count(), "python": platform.python_version(), "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
