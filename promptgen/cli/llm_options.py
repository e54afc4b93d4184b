"""Options every LLM-backed command shares (describe, differentiate, synonyms, rename), and the client
they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from promptgen.errors import PromptgenError
from promptgen.paths import cache_dir

__all__ = ["llm_options", "make_client", "parse_price"]


def parse_price(value: str | None) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        prompt, completion = (float(part) for part in value.split(","))
    except ValueError:
        raise PromptgenError(f"--price {value!r} is not PROMPT,COMPLETION", "e.g. --price 0.15,0.60 (USD per million tokens)") from None
    return prompt, completion


def llm_options(function: Callable) -> Callable:
    options = [
        click.option("--model", help="Any litellm model string, e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-20241022."),
        click.option("--api-base", help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama's /v1, ...)."),
        click.option("--api-key-env", help="Environment variable that holds the key, when not the provider's usual one."),
        click.option("--concurrency", type=int, default=16, show_default=True, help="Requests in flight at once."),
        click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request before it is retried."),
        click.option("--max-attempts", type=int, default=6, show_default=True, help="Tries per request on 429/5xx/timeouts."),
        click.option("--backoff", type=float, default=1.0, show_default=True, help="First retry wait in seconds (doubles each try)."),
        click.option("--answer-retries", type=int, default=2, show_default=True,
                     help="Re-asks when an answer is empty, a refusal or unparseable."),
        click.option("--price", help="USD per million prompt,completion tokens, for models litellm has no price for."),
        click.option("--transport", type=click.Choice(["auto", "litellm", "openai"]), default="auto", show_default=True,
                     help="auto: the openai SDK for OpenAI-compatible providers (faster), litellm for the rest."),
        click.option("--draw", type=int, default=0, show_default=True,
                     help="A fresh draw of samples: a different number asks again instead of reusing cached answers."),
        click.option("--batch", is_flag=True,
                     help="Ask through the provider's batch API (OpenAI-compatible providers): about half the price, "
                          "answers within 24 h; same cache and records as online. Ctrl-C and --resume pick the "
                          "submitted batch up again instead of paying twice."),
        click.option("--batch-poll", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     help="With --batch: seconds between checks on the batch."),
        click.option("--batch-retry", type=click.Choice(["online", "batch"]), default="online", show_default=True,
                     help="With --batch: ask lines the batch did not answer online, or in a follow-up batch (at most "
                          "3 batches per request, then online)."),
        click.option("--dry-run", is_flag=True, help="Print requests, tokens and price (online and --batch); send nothing."),
        click.option("--resume", is_flag=True, help="Continue the latest unfinished version of the set."),
        click.option("--resume-version", type=int, help="With --resume: the version number to continue."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--wait", is_flag=True, help="If another run is writing the same set, wait for it (then reuse "
                                                  "its answers) instead of stopping."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def make_client(root: Path, values: dict[str, Any], *, split_samples: bool | None = None,
                on_spend: Callable[[int, float | None], None] | None = None):
    """The LLM client the options describe, with the cache under `root`; `on_spend` is the run
    log's (runlog.CommandRun.on_spend)."""
    from promptgen.llm.cache import LLMCache
    from promptgen.llm.client import LLMClient

    return LLMClient(values["model"], api_base=values["api_base"], api_key_env=values["api_key_env"],
                     cache=LLMCache(cache_dir(root) / "llm"), concurrency=values["concurrency"],
                     timeout=values["timeout"], max_attempts=values["max_attempts"], backoff=values["backoff"],
                     price=parse_price(values["price"]), split_samples=split_samples, transport=values["transport"],
                     progress=not values["no_progress"], batch=values["batch"], batch_poll=values["batch_poll"],
                     batch_retry=values["batch_retry"], on_spend=on_spend)
