"""Who answers: a model's provider, what it supports, and the API key to send it.

litellm knows most providers (imported on first need: the import takes seconds). Models named
`openai/...`, `hosted_vllm/...` or `lm_studio/...` are answered without it, so that a rerun served
wholly from the cache never imports it. Keys come only from the environment and are registered
for redaction the moment they are read; nothing here writes or prints one.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from promptgen.errors import PromptgenError
from promptgen.redact import register_secret

__all__ = ["OPENAI_COMPATIBLE", "NO_KEY_HINT", "Provider", "import_litellm"]

# Providers that speak the OpenAI chat API; for them the openai SDK is called directly (litellm
# resolves, prices and validates; its own call path costs ~14 ms of CPU per request, which caps
# concurrent throughput on small machines; see benchmarks/README.md).
OPENAI_COMPATIBLE = ("openai", "hosted_vllm", "lm_studio")

NO_KEY_HINT = ("export {var}=... (promptgen never takes keys as arguments); or use --api-base URL for a local "
               "OpenAI-compatible server, or --source wordnet to run without an LLM")


def import_litellm() -> Any:
    """litellm, imported on first use (it takes seconds) and without reaching for the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    return litellm


class Provider:
    """The provider behind `model` (a litellm model string), reached at `api_base` if given, with
    the key in the environment variable `api_key_env` if given (else the provider's usual one)."""

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str | None = None) -> None:
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self._litellm: Any = None
        self._name: str | None | bool = False  # False: not looked up yet

    @property
    def litellm(self) -> Any:
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    def explicit_openai_compatible(self) -> bool:
        """`openai/...`-style names: provider and parameters are known without asking litellm, whose
        import takes seconds (a rerun answered from the cache then never imports it)."""
        return self.model.split("/", 1)[0] in OPENAI_COMPATIBLE and "/" in self.model

    def name(self) -> str | None:
        """litellm's name for the provider; None when litellm does not know the model."""
        if self._name is False:
            if self.explicit_openai_compatible():
                self._name = self.model.split("/", 1)[0]
                return self._name
            try:
                self._name = self.litellm.get_llm_provider(self.model, api_base=self.api_base)[1]
            except Exception:
                self._name = None
        return self._name

    def shown(self) -> str:
        """The provider's name for an error message."""
        return self.name() or "unknown to litellm"

    def openai_compatible(self) -> bool:
        return self.name() in OPENAI_COMPATIBLE

    def bare_model(self) -> str:
        """The model name without its provider prefix, as the provider's own API takes it."""
        provider = self.name()
        return self.model.split("/", 1)[1] if provider and self.model.startswith(provider + "/") else self.model

    def supports(self, param: str) -> bool:
        """Whether the provider takes the OpenAI chat parameter `param` (e.g. "n", "seed")."""
        if self.explicit_openai_compatible() and param in ("n", "seed"):
            return True  # part of the OpenAI chat API that these servers implement
        provider = self.name()
        if provider is None:
            return False
        try:
            params = self.litellm.get_supported_openai_params(model=self.bare_model(),
                                                              custom_llm_provider=provider) or []
        except Exception:
            return False
        return param in params

    def supports_response_schema(self) -> bool:
        """Whether litellm reports that the model takes a JSON-schema `response_format`."""
        try:
            return bool(self.litellm.supports_response_schema(model=self.model, custom_llm_provider=self.name()))
        except Exception:
            return False

    def api_key(self) -> str | None:
        """The key to send, or None to leave it to the provider's library (its usual variable)."""
        if self.api_key_env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
                # never echo it: it may be the key itself, pasted by mistake
                raise PromptgenError("--api-key-env takes the NAME of an environment variable, not a key",
                                     "export MY_KEY=... and pass --api-key-env MY_KEY")
            value = os.environ.get(self.api_key_env)
            if not value:
                raise PromptgenError(f"the environment variable {self.api_key_env} (named by --api-key-env) is not set",
                                     f"export {self.api_key_env}=... before running")
            register_secret(value)
            return value
        if self.api_base:
            # a server named by --api-base gets no key unless --api-key-env names one: the provider's
            # own key (OPENAI_API_KEY) must not travel to another host. The openai client insists on a value.
            return "no-key" if self.openai_compatible() else None
        return None

    def check_credentials(self) -> None:
        """Fail before anything is sent when the provider's key is missing, naming the variable."""
        if self.api_key_env or self.api_base:
            self.api_key()
            return
        if self.name() == "openai" and self.explicit_openai_compatible():
            if not os.environ.get("OPENAI_API_KEY"):
                raise PromptgenError(f"model {self.model!r} needs OPENAI_API_KEY in the environment, and it is not set",
                                     NO_KEY_HINT.format(var="OPENAI_API_KEY"))
            return
        try:
            status = self.litellm.validate_environment(self.model)
        except Exception:
            return
        missing = status.get("missing_keys") or []
        if missing:
            raise PromptgenError(
                f"model {self.model!r} needs {' and '.join(missing)} in the environment, and it is not set",
                NO_KEY_HINT.format(var=missing[0]))
