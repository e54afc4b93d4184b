"""Soak: 10,000 describe requests at concurrency 64 against the fake server with 30 % injected faults.

    python benchmarks/soak.py [--requests 10000] [--concurrency 64] [--chaos 0.3] [--latency 0.05]
                              [--out benchmarks/results/soak.json]

Faults, drawn per request by a seeded generator: 429 with Retry-After, 500, dropped connections,
answers slower than the client's timeout, and cut-off JSON bodies. The job is `promptgen describe`
(DCLIP template: one request per class) over N made-up class names, as a fresh CLI process whose
RSS is sampled from /proc. Checked at the end:
  lost        classes with neither records nor a recorded failure (must be 0)
  duplicates  records with the same id, and answers journalled twice (must be 0)
  paid twice  requests the server delivered a good answer to more than once (must be 0)
  delivered   good answers the server sent == answers the run journalled
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def start_server(latency: float, chaos: float, slow_delay: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "promptgen.testing.fake_server", "--port", "0",
                                "--latency", str(latency), "--chaos", str(chaos), "--slow-delay", str(slow_delay)],
                               stdout=subprocess.PIPE, text=True)
    url = process.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
    return process, url


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--chaos", type=float, default=0.3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = parser.parse_args()

    server, url = start_server(args.latency, args.chaos, slow_delay=args.timeout + 1.5)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    names = [f"widget model {i:05d}" for i in range(args.requests)]
    (work / "classes.txt").write_text("\n".join(names) + "\n")
    command = [sys.executable, "-m", "promptgen", "describe", "widgets", "--classes", str(work / "classes.txt"),
               "--style", "dclip", "--model", "openai/test", "--api-base", url, "--concurrency",
               str(args.concurrency), "--timeout", str(args.timeout), "--backoff", "0.05", "--max-attempts", "8",
               "--no-progress", "--root", str(work)]
    started = time.perf_counter()
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    while client.poll() is None:
        value = rss_mib(client.pid)
        if value is not None:
            samples.append((time.perf_counter() - started, value))
        time.sleep(0.25)
    wall = time.perf_counter() - started
    stdout, stderr = client.communicate()
    stats = json.loads(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/_stats").read())
    server.terminate()
    server.wait()

    set_dir = work / "prompts" / "widgets" / "dclip"
    manifest = json.loads((set_dir / "v1.manifest.json").read_text())
    records = [json.loads(line) for line in (set_dir / "v1.jsonl").read_text().splitlines()]
    journal = [json.loads(line) for line in (set_dir / "v1.requests.jsonl").read_text().splitlines()]
    answered = [e for e in journal if e["response"] is not None]
    stored = {r["class_index"] for r in records}
    failed = {f["class_index"] for f in manifest["failures"]}
    quarters = [max((v for t, v in samples if q * wall / 4 <= t < (q + 1) * wall / 4), default=None)
                for q in range(4)]
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "chaos": args.chaos, "latency_s": args.latency,
        "client_timeout_s": args.timeout, "exit_code": client.returncode,
        "http_requests": stats["requests"], "outcomes": stats["outcomes"],
        "fault_share": round(1 - stats["outcomes"].get("ok", 0) / max(1, stats["requests"]), 4),
        "stored_classes": len(stored), "recorded_failures": len(failed),
        "lost": args.requests - len(stored | failed),
        "duplicate_records": len(records) - len({r["id"] for r in records}),
        "duplicate_journal_answers": len(answered) - len({e["key"] for e in answered}),
        "delivered": stats["delivered"], "journalled_answers": len(answered),
        "paid_twice": stats["delivered_max"] > 1,
        "wall_s": round(wall, 2), "requests_per_s": round(args.requests / wall, 1),
        "peak_rss_mib": round(max(v for _, v in samples), 1) if samples else None,
        "rss_by_quarter_mib": [round(v, 1) if v is not None else None for v in quarters],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| requests | concurrency | faults injected | HTTP requests | stored | recorded failures | lost | "
          "duplicates | paid twice | delivered = journalled | wall s | req/s | peak RSS MiB | RSS by quarter MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.requests:,} | {args.concurrency} | {100 * result['fault_share']:.1f} % "
          f"({', '.join(f'{k} {v}' for k, v in sorted(stats['outcomes'].items()) if k != 'ok')}) | "
          f"{stats['requests']:,} | {len(stored):,} | {len(failed)} | {result['lost']} | "
          f"{result['duplicate_records'] + result['duplicate_journal_answers']} | {'yes' if result['paid_twice'] else 'no'} | "
          f"{stats['delivered']:,} = {len(answered):,} | {result['wall_s']} | {result['requests_per_s']} | "
          f"{result['peak_rss_mib']} | {' / '.join(str(v) for v in result['rss_by_quarter_mib'])} |")
    print(f"wrote {args.out}")
    if client.returncode not in (0, 3):
        print(stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
