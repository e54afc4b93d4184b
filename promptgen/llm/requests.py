"""What the LLM client trades in: requests, answers, failures, a run's totals and a dry run's estimate.

Plain data with no provider library behind it, so that the batch runner, the stages and the CLI
can name these types without importing litellm or the client.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from promptgen.llm.pricing import Cost

__all__ = ["LLMRequest", "LLMResponse", "LLMRequestFailed", "FatalError", "RunStats", "Estimate"]


@dataclass(frozen=True)
class LLMRequest:
    """One HTTP request's worth of asking. `tag` is the caller's bookkeeping, not part of the key."""

    messages: tuple[tuple[tuple[str, str], ...], ...]
    params: tuple[tuple[str, Any], ...]
    sample_index: int | None = None
    attempt: int = 0
    draw: int = 0
    tag: tuple = field(default=(), compare=False)
    base: tuple[tuple[str, Any], ...] = field(default=(), compare=False)  # the template's sampling, no n/seed
    key: str = field(default="", compare=False)  # set by the client that planned it

    @staticmethod
    def make(messages: list[dict], params: dict, sample_index: int | None = None, attempt: int = 0,
             draw: int = 0, tag: tuple = (), base: dict | None = None) -> "LLMRequest":
        frozen_messages = tuple(tuple(sorted(m.items())) for m in messages)
        return LLMRequest(frozen_messages, _freeze(params), sample_index, attempt, draw, tag,
                          _freeze(base if base is not None else params))

    @property
    def message_list(self) -> list[dict]:
        return [dict(m) for m in self.messages]

    @property
    def param_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}

    @property
    def n(self) -> int:
        return int(self.param_dict.get("n", 1))

    @property
    def base_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.base}


def _freeze(params: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


@dataclass
class LLMResponse:
    key: str
    choices: list[dict]
    usage: dict
    cost_usd: float | None
    cached: bool
    latency_s: float
    model: str

    def to_json(self) -> dict:
        return {"choices": self.choices, "usage": self.usage, "cost_usd": self.cost_usd,
                "latency_s": round(self.latency_s, 4), "model": self.model}


class LLMRequestFailed(Exception):
    """A request that could not be answered after its retries; the run goes on without it."""

    def __init__(self, key: str, error: str, attempts: int) -> None:
        super().__init__(error)
        self.key, self.error, self.attempts = key, error, attempts


class FatalError(Exception):
    """Every request would fail the same way (a bad key, an unknown model): the run stops."""


@dataclass
class RunStats:
    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    http_attempts: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Cost = field(default_factory=Cost)
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    batches: list[str] = field(default_factory=list)  # batch ids this run submitted or picked up
    batch_lines: int = 0                               # lines answered from batches (also counted in sent)

    @property
    def cost_usd(self) -> float | None:
        return self.cost.usd


@dataclass
class Estimate:
    requests: int
    cached: int
    prompt_tokens: int
    max_completion_tokens: int
    cost_usd: float | None              # asked online
    price_source: str
    batch_cost_usd: float | None = None  # asked through the batch API (--batch)
    batch_price_source: str = "no price known"
    batch: bool = False                  # the run would use the batch API: its price is the headline

    @property
    def headline_cost_usd(self) -> float | None:
        return self.batch_cost_usd if self.batch else self.cost_usd

    def lines(self) -> list[str]:
        unknown = "unknown (no price for this model; give --price)"
        online = f"${self.cost_usd:,.4f} at most" if self.cost_usd is not None else unknown
        batch = f"${self.batch_cost_usd:,.4f} at most" if self.batch_cost_usd is not None else unknown
        if self.batch_cost_usd is not None and self.cost_usd:
            batch += f" ({1 - self.batch_cost_usd / self.cost_usd:.0%} batch discount)"
        head = [f"requests to send: {self.requests:,} ({self.cached:,} more already cached, free)",
                f"prompt tokens:     {self.prompt_tokens:,} (estimated)",
                f"completion tokens: {self.max_completion_tokens:,} at most (max_tokens x n)"]
        if self.batch:
            return head + [f"cost (--batch):    {batch} [{self.batch_price_source}]",
                           f"online it'd cost:  {online} [{self.price_source}]"]
        return head + [f"cost:              {online} [{self.price_source}]",
                       f"with --batch:      {batch} [{self.batch_price_source}]"]
