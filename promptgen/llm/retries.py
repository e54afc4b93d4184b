"""When to ask again, and how long to wait first.

Errors sort into three kinds: 'retry' (429, 5xx, timeouts, dropped connections, a malformed body),
'fail' (this request only: too long, filtered) and 'fatal' (every request would fail the same way:
a bad key, an unknown model). Retries back off exponentially with jitter, and never come sooner
than the server's Retry-After (capped).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from promptgen.messages import shorten
from promptgen.redact import redact

__all__ = ["RetryPolicy", "classify", "retry_after_seconds"]

# the logger retries have always been reported under (`-v` shows the name)
log = logging.getLogger("promptgen.llm.client")


def classify(exc: BaseException) -> str:
    """'retry', 'fail' (this request only) or 'fatal' (every request would fail the same way).
    litellm's exceptions subclass openai's, so one table serves both transports."""
    import openai

    if getattr(exc, "code", None) in ("context_length_exceeded", "content_filter") or \
            type(exc).__name__ in ("ContextWindowExceededError", "ContentPolicyViolationError"):
        return "fail"
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                        openai.BadRequestError, openai.UnprocessableEntityError)):
        return "fatal"
    if isinstance(exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                        openai.InternalServerError, openai.APIResponseValidationError, json.JSONDecodeError,
                        asyncio.TimeoutError, ConnectionError)):
        return "retry"  # a truncated or malformed body is a transport fault: ask again
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status in (408, 409, 429)):
        return "retry"
    if type(exc).__name__ in ("ServiceUnavailableError", "BadGatewayError", "Timeout", "APIConnectionError"):
        return "retry"
    return "fail"


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait the server asked for (Retry-After-Ms or Retry-After, in seconds or as a date)."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return float(value) / 1000
        value = headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an unreadable header: fall back to our own backoff
    return max(0.0, when.timestamp() - time.time()) if when else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often one call is tried and how long each retry waits (seconds)."""

    max_attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_retry_after: float = 300.0

    def wait(self, attempt: int, exc: BaseException) -> float:
        """Exponential backoff with jitter; never sooner than the server's Retry-After (capped)."""
        backoff = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) + random.uniform(0, self.backoff)
        retry_after = retry_after_seconds(exc)
        return backoff if retry_after is None else max(backoff, min(retry_after, self.max_retry_after))

    def retrying(self, retry_on: Callable[[BaseException], bool] | None = None) -> Any:
        """tenacity's retry loop for one call: `max_attempts` tries on retryable errors (or those
        `retry_on` accepts), with backoff."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=lambda state: self.wait(state.attempt_number, state.outcome.exception()),
            retry=retry_if_exception(retry_on or (lambda exc: classify(exc) == "retry")),
            before_sleep=lambda state: log.info("retrying after %s",
                                                shorten(redact(str(state.outcome.exception())), 200)),
            reraise=False)
