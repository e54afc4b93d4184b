"""The run log: every command that writes or spends appends a start and an end line to
`ROOT/logs/runs.jsonl`, with the set versions it wrote (records, requests sent, cost of this run).
`promptgen runs` reads it back; a start with no end is a run still going or one that was killed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from promptgen.errors import DISK_ERRNOS, ExitCode, PromptgenError
from promptgen.messages import shorten
from promptgen.redact import redact, redacted_command

__all__ = ["logged", "note_version", "note_reserved", "note_spend", "listen", "read_runs", "log_path", "summarise"]

# One frame per command running in this process: a pipeline (`promptgen run`) runs the stage
# commands inside itself, and each is logged as its own run with the pipeline run as parent.
# A frame holds the versions its command finished and what its LLM calls sent and cost.
_frames: list[dict] = []
_listeners: list[Callable[[dict], None]] = []


def log_path(root: Path) -> Path:
    return root / "logs" / "runs.jsonl"


def note_version(info: Any) -> None:
    """Called by the store for every version it finishes."""
    manifest, counts = info.manifest, info.manifest.get("counts") or {}
    entry = {
        "dataset": info.dataset, "set": info.set, "version": info.version, "ref": str(info.ref),
        "stage": manifest.get("stage"), "status": manifest.get("status"), "records": counts.get("records"),
        "requests_sent": counts.get("requests_sent_this_run", (manifest.get("pairs") or {}).get("queried", 0)),
        "cache_hits": counts.get("cache_hits_this_run", 0),
        "cost_usd": manifest.get("cost_usd_this_run", 0.0 if not manifest.get("network") else manifest.get("cost_usd")),
        "failures": len(manifest.get("failures") or []) + len(manifest.get("failed_pairs") or []),
        "records_sha256": manifest.get("records_sha256"), **({"batches": manifest["batches"]}
                                                             if manifest.get("batches") else {})}
    if _frames:
        _frames[-1]["outputs"].append(entry)
    for listener in list(_listeners):
        listener(entry)


def note_spend(sent: int, cost_usd: float | None) -> None:
    """Called by the LLM client when a batch of requests ends, interrupted or not."""
    if not _frames:
        return
    spend = _frames[-1]["spend"]
    spend["requests_sent"] = spend.get("requests_sent", 0) + sent
    known = spend.get("cost_usd", 0.0)
    spend["cost_usd"] = None if known is None or cost_usd is None else known + cost_usd


def note_reserved(info: Any) -> None:
    """Called by the store the moment it reserves a version number (before anything is asked)."""
    for listener in list(_listeners):
        try:
            listener({"event": "reserved", "dataset": info.dataset, "set": info.set, "version": info.version})
        except Exception as exc:  # a listener must never break a reservation (the version is already there)
            import logging

            logging.getLogger(__name__).warning("could not note the reservation of %s@v%s: %s", info.set,
                                                info.version, exc)


@contextlib.contextmanager
def listen(callback: Callable[[dict], None]):
    """Call `callback` with every version finished inside the block, and with {"event": "reserved",
    ...} when one is reserved (the pipeline learns what a step writes this way)."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def _append(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)  # one write per line: concurrent runs do not interleave lines
    finally:
        os.close(descriptor)


def logged(command: str, *, aggregate: bool = False, unless: Callable[[dict], bool] | None = None) -> Callable:
    """Wrap a click callback so that its run is logged under the root it was given. `aggregate`:
    the command runs others (a pipeline), whose runs count in the totals instead of its own;
    `unless(kwargs)`: not logged at all (a pipeline's --plan)."""
    def decorator(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from promptgen.paths import resolve_root

            if unless is not None and unless(kwargs):
                return function(*args, **kwargs)

            try:
                path = log_path(resolve_root(kwargs.get("root")))
            except PromptgenError:
                return function(*args, **kwargs)
            run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            started = time.time()
            arguments = shorten(redacted_command(), 500, one_line=False)
            parent = _frames[-1]["run"] if _frames else None
            start = {"event": "start", "run": run_id, "time": _iso(started), "command": command,
                     "args": arguments, "pid": os.getpid(), **({"aggregate": True} if aggregate else {})}
            try:
                _append(path, {**start, "parent": parent} if parent else start)
            except OSError:
                return function(*args, **kwargs)  # a read-only root: the command's own error says more
            frame = {"run": run_id, "outputs": [], "spend": {}, "steps": 0, "steps_sent": 0, "steps_cost": 0.0}
            _frames.append(frame)
            status, exit_code, error = "ok", 0, None
            try:
                return function(*args, **kwargs)
            except PromptgenError as exc:
                status, exit_code, error = "error", ExitCode.USAGE, exc.message
                raise
            except SystemExit as exc:
                exit_code = exc.code if isinstance(exc.code, int) else 1
                status = "ok" if exit_code == 0 else "partial" if exit_code == ExitCode.PARTIAL else \
                    "interrupted" if exit_code == ExitCode.INTERRUPTED else "error"
                raise
            except KeyboardInterrupt:
                status, exit_code = "interrupted", ExitCode.INTERRUPTED
                raise
            except OSError as exc:
                status, exit_code = ("not written", ExitCode.NOT_WRITTEN) if exc.errno in DISK_ERRNOS \
                    else ("failed", 1)
                error = f"{type(exc).__name__}: {exc}"
                raise
            except BaseException as exc:
                status, exit_code, error = "failed", 1, f"{type(exc).__name__}: {exc}"
                raise
            finally:
                _frames.remove(frame)
                outputs, spend = frame["outputs"], frame["spend"]
                if spend:  # the LLM client's own count: it includes runs that stopped before writing
                    sent, cost = spend["requests_sent"], spend["cost_usd"]
                else:
                    costs = [o["cost_usd"] for o in outputs]
                    sent = sum(o["requests_sent"] or 0 for o in outputs)
                    cost = None if any(c is None for c in costs) else sum(costs)
                end = {"event": "end", "run": run_id, "time": _iso(time.time()), "command": command,
                       "dataset": kwargs.get("dataset"), "seconds": round(time.time() - started, 3),
                       "status": status, "exit_code": exit_code, "error": shorten(redact(error), 500) if error else None,
                       "outputs": outputs}
                if frame["steps"]:  # a pipeline: its steps' runs are logged apart; this adds them up
                    sent += frame["steps_sent"]
                    cost = None if cost is None or frame["steps_cost"] is None else cost + frame["steps_cost"]
                    end["steps"] = frame["steps"]
                end.update(requests_sent=sent, cost_usd=None if cost is None else round(cost, 8))
                if parent:
                    end["parent"] = parent
                    for outer in _frames:
                        if outer["run"] == parent:
                            outer["steps"] += 1
                            outer["steps_sent"] += sent
                            outer["steps_cost"] = None if cost is None or outer["steps_cost"] is None \
                                else outer["steps_cost"] + cost
                try:
                    _append(path, end)
                except OSError:
                    pass
        return wrapper
    return decorator


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_runs(root: Path) -> list[dict]:
    """Runs in start order, each its start line merged with its end line; a run with no end is
    `running` while its process lives, else `killed`."""
    path = log_path(root)
    if not path.exists():
        return []
    runs: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if not isinstance(entry, dict):
                continue
            run = runs.setdefault(entry.get("run", "?"), {"run": entry.get("run")})
            if entry.get("event") == "start":
                run.update({k: v for k, v in entry.items() if k != "event"}, started=entry.get("time"))
            elif entry.get("event") == "end":
                run.update({k: v for k, v in entry.items() if k not in ("event", "time")}, ended=entry.get("time"))
    for run in runs.values():
        if "status" not in run:
            run.update(status="running" if _alive(run.get("pid")) else "killed", outputs=[], requests_sent=0,
                       cost_usd=0.0)
    return list(runs.values())


def summarise(runs: list[dict]) -> dict:
    """Requests and cost added up per command (stage) and per dataset; unknown prices are counted apart."""
    def empty(unit: str = "runs") -> dict:
        return {unit: 0, "requests_sent": 0, "cost_usd": 0.0, "unknown_cost": 0}

    by_command: dict[str, dict] = {}
    by_dataset: dict[str, dict] = {}
    total = empty()
    for run in runs:
        if run.get("aggregate") or run.get("steps"):
            continue  # a pipeline run: its steps are runs of their own, counted once there
        for bucket in (by_command.setdefault(run.get("command", "?"), empty()), total):
            _add(bucket, "runs", run.get("requests_sent") or 0, run.get("cost_usd"))
        if run.get("dataset"):
            _add(by_dataset.setdefault(run["dataset"], empty()), "runs", run.get("requests_sent") or 0,
                 run.get("cost_usd"))
    return {"by_command": by_command, "by_dataset": by_dataset, "total": total}


def _add(bucket: dict, unit: str, requests: int, cost: float | None) -> None:
    bucket[unit] += 1
    bucket["requests_sent"] += requests
    if cost is None:
        bucket["unknown_cost"] += 1
    else:
        bucket["cost_usd"] = round(bucket["cost_usd"] + cost, 8)
