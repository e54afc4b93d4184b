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

from promptgen.clock import iso_from_epoch
from promptgen.errors import DISK_ERRNOS, ExitCode, PromptgenError
from promptgen.llm.pricing import Cost
from promptgen.messages import shorten
from promptgen.paths import resolve_root
from promptgen.redact import redact, redacted_command
from promptgen.store import Store

__all__ = ["logged", "CommandRun", "read_runs", "log_path", "summarise"]


def log_path(root: Path) -> Path:
    return root / "logs" / "runs.jsonl"


class CommandRun:
    """One command's run, logged by the code that runs it: the `logged` decorator for a command
    typed at the prompt, the pipeline for each of its steps (as a child of the pipeline's run).

    The command makes its store and LLM client through the run (`store()`, `on_spend`), so the
    run learns every version written and what was spent without any process-wide state; a
    pipeline adds `on_reserved` to learn the version a step reserves the moment it does."""

    def __init__(self, root: Path | None, command: str, *, args: str, dataset: str | None = None,
                 parent: "CommandRun | None" = None, aggregate: bool = False,
                 on_reserved: Callable[[Any], None] | None = None) -> None:
        self.root, self.command, self.args, self.dataset = root, command, args, dataset
        self.parent, self.aggregate, self.on_reserved = parent, aggregate, on_reserved
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        self.outputs: list[dict] = []       # the versions this run finished (run-log entries)
        self.spend: tuple[int, Cost] | None = None   # the LLM client's own count, also of a run stopped early
        self.steps = self.steps_sent = 0
        self.steps_cost = Cost()
        self._path: Path | None = None
        self._started = 0.0

    # -- what the command reports ----------------------------------------------------------------

    def store(self, wait: bool = False) -> Any:
        """The store a command writes through: it reports to this run what it reserves and finishes."""
        return Store(resolve_root(self.root), wait_for_writers=wait, on_reserved=self.on_reserved,
                     on_finished=self.note_version)

    def note_version(self, info: Any) -> None:
        manifest, counts = info.manifest, info.manifest.get("counts") or {}
        self.outputs.append({
            "dataset": info.dataset, "set": info.set, "version": info.version, "ref": str(info.ref),
            "stage": manifest.get("stage"), "status": manifest.get("status"), "records": counts.get("records"),
            "requests_sent": counts.get("requests_sent_this_run", (manifest.get("pairs") or {}).get("queried", 0)),
            "cache_hits": counts.get("cache_hits_this_run", 0),
            "cost_usd": manifest.get("cost_usd_this_run",
                                     0.0 if not manifest.get("network") else manifest.get("cost_usd")),
            "failures": len(manifest.get("failures") or []) + len(manifest.get("failed_pairs") or []),
            "records_sha256": manifest.get("records_sha256"), **({"batches": manifest["batches"]}
                                                                 if manifest.get("batches") else {})})

    def on_spend(self, sent: int, cost_usd: float | None) -> None:
        """What the LLM client sent and what it cost, when a batch of requests ends (interrupted too)."""
        spent, cost = self.spend or (0, Cost())
        self.spend = (spent + sent, cost.add(cost_usd))

    # -- the log lines ---------------------------------------------------------------------------

    def __enter__(self) -> "CommandRun":
        self._started = time.time()
        try:
            path = log_path(resolve_root(self.root))
        except PromptgenError:
            return self
        start = {"event": "start", "run": self.run_id, "time": iso_from_epoch(self._started), "command": self.command,
                 "args": self.args, "pid": os.getpid(), **({"aggregate": True} if self.aggregate else {})}
        try:
            _append(path, {**start, "parent": self.parent.run_id} if self.parent else start)
        except OSError:
            return self  # a read-only root: the command's own error says more
        self._path = path
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, traceback: Any) -> None:
        status, exit_code, error = _outcome(exc)
        if self._path is None:
            return
        if self.spend:  # the LLM client's own count: it includes runs that stopped before writing
            sent, cost = self.spend[0], Cost(self.spend[1].usd)
        else:
            sent = sum(o["requests_sent"] or 0 for o in self.outputs)
            cost = Cost.of(o["cost_usd"] for o in self.outputs)
        end = {"event": "end", "run": self.run_id, "time": iso_from_epoch(time.time()), "command": self.command,
               "dataset": self.dataset, "seconds": round(time.time() - self._started, 3),
               "status": status, "exit_code": exit_code, "error": shorten(redact(error), 500) if error else None,
               "outputs": self.outputs}
        if self.steps:  # a pipeline: its steps' runs are logged apart; this adds them up
            sent += self.steps_sent
            cost.add(self.steps_cost.usd)
            end["steps"] = self.steps
        end.update(requests_sent=sent, cost_usd=None if cost.usd is None else round(cost.usd, 8))
        if self.parent:
            end["parent"] = self.parent.run_id
            self.parent.steps += 1
            self.parent.steps_sent += sent
            self.parent.steps_cost.add(cost.usd)
        with contextlib.suppress(OSError):
            _append(self._path, end)


def _outcome(exc: BaseException | None) -> tuple[str, int, str | None]:
    """(status, exit code, error) of a run that ended with `exc` (None: it returned)."""
    if exc is None:
        return "ok", 0, None
    if isinstance(exc, PromptgenError):
        return "error", ExitCode.USAGE, exc.message
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
        status = "ok" if code == 0 else "partial" if code == ExitCode.PARTIAL else \
            "interrupted" if code == ExitCode.INTERRUPTED else "error"
        return status, code, None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ExitCode.INTERRUPTED, None
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return "not written", ExitCode.NOT_WRITTEN, f"{type(exc).__name__}: {exc}"
    return "failed", 1, f"{type(exc).__name__}: {exc}"


def _append(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)  # one write per line: concurrent runs do not interleave lines
    finally:
        os.close(descriptor)


def logged(command: str, *, aggregate: bool = False, unless: Callable[[dict], bool] | None = None) -> Callable:
    """Wrap a click callback so that its run is logged under the root it was given, and hand the
    callback that run (`run=`). A caller that runs the callback itself (the pipeline) passes its
    own `run` and logs it. `aggregate`: the command runs others (a pipeline), whose runs count in
    the totals instead of its own; `unless(kwargs)`: not logged at all (a pipeline's --plan)."""
    def decorator(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("run") is not None:
                return function(*args, **kwargs)
            run = CommandRun(kwargs.get("root"), command, args=shorten(redacted_command(), 500, one_line=False),
                             dataset=kwargs.get("dataset"), aggregate=aggregate)
            if unless is not None and unless(kwargs):
                return function(*args, **kwargs, run=run)
            with run:
                return function(*args, **kwargs, run=run)
        wrapper.logged_command = command  # type: ignore[attr-defined]
        return wrapper
    return decorator




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
