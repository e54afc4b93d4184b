"""Batch API mode (`--batch`): LLMClient.run's requests through the provider's batch API.

The contract is the online one: the same callbacks (`on_answer`, `on_failure`; the follow-ups they
return make the next round), the same cache keys, cache entries and answers, at the batch price.

One round:
1. requests whose answers are cached are answered from the cache;
2. batches an earlier run submitted and never joined (their states live in <cache>/batches/) are
   picked up for the keys they hold, so an interrupted run never pays twice;
3. the rest is written as JSONL, one line per request (custom_id = the cache key, body = exactly
   the online /chat/completions body), split at MAX_BATCH_LINES lines, uploaded and submitted;
   each batch's state is written, durably, as soon as the provider returns its id;
4. the batches are polled every `batch_poll` seconds until they end (a progress bar on stderr);
5. their output and error files are fetched, kept next to the state (a crash while joining needs
   no second download) and joined on custom_id: good lines are parsed as online answers, cached
   and handed to `on_answer`; failed lines (error lines, a status other than 200, lines a failed,
   expired or cancelled batch never answered) are asked online (`batch_retry="online"`) or in the
   next round's batch (`"batch"`; after MAX_BATCH_ROUNDS batches a key is asked online).
A line whose online retry fails too goes to `on_failure`, as online.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Protocol

from promptgen.errors import PromptgenError
from promptgen.clock import utc_now
from promptgen.llm.batch_store import BatchState, BatchStore
from promptgen.llm.cache import LLMCache
from promptgen.llm.pool import OnAnswer, OnFailure, hand_over
from promptgen.llm.pricing import Prices
from promptgen.llm.requests import FatalError, LLMRequest, LLMRequestFailed, LLMResponse, RunStats
from promptgen.llm.retries import RetryPolicy, classify
from promptgen.messages import shorten
from promptgen.redact import redact

__all__ = ["MAX_BATCH_LINES", "MAX_BATCH_BYTES", "MAX_BATCH_ROUNDS", "BatchState", "BatchStore", "BatchRun",
           "BatchJournal", "BatchClient", "batch_line", "check_no_open_batch"]

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 50_000           # OpenAI's limit on requests per batch
MAX_BATCH_BYTES = 190 * 1024 ** 2  # under OpenAI's 200 MB per input file
MAX_BATCH_ROUNDS = 3               # batches one request may go through before it is asked online
TRANSFER_TIMEOUT = 600.0           # seconds for an upload or download: files run to hundreds of MB
ENDPOINT = "/v1/chat/completions"
Outcome = LLMResponse | str  # an answer, or why a line got none


class BatchClient(Protocol):
    """What batch mode needs of its client (an LLMClient): the online path's keys, cache entries,
    answers and accounting, its retries, and the openai SDK for the files and batches API. Named
    here rather than imported, so that the client can import this module and not the reverse."""

    model: str
    cache: LLMCache | None
    timeout: float
    concurrency: int
    progress: bool
    batch: bool
    batch_poll: float
    batch_retry: str
    retries: RetryPolicy

    @property
    def api_base_shown(self) -> str | None: ...
    @property
    def openai(self) -> Any: ...
    def check_batch(self) -> None: ...
    def key(self, request: LLMRequest) -> str: ...
    def key_payload(self, request: LLMRequest) -> dict: ...
    def openai_body(self, request: LLMRequest) -> dict: ...
    def cached(self, key: str) -> LLMResponse | None: ...
    def response_from(self, key: str, data: dict, latency_s: float, *, batch: bool = False) -> LLMResponse: ...
    def remember(self, payload: dict, response: LLMResponse) -> None: ...
    def account(self, response: LLMResponse, stats: RunStats) -> None: ...
    def unit_prices(self, *, batch: bool = False) -> Prices | None: ...
    async def complete(self, request: LLMRequest, stats: RunStats | None = None) -> LLMResponse: ...
    async def aclose(self) -> None: ...


def batch_line(client: BatchClient, request: LLMRequest) -> str:
    """One line of the batch input file: the online request body, under its cache key."""
    return json.dumps({"custom_id": client.key(request), "method": "POST", "url": ENDPOINT,
                       "body": client.openai_body(request)}, ensure_ascii=False) + "\n"


class BatchRun:
    """One `LLMClient.run` in batch mode (see the module's docstring)."""

    def __init__(self, client: BatchClient, stats: RunStats,
                 on_answer: OnAnswer, on_failure: OnFailure | None,
                 on_batch: Callable[[dict], None] | None, description: str) -> None:
        client.check_batch()  # before anything is sent: the provider must have the batch API
        self.client, self.stats, self.description = client, stats, description
        self.on_answer, self.on_failure, self.on_batch = on_answer, on_failure, on_batch
        self.store = BatchStore.beside(client.cache)
        self.rounds: Counter = Counter()  # batches each key went through in this run
        self.resume_hint = (f"submitted batches keep running at the provider (their states are in {self.store.directory}); "
                            f"rerun the same command with --resume to fetch their results without paying again")

    async def run(self, requests: list[LLMRequest]) -> None:
        pending = list(requests)
        self.stats.requests += len(pending)
        try:
            while pending:
                pending = await self._round(pending)
        finally:
            await self.client.aclose()

    # -- one round --------------------------------------------------------------------------

    async def _round(self, pending: list[LLMRequest]) -> list[LLMRequest]:
        """Answer `pending`; return the next round's requests (batch retries and follow-ups)."""
        groups: dict[str, list[LLMRequest]] = {}  # one batch line per key, however many ask it
        for request in pending:
            groups.setdefault(self.client.key(request), []).append(request)
        next_round: list[LLMRequest] = []
        to_ask: dict[str, LLMRequest] = {}
        for key, group in groups.items():
            hit = self.client.cached(key)
            if hit is None:
                to_ask[key] = group[0]
                continue
            self.stats.cache_hits += len(group)
            for request in group:
                next_round += self._settle(request, hit)
        online = [key for key in to_ask if self.rounds[key] >= MAX_BATCH_ROUNDS]
        by_batch = {key: request for key, request in to_ask.items() if self.rounds[key] < MAX_BATCH_ROUNDS}
        again: list[LLMRequest] = []
        failed_lines: Counter = Counter()
        if by_batch:
            results = await self._ask_by_batch(by_batch)
            for key in by_batch:
                self.rounds[key] += 1
                outcome = results.get(key, "not answered")
                if isinstance(outcome, LLMResponse):
                    for request in groups[key]:
                        next_round += self._settle(request, outcome)
                    continue
                failed_lines[outcome.split(":", 1)[0]] += 1
                if self.client.batch_retry == "batch" and self.rounds[key] < MAX_BATCH_ROUNDS:
                    again += groups[key]
                else:
                    online.append(key)
        if failed_lines:
            log.warning("%d batch line(s) got no answer (%s); asking them %s", sum(failed_lines.values()),
                        "; ".join(f"{n} {why}" for why, n in failed_lines.most_common(3)),
                        "in a follow-up batch" if again else "online")
        if online:
            for key, outcome in zip(online, await self._ask_online([to_ask[key] for key in online])):
                for request in groups[key]:
                    next_round += self._settle(request, outcome)
        return again + next_round

    def _settle(self, request: LLMRequest, outcome: LLMResponse | LLMRequestFailed) -> list[LLMRequest]:
        return hand_over(request, outcome, self.on_answer, self.on_failure, self.stats)

    async def _ask_online(self, requests: list[LLMRequest]) -> list[LLMResponse | LLMRequestFailed]:
        """The online path, with its retries, `concurrency` at a time."""
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc=f"{self.description} (online)", unit="req", file=sys.stderr,
                   disable=not self.client.progress, dynamic_ncols=True)
        semaphore = asyncio.Semaphore(self.client.concurrency)

        async def ask(request: LLMRequest) -> LLMResponse | LLMRequestFailed:
            async with semaphore:
                try:
                    outcome: LLMResponse | LLMRequestFailed = await self.client.complete(request, self.stats)
                except LLMRequestFailed as exc:
                    outcome = exc
                bar.update(1)
                return outcome

        tasks = [asyncio.ensure_future(ask(request)) for request in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # a fatal error (or an interrupt) stops the other requests too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            bar.close()

    async def _ask_by_batch(self, needed: dict[str, LLMRequest]) -> dict[str, Outcome]:
        """Outcomes for `needed` (none cached): from open batches that hold them, else new batches."""
        states = self._open_batches(needed)
        held = {key for state in states for key in state.custom_ids}
        fresh = [request for key, request in needed.items() if key not in held]
        if fresh:
            states += await self._submit(fresh)
        await self._wait(states)
        results: dict[str, Outcome] = {}
        for state in states:
            for key, outcome in (await self._join(state, needed)).items():
                if isinstance(outcome, LLMResponse) or key not in results:
                    results[key] = outcome
        return results

    def _open_batches(self, needed: dict[str, LLMRequest]) -> list[BatchState]:
        """Batches an earlier run submitted and did not join that hold any needed key: their
        answers are paid for (or will be), so they are waited for rather than asked again."""
        found = []
        for state in self.store.open_states(self.client.model, self.client.api_base_shown):
            if any(key in needed for key in state.custom_ids):
                log.info("picking up batch %s (%s), submitted %s", state.batch_id, state.status, state.submitted)
                found.append(state)
                self._note(state, "picked up")
        return found

    def _note(self, state: BatchState, action: str, **extra: Any) -> None:
        if state.batch_id not in self.stats.batches:
            self.stats.batches.append(state.batch_id)
        if self.on_batch is not None:
            self.on_batch({"batch_id": state.batch_id, "action": action, "status": state.status,
                           "lines": len(state.custom_ids), **extra})

    # -- the provider's batch API ------------------------------------------------------------

    async def _api(self, what: str, call: Callable[[], Awaitable[Any]], *, resend: bool = True,
                   missing_ok: bool = False) -> Any:
        """A batch API call with the client's retries and backoff. `resend=False` retries only a
        429 (the call was refused, not acted on): a batch created twice would be paid twice.
        `missing_ok` lets a 404 through to the caller; else it means the server has no batch API."""
        import openai
        from tenacity import RetryError

        retry_on = (lambda exc: isinstance(exc, openai.RateLimitError)) if not resend else None
        try:
            async for attempt in self.client.retries.retrying(retry_on):
                with attempt:
                    return await call()
        except RetryError as exc:
            error = exc.last_attempt.exception()
        except openai.NotFoundError as exc:
            if missing_ok:
                raise
            raise PromptgenError(f"could not {what}: {shorten(redact(str(exc)), 300)}",
                                 f"{self.client.api_base_shown or 'the provider'} may not offer the OpenAI batch API "
                                 f"(/v1/files, /v1/batches); drop --batch to ask online") from None
        except Exception as exc:
            if classify(exc) == "fatal":
                raise FatalError(redact(f"could not {what}: {type(exc).__name__}: {exc}")) from None
            error = exc
        raise PromptgenError(f"could not {what}: {shorten(redact(f'{type(error).__name__}: {error}'), 300)}",
                             self.resume_hint)

    async def _submit(self, requests: list[LLMRequest]) -> list[BatchState]:
        """Upload and submit `requests` as one batch per MAX_BATCH_LINES lines (or MAX_BATCH_BYTES)."""
        self.client.unit_prices(batch=True)  # litellm's first import takes seconds: not while joining
        states, chunk, size = [], [], 0
        for request in requests:
            line = batch_line(self.client, request)
            if chunk and (len(chunk) >= MAX_BATCH_LINES or size + len(line.encode()) > MAX_BATCH_BYTES):
                states.append(await self._submit_one(chunk))
                chunk, size = [], 0
            chunk.append((request, line))
            size += len(line.encode())
        if chunk:
            states.append(await self._submit_one(chunk))
        return states

    async def _submit_one(self, chunk: list[tuple[LLMRequest, str]]) -> BatchState:
        openai_client = self.client.openai
        data = "".join(line for _, line in chunk).encode()
        upload = await self._api("upload the batch input file", lambda: openai_client.files.create(
            file=("promptgen-batch.jsonl", data, "application/jsonl"), purpose="batch",
            timeout=max(self.client.timeout, TRANSFER_TIMEOUT)))
        # before the batch exists: whoever joins its results caches them under these payloads
        self.store.write(upload.id, "requests", "".join(
            json.dumps({"custom_id": self.client.key(request), "request": self.client.key_payload(request)},
                       ensure_ascii=False) + "\n" for request, _ in chunk))
        batch = await self._api("submit the batch", lambda: openai_client.batches.create(
            input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
            metadata={"created_by": "promptgen"}), resend=False)
        state = BatchState(batch.id, upload.id, self.client.model, self.client.api_base_shown,
                           [self.client.key(request) for request, _ in chunk],
                           utc_now(), time.time(), batch.status or "validating")
        self.store.save(state)  # at once: an interrupt from here on resumes this batch instead of paying again
        log.info("submitted batch %s: %d lines", state.batch_id, len(chunk))
        self._note(state, "submitted")
        return state

    async def _wait(self, states: list[BatchState]) -> None:
        """Poll until every batch has ended; the bar counts lines done (completed or failed)."""
        from tqdm import tqdm

        bar = tqdm(total=sum(len(state.custom_ids) for state in states), desc=f"{self.description} (batch)",
                   unit="req", file=sys.stderr, disable=not self.client.progress, dynamic_ncols=True)
        try:
            while True:
                for state in states:
                    if not state.ended:
                        await self._poll(state)
                if self.client.progress:
                    bar.n = sum(state.lines_done() for state in states)
                    statuses = Counter(state.status for state in states)
                    bar.set_postfix_str(", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
                if all(state.ended for state in states):
                    return
                await asyncio.sleep(self.client.batch_poll)
        finally:
            bar.close()

    async def _poll(self, state: BatchState) -> None:
        import openai

        before = (state.status, state.output_file_id, state.error_file_id)
        try:
            batch = await self._api(f"check on batch {state.batch_id}",
                                    lambda: self.client.openai.batches.retrieve(state.batch_id), missing_ok=True)
        except openai.NotFoundError:
            log.warning("the provider does not know batch %s (another account or server?); its lines are asked "
                        "again", state.batch_id)
            state.status = "lost"
        else:
            state.status = batch.status
            state.output_file_id, state.error_file_id = batch.output_file_id, batch.error_file_id
            if batch.request_counts is not None:
                state.request_counts = batch.request_counts.model_dump()
            if batch.errors is not None and batch.errors.data:
                state.errors = [redact(f"{e.code}: {e.message}") for e in batch.errors.data]
        if (state.status, state.output_file_id, state.error_file_id) != before:
            self.store.save(state)

    async def _join(self, state: BatchState, needed: dict[str, LLMRequest]) -> dict[str, Outcome]:
        """Every line's outcome; good answers go into the cache (and the run's totals) once."""
        results: dict[str, Outcome] = {}
        ids = set(state.custom_ids)
        latency = max(0.0, time.time() - state.submitted_at)
        for kind, file_id in (("output", state.output_file_id), ("errors", state.error_file_id)):
            if not file_id:
                continue
            text = self.store.read(state.batch_id, kind)
            if text is None:
                content = await self._api(f"fetch the results of batch {state.batch_id}",
                                          lambda file_id=file_id: self.client.openai.files.content(
                                              file_id, timeout=max(self.client.timeout, TRANSFER_TIMEOUT)))
                text = content.content.decode("utf-8")
                self.store.write(state.batch_id, kind, text)
            for line in text.splitlines():
                self._read_line(line, ids, latency, results)
        why = f"unanswered: batch {state.batch_id} ended {state.status}"
        if state.errors:
            why += f" ({shorten('; '.join(state.errors), 200)})"
        for key in state.custom_ids:
            results.setdefault(key, why)
        answered, payloads = 0, None
        for key, outcome in results.items():
            if not isinstance(outcome, LLMResponse):
                continue
            answered += 1
            if key in needed:
                payload = self.client.key_payload(needed[key])
            elif self.client.cached(key) is not None:
                continue  # joined before, by a run that stopped before marking the batch joined
            else:  # held by a batch this run picked up, asked by another job: cache it all the same
                payloads = payloads if payloads is not None else self._payloads(state)
                if key not in payloads:
                    continue
                payload = payloads[key]
            self.client.remember(payload, outcome)
            self.client.account(outcome, self.stats)
            self.stats.batch_lines += 1
        state.joined = True
        self.store.save(state)
        self._note(state, "joined", answered=answered, failed=len(results) - answered)
        return results

    def _read_line(self, line: str, ids: set[str], latency: float, results: dict[str, Outcome]) -> None:
        if not line.strip():
            return
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("skipping an unreadable line in a batch result file")
            return
        key = entry.get("custom_id") if isinstance(entry, dict) else None
        if key not in ids:
            return
        response = entry.get("response") or {}
        body = response.get("body")
        if response.get("status_code") == 200 and isinstance(body, dict) and isinstance(body.get("choices"), list):
            results[key] = self.client.response_from(key, body, latency, batch=True)
        elif not isinstance(results.get(key), LLMResponse):
            error = entry.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
            status = response.get("status_code") or error.get("code") or "no status"
            results[key] = shorten(redact(f"failed ({status}): {error.get('message') or 'no answer'}"), 300)

    def _payloads(self, state: BatchState) -> dict[str, dict]:
        text = self.store.read(state.input_file_id, "requests") or ""
        payloads = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                payloads[entry["custom_id"]] = entry["request"]
            except (ValueError, KeyError, TypeError):
                continue
        return payloads


class BatchJournal:
    """A version's batch ids: those its journal holds from earlier runs, and those `LLMClient.run`
    reports (journalled as they come, so an interrupted run leaves them where users look).
    Journal readers skip these entries: they carry no `response`."""

    def __init__(self, append: Callable[[dict], None], journal: list[dict]) -> None:
        self._append = append
        self.ids = [entry["batch_id"] for entry in journal if entry.get("event") == "batch" and entry.get("batch_id")]

    def __call__(self, event: dict) -> None:
        self._append({"event": "batch", "time": utc_now(), **event})
        self.ids.append(event["batch_id"])

    def manifest_entry(self, client: BatchClient) -> dict:
        """{"batches": [ids]} for a version made (partly) through the batch API, else nothing."""
        return {"batches": list(dict.fromkeys(self.ids))} if client.batch or self.ids else {}


def check_no_open_batch(client: BatchClient, requests: list[LLMRequest]) -> None:
    """An online run must not ask what a batch an earlier run submitted holds: that batch is paid
    for (or will be), so its answers are picked up with --batch, not bought a second time."""
    if client.cache is None:
        return
    store = BatchStore.beside(client.cache)
    states = store.open_states(client.model, client.api_base_shown)
    if not states:
        return
    needed = {client.key(request) for request in requests}
    held: Counter = Counter()
    for state in states:
        for key in needed.intersection(state.custom_ids):
            if client.cached(key) is None:
                held[state.batch_id] += 1
    if not held:
        return
    listed = ", ".join(f"{batch_id} ({count} of them)" for batch_id, count in held.items())
    raise PromptgenError(
        f"requests of this run are in batches an earlier --batch run submitted and did not fetch: {listed}",
        "rerun with --batch (and --resume to continue the same version) to wait for those batches and use their "
        f"answers; to ask online anyway and pay again, delete their states in {store.directory}")
