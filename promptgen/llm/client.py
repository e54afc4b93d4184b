"""The one LLM client every stage uses: LLMClient, a facade over promptgen.llm.

It plans requests (samples, re-asks, cache keys), answers them from the content-addressed cache
or the provider, counts tokens and cost, and estimates a dry run. The parts live apart: requests
(the data types, re-exported here), providers (who answers and with which key), transports
(litellm or the openai SDK), retries (what to ask again and when), pricing (prices and Cost),
pool (the online run, `concurrency` at a time) and batch (the same run through the provider's
batch API: the same callbacks, cache and stored answers, at the batch price). Nothing here ever
writes or prints an API key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Callable, Iterable

from promptgen.errors import PromptgenError
from promptgen.llm.batch import BatchRun, check_no_open_batch
from promptgen.llm.cache import LLMCache, cache_key
from promptgen.llm.pool import OnAnswer, OnFailure, run_pool
from promptgen.llm.pricing import Prices, Pricing
from promptgen.llm.providers import Provider, import_litellm
from promptgen.llm.requests import Estimate, FatalError, LLMRequest, LLMRequestFailed, LLMResponse, RunStats
from promptgen.llm.retries import RetryPolicy, classify
from promptgen.llm.retries import retry_after_seconds as _retry_after_seconds  # noqa: F401 (tests import it here)
from promptgen.llm.transports import TRANSPORTS, LiteLLMTransport, OpenAITransport, Transport, resolve_transport
from promptgen.redact import redact, redact_url

__all__ = ["LLMRequest", "LLMResponse", "LLMRequestFailed", "LLMClient", "RunStats", "Estimate",
           "import_litellm", "FatalError"]

log = logging.getLogger(__name__)

RETRY_TEMPERATURE = 0.7
BATCH_RETRIES = ("online", "batch")

SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "n", "seed", "presence_penalty",
                 "frequency_penalty", "response_format")


class LLMClient:
    """Ask a model many questions at once, from the cache where possible.

    model: any litellm model string ("openai/gpt-4o-mini", "anthropic/...", "openai/x" with
    api_base for a local server). api_key_env names the environment variable holding the key
    when it is not the provider's usual one; keys are never accepted as values.
    price: USD per million (prompt, completion) tokens, for models litellm has no price for.
    """

    def __init__(self, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 cache: LLMCache | None = None, concurrency: int = 16, timeout: float = 60.0,
                 max_attempts: int = 6, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_retry_after: float = 300.0, price: tuple[float, float] | None = None,
                 split_samples: bool | None = None, transport: str = "auto", progress: bool = True,
                 batch: bool = False, batch_poll: float = 30.0, batch_retry: str = "online",
                 on_spend: Callable[[int, float | None], None] | None = None) -> None:
        if concurrency < 1:
            raise PromptgenError(f"--concurrency must be at least 1, not {concurrency}", "use a positive number")
        if batch_retry not in BATCH_RETRIES:
            raise PromptgenError(f"unknown --batch-retry {batch_retry!r}", f"use one of: {', '.join(BATCH_RETRIES)}")
        if batch_poll < 0:
            raise PromptgenError(f"--batch-poll must be 0 or more seconds, not {batch_poll}", "e.g. --batch-poll 30")
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.cache = cache
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = RetryPolicy(max(1, max_attempts), backoff, max_backoff, max_retry_after)
        self.price = price
        self._split_samples = split_samples
        if transport not in TRANSPORTS:
            raise PromptgenError(f"unknown transport {transport!r}", f"use one of: {', '.join(TRANSPORTS)}")
        self._transport_choice = transport
        self.progress = progress
        self.batch = batch
        self.batch_poll = batch_poll
        self.batch_retry = batch_retry
        self.on_spend = on_spend  # the run log's count of what was sent and paid (runlog.CommandRun)
        self.provider = Provider(model, api_base, api_key_env)
        self.pricing = Pricing(model, price, lambda: self.litellm)
        self._openai_transport = OpenAITransport(self.provider, timeout)
        self._transports: dict[str, Transport] = {"openai": self._openai_transport,
                                                  "litellm": LiteLLMTransport(self.provider, timeout)}
        self._api_base_shown = redact_url(api_base)  # computed once: it is part of every cache key

    # -- identity and capabilities ------------------------------------------------------------

    @property
    def litellm(self) -> Any:
        return self.provider.litellm

    @property
    def max_attempts(self) -> int:
        return self.retries.max_attempts

    def _wait(self, attempt: int, exc: BaseException) -> float:
        """The wait before retry `attempt` after `exc` (RetryPolicy.wait; tests call it here)."""
        return self.retries.wait(attempt, exc)

    @property
    def transport(self) -> str:
        """'openai' (the openai SDK, for OpenAI-compatible providers) or 'litellm' (everything else)."""
        return resolve_transport(self._transport_choice, self.provider)

    def supports_response_schema(self) -> bool:
        """Whether litellm reports that the model takes a JSON-schema `response_format`."""
        return self.provider.supports_response_schema()

    @property
    def split_samples(self) -> bool:
        """True when n samples must come from n requests (the provider has no `n`)."""
        if self._split_samples is None:
            self._split_samples = not self.provider.supports("n")
        return self._split_samples

    def describe(self) -> dict:
        """What the manifest records about the model and transport (no secrets)."""
        return {"model": self.model, "api_base": self._api_base_shown, "provider": self.provider.name(),
                "transport": self.transport,
                "samples": "split into n requests" if self.split_samples else "one request with n",
                "timeout_s": self.timeout, "max_attempts": self.max_attempts, "concurrency": self.concurrency,
                **({"batch": {"poll_s": self.batch_poll, "retry": self.batch_retry}} if self.batch else {})}

    def plan(self, messages: list[dict], sampling: dict, *, draw: int = 0, tag: tuple = ()) -> list[LLMRequest]:
        """The requests that fetch `sampling["n"]` answers to one question."""
        base = {k: v for k, v in sampling.items() if k in SAMPLING_KEYS}
        n = int(base.pop("n", 1))
        if n == 1 or not self.split_samples:
            return [self._request(messages, base, n, None, 0, draw, tag)]
        return self.samples(messages, base, range(n), draw=draw, tag=tag)

    def samples(self, messages: list[dict], base: dict, indices: Iterable[int], *, draw: int = 0,
                tag: tuple = ()) -> list[LLMRequest]:
        """One request per sample index (for providers without `n`, or to top up a short answer)."""
        return [self._request(messages, base, 1, i, 0, draw, tag) for i in indices]

    def retry(self, request: LLMRequest) -> LLMRequest:
        """The same question asked again after an unusable answer: a new seed where the provider
        takes one, and temperature 0 raised to RETRY_TEMPERATURE, so that the answer can differ."""
        return self._request(request.message_list, request.base_dict, request.n, request.sample_index,
                             request.attempt + 1, request.draw, request.tag)

    def _request(self, messages: list[dict], base: dict, n: int, sample_index: int | None, attempt: int,
                 draw: int, tag: tuple) -> LLMRequest:
        params = dict(base)
        if n > 1:
            params["n"] = n
        if "seed" not in base and self.provider.supports("seed") and (sample_index is not None or attempt or draw):
            params["seed"] = (sample_index or 0) + 1000 * attempt + 100_000 * draw
        if attempt and not params.get("temperature", 1):
            params["temperature"] = RETRY_TEMPERATURE
        request = LLMRequest.make(messages, params, sample_index, attempt, draw, tag, base)
        return dataclasses.replace(request, key=self.key(request))

    def key_payload(self, request: LLMRequest) -> dict:
        payload = {"model": self.model, "api_base": self._api_base_shown, "messages": request.message_list,
                   "params": request.param_dict, "sample_index": request.sample_index}
        if request.attempt:
            payload["attempt"] = request.attempt
        if request.draw:
            payload["draw"] = request.draw
        return payload

    def key(self, request: LLMRequest) -> str:
        return request.key or cache_key(self.key_payload(request))

    @property
    def api_base_shown(self) -> str | None:
        """The API base as keys, manifests and batch states record it (credentials removed)."""
        return self._api_base_shown

    # -- credentials, batch and prices ---------------------------------------------------------

    def check_batch(self) -> None:
        """With --batch, fail before anything is sent when the provider has no batch API promptgen can use."""
        if not self.batch:
            return
        if not self.provider.openai_compatible():
            raise PromptgenError(
                f"--batch needs an OpenAI-compatible provider (the OpenAI files and batches API); {self.model!r} is "
                f"{self.provider.shown()}",
                "drop --batch to ask online, or use an openai/... model (with --api-base for an OpenAI-compatible "
                "server that has /v1/batches)")
        if self.cache is None:
            raise PromptgenError("batch mode keeps its batch states next to the LLM cache, and this client has none",
                                 "give LLMClient a cache (the CLI always does)")

    def check_credentials(self) -> None:
        """Fail before anything is sent when the provider's key is missing, naming the variable (and,
        with --batch, when the provider has no batch API)."""
        self.check_batch()
        self.provider.check_credentials()

    def unit_prices(self, *, batch: bool = False) -> Prices | None:
        """USD per million (prompt, completion) tokens, online or through the batch API."""
        return self.pricing.unit_prices(batch=batch)

    def estimate(self, requests: Iterable[LLMRequest]) -> Estimate:
        self.check_batch()
        to_send, cached, prompt_tokens, completion_tokens = 0, 0, 0, 0
        for request in requests:
            if self.cache is not None and self.key(request) in self.cache:
                cached += 1
                continue
            to_send += 1
            prompt_tokens += self._count_tokens(request.message_list)
            completion_tokens += int(request.param_dict.get("max_tokens") or 256) * request.n
        return Estimate(to_send, cached, prompt_tokens, completion_tokens,
                        self.pricing.cost(prompt_tokens, completion_tokens), self.pricing.online_source(),
                        self.pricing.cost(prompt_tokens, completion_tokens, batch=True), self.pricing.batch()[1],
                        self.batch)

    def _count_tokens(self, messages: list[dict]) -> int:
        try:
            return int(self.litellm.token_counter(model=self.model, messages=messages))
        except Exception:
            return sum(len(m.get("content", "")) for m in messages) // 4 + 4 * len(messages)

    # -- asking -------------------------------------------------------------------------------

    def openai_body(self, request: LLMRequest) -> dict:
        """The /chat/completions body the openai transport sends (and a batch line carries)."""
        return self._openai_transport.body(request)

    @property
    def openai(self) -> Any:
        """The openai SDK client (made on first use; `run` closes it at the end)."""
        return self._openai_transport.sdk

    async def aclose(self) -> None:
        """Close the openai SDK client, if one was made (the next call makes a new one)."""
        await self._openai_transport.aclose()

    async def _send(self, request: LLMRequest) -> Any:
        return await self._transports[self.transport].send(request)

    def cached(self, key: str) -> LLMResponse | None:
        """The cached answer for `key`, if any."""
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        return LLMResponse(key, hit["choices"], hit.get("usage", {}), hit.get("cost_usd"), True, 0.0,
                           hit.get("model", self.model))

    def response_from(self, key: str, data: dict, latency_s: float, *, batch: bool = False) -> LLMResponse:
        """An LLMResponse from a chat.completion body (online, or a batch output line's body), priced
        online or at the batch price."""
        choices = [{"text": (choice.get("message") or {}).get("content") or "",
                    "finish_reason": choice.get("finish_reason")} for choice in data.get("choices") or []]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        return LLMResponse(key, choices, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                           self.pricing.cost(prompt_tokens, completion_tokens, batch=batch), False, latency_s,
                           data.get("model") or self.model)

    def account(self, response: LLMResponse, stats: RunStats) -> None:
        """Count a paid answer in the run's totals."""
        stats.sent += 1
        stats.prompt_tokens += response.usage["prompt_tokens"]
        stats.completion_tokens += response.usage["completion_tokens"]
        stats.cost.add(response.cost_usd)

    def remember(self, payload: dict, response: LLMResponse) -> None:
        """Cache a paid answer under its key payload; a full disk only warns (the stage's journal
        still gets the answer)."""
        if self.cache is None:
            return
        try:
            self.cache.put(response.key, payload, response.to_json())
        except OSError as exc:
            log.warning("could not cache an answer (%s); it is kept in the run's journal", exc.strerror or exc)

    async def complete(self, request: LLMRequest, stats: RunStats | None = None) -> LLMResponse:
        """One answer: from the cache, else from the provider with retries (then cached)."""
        from tenacity import RetryError

        stats = stats if stats is not None else RunStats()
        key = self.key(request)
        hit = self.cached(key)
        if hit is not None:
            stats.cache_hits += 1
            return hit
        # prices come from litellm (a slow first import): look them up before the first request is in
        # flight, and never on a run answered wholly from the cache
        self.pricing.online()
        started = time.perf_counter()
        try:
            async for attempt in self.retries.retrying():
                with attempt:
                    stats.http_attempts += 1
                    raw = await self._send(request)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            stats.errors[type(last).__name__] += 1
            raise LLMRequestFailed(key, redact(f"{type(last).__name__}: {last}"), self.max_attempts) from None
        except Exception as exc:
            stats.errors[type(exc).__name__] += 1
            message = redact(f"{type(exc).__name__}: {exc}")
            if classify(exc) == "fatal":
                raise FatalError(message) from None
            raise LLMRequestFailed(key, message, 1) from None
        data = raw if isinstance(raw, dict) else raw.model_dump()
        response = self.response_from(key, data, time.perf_counter() - started)
        self.account(response, stats)
        # off the event loop: the write's syscalls then overlap with other requests' network waits
        await asyncio.to_thread(self.remember, self.key_payload(request), response)
        return response

    def run(self, requests: list[LLMRequest], on_answer: OnAnswer, on_failure: OnFailure | None = None,
            description: str = "asking", on_batch: Callable[[dict], None] | None = None) -> RunStats:
        """Answer all requests, `concurrency` at a time. `on_answer` (and `on_failure`) may return
        follow-up requests (e.g. a retry after an unusable answer); they join the queue. Callbacks run
        on one thread. With `batch` on, the requests go through the batch API in rounds (follow-ups
        join the next round) and `on_batch` hears of each batch submitted or picked up again, so the
        caller can journal its id."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(requests, on_answer, on_failure, description, on_batch))
        raise PromptgenError("LLMClient.run was called inside a running event loop (a notebook, an async app)",
                             "use `await client.arun(...)` there")

    async def arun(self, requests: list[LLMRequest], on_answer: OnAnswer, on_failure: OnFailure | None = None,
                   description: str = "asking", on_batch: Callable[[dict], None] | None = None) -> RunStats:
        """`run` for callers that already have an event loop."""
        stats = RunStats()
        started = time.perf_counter()
        try:
            if self.batch:
                await BatchRun(self, stats, on_answer, on_failure, on_batch, description).run(requests)
            else:
                check_no_open_batch(self, requests)
                try:
                    await run_pool(requests, self.complete, on_answer, on_failure, stats,
                                   concurrency=self.concurrency, progress=self.progress, description=description)
                finally:
                    await self.aclose()
        except FatalError as exc:
            raise PromptgenError(f"the provider refused the request: {exc}",
                                 "check the model name, --api-base and the API key variable; answers received "
                                 "so far are kept, rerun with --resume to continue") from None
        finally:
            stats.seconds = time.perf_counter() - started
            if self.on_spend is not None:
                self.on_spend(stats.sent, stats.cost_usd)  # also when interrupted: what was paid is logged
        return stats
