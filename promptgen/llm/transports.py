"""How one request reaches the provider: two transports, one `send`.

litellm reaches any provider. For OpenAI-compatible ones the openai SDK is called directly:
litellm's own call path costs ~14 ms of CPU per request, which caps concurrent throughput on
small machines (see benchmarks/README.md). Neither retries (the client does, the same way for
both); each returns the chat.completion body, as a dict or as a model with `model_dump()`.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from promptgen.errors import PromptgenError
from promptgen.llm.providers import Provider
from promptgen.llm.requests import LLMRequest

__all__ = ["TRANSPORTS", "Transport", "OpenAITransport", "LiteLLMTransport", "resolve_transport"]

TRANSPORTS = ("auto", "litellm", "openai")


def resolve_transport(choice: str, provider: Provider) -> str:
    """The transport --transport `choice` means for `provider`: 'openai' (the openai SDK, for
    OpenAI-compatible providers) or 'litellm' (everything else)."""
    compatible = provider.openai_compatible()
    if choice == "auto":
        return "openai" if compatible else "litellm"
    if choice == "openai" and not compatible:
        raise PromptgenError(f"--transport openai needs an OpenAI-compatible provider; {provider.model!r} is "
                             f"{provider.shown()}",
                             "use --transport auto or litellm for this model")
    return choice


class Transport(Protocol):
    async def send(self, request: LLMRequest) -> Any: ...


class OpenAITransport:
    """The openai SDK. Its client (made on first use) also serves the batch API's files and batches."""

    def __init__(self, provider: Provider, timeout: float) -> None:
        self.provider = provider
        self.timeout = timeout
        self._sdk: Any = None

    def body(self, request: LLMRequest) -> dict:
        """The /chat/completions body this transport sends (and a batch line carries)."""
        return {"model": self.provider.bare_model(), "messages": request.message_list, **request.param_dict}

    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            self._sdk = self._make_sdk()
        return self._sdk

    def _make_sdk(self) -> Any:
        import openai

        try:
            # aiohttp underneath: its connection pool stays cheap with dozens of connections in flight,
            # where httpx's checks every idle connection on each request
            http_client = openai.DefaultAioHttpClient(timeout=self.timeout)
        except Exception:
            http_client = None
        return openai.AsyncOpenAI(base_url=self.provider.api_base,
                                  api_key=self.provider.api_key() or os.environ.get("OPENAI_API_KEY"),
                                  max_retries=0, timeout=self.timeout, http_client=http_client)

    async def aclose(self) -> None:
        """Close the SDK client, if one was made (the next use makes a new one)."""
        if self._sdk is not None:
            sdk, self._sdk = self._sdk, None
            await sdk.close()

    async def send(self, request: LLMRequest) -> Any:
        # the SDK's documented raw call: same HTTP, errors and headers, without building typed
        # request and response models (a few ms of CPU per request)
        return await self.sdk.post("/chat/completions", body=self.body(request), cast_to=object,
                                   options={"timeout": self.timeout})


class LiteLLMTransport:
    """litellm's `acompletion`, for every provider litellm knows."""

    def __init__(self, provider: Provider, timeout: float) -> None:
        self.provider = provider
        self.timeout = timeout

    async def send(self, request: LLMRequest) -> Any:
        kwargs: dict[str, Any] = dict(model=self.provider.model, messages=request.message_list, timeout=self.timeout,
                                      num_retries=0, max_retries=0, **request.param_dict)
        if self.provider.api_base:
            kwargs["api_base"] = self.provider.api_base
        api_key = self.provider.api_key()
        if api_key:
            kwargs["api_key"] = api_key
        return await self.provider.litellm.acompletion(**kwargs)
