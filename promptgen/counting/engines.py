"""The two engines that count names in caption parts: every core of one machine, or a Spark cluster.

Both run `scan_part` on each part, the same function, so they give the same counts byte for byte:
the embedded engine in a pool of worker processes (`spawn`, one automaton per worker), Spark as
one job of one task per part, several jobs at a time. A part's result reaches the caller
(`on_result`) as soon as it is done, so an interrupted count has journalled every finished part.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from promptgen.counting.corpus import CorpusError, Part, Unreadable, clean_error, read_part
from promptgen.counting.matching import BatchHits, NameMatcher
from promptgen.errors import PromptgenError
from promptgen.redact import redact

__all__ = ["ENGINES", "ScanJob", "PartResult", "scan_part", "run_embedded", "run_spark", "check_spark_master"]

ENGINES = ("embedded", "spark")


@dataclass(frozen=True)
class ScanJob:
    """What every part is scanned for: the names (one pattern each, as NameMatcher makes them),
    the caption column, the batch size, and how many matching captions to keep per pattern."""

    names: tuple[str, ...]
    column: str
    batch_rows: int = 65_536
    keep: int = 0


@dataclass
class PartResult:
    key: str
    rows: int
    rows_unreadable: int
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)                 # pattern -> captions
    samples: dict[str, list[list[str]]] = field(default_factory=dict)    # pattern -> [[hash, caption], ...]
    seconds: float = 0.0

    def to_journal(self) -> dict:
        return {"event": "part", "part": self.key, "rows": self.rows, "rows_unreadable": self.rows_unreadable,
                "error": self.error, "seconds": round(self.seconds, 3), "counts": self.counts,
                "samples": self.samples}

    @staticmethod
    def from_journal(entry: dict) -> "PartResult":
        return PartResult(entry["part"], entry["rows"], entry["rows_unreadable"], entry.get("error"),
                          dict(entry.get("counts") or {}), dict(entry.get("samples") or {}), entry.get("seconds", 0.0))


_MATCHERS: dict[tuple[str, ...], NameMatcher] = {}  # one automaton per process and name list


def _matcher(job: ScanJob) -> NameMatcher:
    if job.names not in _MATCHERS:
        _MATCHERS.clear()
        _MATCHERS[job.names] = NameMatcher(job.names)
    return _MATCHERS[job.names]


def scan_part(part: Part, job: ScanJob) -> PartResult:
    """Count one part. A part that fails part-way counts nothing: its rows are unreadable (all of
    them where the file says how many, else those read before the failure)."""
    started = time.perf_counter()
    matcher = _matcher(job)
    unreadable = Unreadable()
    total, rows = BatchHits(), 0
    try:
        for captions in read_part(part, job.column, job.batch_rows, unreadable):
            rows += len(captions)
            total.merge(matcher.scan(captions, job.keep), job.keep)
    except CorpusError as exc:
        lost = part.rows if part.rows is not None else rows + unreadable.rows
        return PartResult(part.key, 0, lost, clean_error(str(exc), part.file), seconds=time.perf_counter() - started)
    counts = {matcher.patterns[p]: n for p, n in sorted(total.counts.items())}
    samples = {matcher.patterns[p]: [list(s) for s in drawn] for p, drawn in sorted(total.samples.items())}
    return PartResult(part.key, rows, unreadable.rows, None, counts, samples, time.perf_counter() - started)


# -- embedded: worker processes on this machine ---------------------------------------------------

_WORKER_JOB: ScanJob | None = None


def _start_worker(job: ScanJob) -> None:
    global _WORKER_JOB
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    import pyarrow as pa

    pa.set_cpu_count(1)  # one core a worker: the pool is the parallelism
    _WORKER_JOB = job
    _matcher(job)


def _scan_in_worker(part: Part) -> PartResult:
    assert _WORKER_JOB is not None
    return scan_part(part, _WORKER_JOB)


def run_embedded(parts: list[Part], job: ScanJob, workers: int, on_result: Callable[[PartResult], None]) -> None:
    """Scan the parts on `workers` processes (in this process when one is enough). A worker that
    dies (the out-of-memory killer) fails the run instead of leaving it waiting forever: a
    ProcessPoolExecutor, unlike multiprocessing.Pool, notices."""
    if not parts:
        return
    if workers <= 1 or len(parts) == 1:
        for part in parts:
            on_result(scan_part(part, job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: pyarrow's thread pools do not survive a fork
    pool = ProcessPoolExecutor(min(workers, len(parts)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(job,))
    try:
        for future in as_completed([pool.submit(_scan_in_worker, part) for part in parts]):
            on_result(future.result())
    except BrokenProcessPool:
        raise PromptgenError("a counting worker process died (out of memory?)",
                             "rerun with --resume (finished parts are kept), with fewer --workers or a smaller "
                             "--batch-rows") from None
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):  # Ctrl-C, or an error: stop now,
            process.terminate()                                           # not after the parts in hand
        pool.shutdown(wait=True, cancel_futures=True)


# -- spark ------------------------------------------------------------------------------------------

_LOCAL_MASTER = re.compile(r"^local(\[(\*|\d+)(,\d+)?\])?$")


def check_spark_master(master: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URL, when a standalone master (spark://host:port[,host:port]) or a
    Kubernetes API (k8s://...) does not answer; Spark itself would retry for minutes."""
    if _LOCAL_MASTER.match(master) or master == "yarn":
        return
    if master.startswith("spark://"):
        addresses = master[len("spark://"):].split(",")
    elif master.startswith("k8s://"):
        rest = re.sub(r"^k8s://(https?://)?", "", master)
        addresses = [rest.split("/")[0] if ":" in rest.split("/")[0] else rest.split("/")[0] + ":443"]
    else:
        raise PromptgenError(f"unknown Spark master {master!r}",
                             "use local[*], local[N], spark://HOST:PORT, k8s://HOST:PORT or yarn")
    problems = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            problems.append(f"{address}: {exc}")
    raise PromptgenError(f"cannot reach the Spark master {master} ({'; '.join(problems)})",
                         "start the master or fix --spark-master; --spark-master 'local[*]' runs Spark on this machine")


def _spark_session(master: str) -> Any:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this Python, with promptgen in it
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise PromptgenError("--engine spark needs pyspark", "pip install 'promptgen[spark]' (or pyspark)") from None
    try:
        return (SparkSession.builder.master(master).appName("promptgen count-names")
                .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                .config("spark.python.worker.reuse", "true").getOrCreate())
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "JAVA_GATEWAY_EXITED" in message or "Java gateway" in message or "JAVA_HOME" in message:
            raise PromptgenError(f"Spark could not start its JVM ({message})",
                                 "install Java 17 or later (Debian: apt-get install default-jre-headless) "
                                 "or set JAVA_HOME") from None
        raise PromptgenError(f"Spark could not start on {master} ({message})", "check --spark-master") from None


def _task_result(future: Any) -> PartResult:
    """A part's result, or the Spark failure as an error that says where to look (a Py4J traceback
    names neither the Python the executors run nor the fix)."""
    try:
        return future.result()
    except PromptgenError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        first = next((line for line in text.splitlines() if "Error" in line or "Exception" in line),
                     text.splitlines()[0] if text else type(exc).__name__)
        raise PromptgenError(f"a Spark task failed: {redact(first.strip()[:400])}",
                             "every executor must run a Python with promptgen installed (set PYSPARK_PYTHON); see the "
                             "executor logs. --resume keeps the parts already counted") from None


def run_spark(parts: list[Part], job: ScanJob, master: str, on_result: Callable[[PartResult], None]) -> int:
    """Scan the parts on Spark: one job of one task per part, as many at a time as the cluster has
    cores, so each part is journalled when it is done. Returns the cluster's parallelism."""
    check_spark_master(master)
    if not parts:
        return 0
    from concurrent.futures import ThreadPoolExecutor, as_completed

    spark = _spark_session(master)
    try:
        context = spark.sparkContext
        context.setLogLevel("ERROR")
        parallelism = max(1, context.defaultParallelism)

        def scan_on_cluster(part: Part) -> PartResult:
            return context.parallelize([part], 1).map(lambda p: scan_part(p, job)).collect()[0]

        with ThreadPoolExecutor(parallelism) as threads:
            futures = [threads.submit(scan_on_cluster, part) for part in parts]
            try:
                for future in as_completed(futures):
                    on_result(_task_result(future))
            except BaseException:
                for future in futures:
                    future.cancel()
                context.cancelAllJobs()
                raise
        return parallelism
    finally:
        spark.stop()
