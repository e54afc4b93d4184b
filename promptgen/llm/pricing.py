"""What LLM answers cost: a model's prices, online and through the batch API, and running totals.

Prices are USD per million (prompt, completion) tokens: --price, else litellm's table, else
unknown. An unknown price is never taken as free: `Cost` makes any total it is part of unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["BATCH_DISCOUNT", "Cost", "Prices", "Pricing", "cost_usd"]

# OpenAI's batch API costs half the online price; used where litellm lists no batch price
BATCH_DISCOUNT = 0.5

Prices = tuple[float, float]  # USD per million (prompt, completion) tokens


@dataclass
class Cost:
    """A running total in USD; one unpriced part (None) makes the whole unknown (None), since a sum
    that skipped it would understate what was spent. This is the one place that rule lives:

        total = Cost()
        total.add(response.cost_usd)   # a float, or None for an answer nobody could price
        total.usd                      # a float, or None once anything added was unpriced
        Cost.of([0.25, None]).usd      # None
    """

    usd: float | None = 0.0

    def add(self, usd: float | None) -> Cost:
        self.usd = None if usd is None or self.usd is None else self.usd + usd
        return self

    @classmethod
    def of(cls, costs: Iterable[float | None]) -> Cost:
        """The total of `costs` (0.0 for none), unknown if any one is."""
        total = cls()
        for usd in costs:
            total.add(usd)
        return total


def cost_usd(prices: Prices | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What the tokens cost at `prices`; None when the price is unknown."""
    if prices is None:
        return None
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6


def _discounted(prices: Prices) -> Prices:
    return prices[0] * BATCH_DISCOUNT, prices[1] * BATCH_DISCOUNT


class Pricing:
    """One model's prices, each looked up once and only when asked for: the lookups import litellm,
    which takes seconds, and a run answered wholly from the cache must not pay that.

    price: the --price override; litellm: returns the litellm module (imported on first call).
    """

    def __init__(self, model: str, price: Prices | None, litellm: Callable[[], Any]) -> None:
        self.model = model
        self.price = price
        self._litellm = litellm
        self._online: Prices | None | bool = False  # False: not looked up yet
        self._batch: tuple[Prices | None, str] | None = None

    def online(self) -> Prices | None:
        """Online prices: --price, else litellm's table, else None."""
        if self.price is not None:
            return self.price
        if self._online is False:
            try:
                litellm = self._litellm()
                prompt_cost, _ = litellm.cost_per_token(model=self.model, prompt_tokens=1_000_000, completion_tokens=0)
                _, completion_cost = litellm.cost_per_token(model=self.model, prompt_tokens=0,
                                                            completion_tokens=1_000_000)
                self._online = (float(prompt_cost), float(completion_cost))
            except Exception:
                self._online = None
        return self._online

    def online_source(self) -> str:
        """Where the online prices come from, for the dry-run estimate."""
        return "--price" if self.price else ("litellm's price table" if self.online() is not None else "no price known")

    def batch(self) -> tuple[Prices | None, str]:
        """Prices through the batch API, and where they come from: litellm's batch prices for the
        model, else the online price with the usual discount."""
        if self._batch is None:
            online = self.online()
            prices, source = None, "no price known"
            if self.price is not None:
                prices, source = _discounted(self.price), f"--price less the {BATCH_DISCOUNT:.0%} batch discount"
            else:
                try:
                    info = self._litellm().get_model_info(self.model)
                    listed = (info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches"))
                except Exception:
                    listed = (None, None)
                if None not in listed:
                    prices, source = (float(listed[0]) * 1e6, float(listed[1]) * 1e6), "litellm's batch prices"
                elif online is not None:
                    prices = _discounted(online)
                    source = f"litellm's price table less the usual {BATCH_DISCOUNT:.0%} batch discount"
            self._batch = (prices, source)
        return self._batch

    def unit_prices(self, *, batch: bool = False) -> Prices | None:
        return self.batch()[0] if batch else self.online()

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
        return cost_usd(self.unit_prices(batch=batch), prompt_tokens, completion_tokens)
