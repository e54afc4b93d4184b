"""The LLM client against a real local HTTP server: retries, Retry-After, timeouts, caching,
n-sampling, concurrency bound, cost accounting, credentials. Both transports are exercised."""

from __future__ import annotations

import time

import pytest

from promptgen.errors import PromptgenError
from promptgen.llm.cache import LLMCache
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed
from promptgen.testing.fake_server import Fault

MESSAGES = [{"role": "user", "content": "Describe what a tench looks like"}]
SAMPLING = {"temperature": 0.99, "max_tokens": 50, "n": 4, "stop": ["."]}


def make_client(server, tmp_path, **kwargs) -> LLMClient:
    options = dict(api_base=server.url, cache=LLMCache(tmp_path / "llm"), backoff=0.01, max_backoff=0.05,
                   timeout=5.0, progress=False)
    options.update(kwargs)
    return LLMClient(kwargs.pop("model", "openai/test"), **{k: v for k, v in options.items() if k != "model"})


def ask(client: LLMClient, requests: list[LLMRequest]):
    answers, failures = {}, {}
    stats = client.run(requests, lambda r, resp: answers.__setitem__(resp.key, resp) or [],
                       lambda r, exc: failures.__setitem__(exc.key, exc))
    return answers, failures, stats


@pytest.mark.parametrize("transport", ["openai", "litellm"])
def test_one_request_carries_n_samples_and_a_rerun_costs_nothing(fake_llm, tmp_path, transport):
    client = make_client(fake_llm, tmp_path, transport=transport)
    requests = client.plan(MESSAGES, SAMPLING)
    assert len(requests) == 1 and requests[0].n == 4
    answers, failures, stats = ask(client, requests)
    assert not failures and stats.sent == 1 and fake_llm.request_count == 1
    (response,) = answers.values()
    assert len(response.choices) == 4 and len({c["text"] for c in response.choices}) == 4
    assert all("." not in c["text"] for c in response.choices), "stop '.' must reach the server"
    body = fake_llm.state.requests[0]
    assert body["n"] == 4 and body["temperature"] == 0.99 and body["max_tokens"] == 50

    again = make_client(fake_llm, tmp_path, transport=transport)
    answers2, _, stats2 = ask(again, again.plan(MESSAGES, SAMPLING))
    assert fake_llm.request_count == 1, "a cached request must not be sent again"
    assert stats2.cache_hits == 1 and stats2.sent == 0
    assert list(answers2.values())[0].choices == response.choices


def test_samples_split_into_requests_when_the_provider_has_no_n(tmp_path):
    from promptgen.testing.fake_server import FakeLLMServer

    with FakeLLMServer(supports_n=False) as server:
        client = make_client(server, tmp_path, split_samples=True)
        requests = client.plan(MESSAGES, SAMPLING)
        assert [r.sample_index for r in requests] == [0, 1, 2, 3]
        answers, failures, _ = ask(client, requests)
        assert not failures and server.request_count == 4
        texts = {resp.choices[0]["text"] for resp in answers.values()}
        assert len(texts) == 4, "each sample is its own request with its own cache key and answer"
        assert len({client.key(r) for r in requests}) == 4


def test_429_waits_at_least_retry_after_then_succeeds(fake_llm, tmp_path):
    fake_llm.configure(faults=[Fault("429", times=1, retry_after=1.0)])
    client = make_client(fake_llm, tmp_path)
    started = time.perf_counter()
    answers, failures, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    elapsed = time.perf_counter() - started
    assert not failures and len(answers) == 1
    assert fake_llm.request_count == 2 and stats.http_attempts == 2
    assert elapsed >= 1.0, f"Retry-After: 1 was not honoured (retried after {elapsed:.2f}s)"


@pytest.mark.parametrize("kind", ["500", "malformed", "timeout"])
def test_transient_failures_are_retried(fake_llm, tmp_path, kind):
    fake_llm.configure(faults=[Fault(kind, times=2, delay=2.0)])
    client = make_client(fake_llm, tmp_path, timeout=0.5)
    answers, failures, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    assert not failures and len(answers) == 1
    assert stats.http_attempts == 3 and fake_llm.request_count == 3


def test_litellm_transport_retries_too(fake_llm, tmp_path):
    fake_llm.configure(faults=[Fault("429", times=1, retry_after=0.2), Fault("500", times=1)])
    client = make_client(fake_llm, tmp_path, transport="litellm")
    answers, failures, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    assert not failures and fake_llm.request_count == 3 and stats.http_attempts == 3


def test_persistent_failure_gives_up_after_max_attempts_and_is_not_cached(fake_llm, tmp_path):
    fake_llm.configure(faults=[Fault("500", times=-1)])
    client = make_client(fake_llm, tmp_path, max_attempts=3)
    answers, failures, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    assert not answers and len(failures) == 1
    assert fake_llm.request_count == 3 and stats.failed == 1
    (failure,) = failures.values()
    assert isinstance(failure, LLMRequestFailed) and "InternalServerError" in failure.error
    assert not any((tmp_path / "llm").rglob("*.json")), "a failure must not be cached"


def test_authentication_error_stops_the_run(fake_llm, tmp_path):
    fake_llm.configure(faults=[Fault("401", times=-1)])
    client = make_client(fake_llm, tmp_path)
    requests = [LLMRequest.make([{"role": "user", "content": f"q{i}"}], {"max_tokens": 5}) for i in range(40)]
    with pytest.raises(PromptgenError, match="refused"):
        ask(client, requests)
    assert fake_llm.request_count < 40, "a fatal error must stop the run instead of failing every request"


def test_concurrency_is_bounded(fake_llm, tmp_path):
    fake_llm.configure(latency=0.05)
    client = make_client(fake_llm, tmp_path, concurrency=4)
    requests = [LLMRequest.make([{"role": "user", "content": f"question {i}"}], {"max_tokens": 5}) for i in range(24)]
    started = time.perf_counter()
    answers, failures, _ = ask(client, requests)
    assert len(answers) == 24 and not failures
    assert fake_llm.state.max_in_flight == 4
    assert time.perf_counter() - started >= 24 / 4 * 0.05


def test_cost_from_litellm_prices_for_a_known_model(fake_llm, tmp_path):
    from promptgen.llm.client import import_litellm

    client = make_client(fake_llm, tmp_path, model="openai/gpt-4o-mini")
    answers, _, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    (response,) = answers.values()
    prompt_cost, completion_cost = import_litellm().cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=response.usage["prompt_tokens"],
        completion_tokens=response.usage["completion_tokens"])
    assert response.cost_usd == pytest.approx(prompt_cost + completion_cost)
    assert response.cost_usd > 0 and stats.cost_usd == pytest.approx(response.cost_usd)


def test_unknown_price_is_none_and_price_option_sets_it(fake_llm, tmp_path):
    client = make_client(fake_llm, tmp_path, model="openai/no-such-model-xyz")
    answers, _, stats = ask(client, client.plan(MESSAGES, SAMPLING))
    assert list(answers.values())[0].cost_usd is None and stats.cost_usd is None
    priced = make_client(fake_llm, tmp_path / "other", model="openai/no-such-model-xyz", price=(1.0, 2.0))
    answers, _, _ = ask(priced, priced.plan(MESSAGES, SAMPLING))
    response = list(answers.values())[0]
    expected = (response.usage["prompt_tokens"] * 1.0 + response.usage["completion_tokens"] * 2.0) / 1e6
    assert response.cost_usd == pytest.approx(expected)


def test_estimate_counts_uncached_requests_and_prices_them(fake_llm, tmp_path):
    client = make_client(fake_llm, tmp_path, model="openai/gpt-4o-mini")
    requests = [LLMRequest.make([{"role": "user", "content": f"q{i}"}], {"max_tokens": 50, "n": 10}) for i in range(3)]
    ask(client, requests[:1])
    estimate = client.estimate(requests)
    assert estimate.requests == 2 and estimate.cached == 1
    assert estimate.max_completion_tokens == 2 * 50 * 10
    assert estimate.cost_usd is not None and estimate.cost_usd > 0
    assert fake_llm.request_count == 1, "estimating must not send anything"


def test_missing_key_names_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = LLMClient("openai/gpt-4o-mini", cache=LLMCache(tmp_path), progress=False)
    with pytest.raises(PromptgenError, match="OPENAI_API_KEY"):
        client.check_credentials()
    named = LLMClient("openai/test", api_base="http://127.0.0.1:9/v1", api_key_env="MY_LLM_KEY", progress=False)
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    with pytest.raises(PromptgenError, match="MY_LLM_KEY"):
        named.check_credentials()


def test_api_key_never_reaches_errors_or_cache(fake_llm, tmp_path, monkeypatch):
    # a credential that matches no key pattern, in a variable whose name looks like no key: only
    # the client's knowledge of what it sent can hide it
    secret = "gw-credential-0123456789abcdef"
    monkeypatch.setenv("MY_GATEWAY", secret)
    fake_llm.configure(faults=[Fault("echo_auth", times=-1)])
    client = make_client(fake_llm, tmp_path, max_attempts=2, api_key_env="MY_GATEWAY")
    _, failures, _ = ask(client, client.plan(MESSAGES, SAMPLING))
    (failure,) = failures.values()
    assert fake_llm.state.auth_tokens == {secret}, "the named key is the one sent"
    assert "upstream rejected credential" in failure.error
    assert secret not in failure.error and "[REDACTED]" in failure.error
    fake_llm.configure(faults=[])
    ask(client, client.plan(MESSAGES, SAMPLING))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="ignore"), f"key written to {path}"


def test_provider_key_is_not_sent_to_another_host(fake_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key-0123456789")
    client = make_client(fake_llm, tmp_path)
    ask(client, client.plan(MESSAGES, SAMPLING))
    assert fake_llm.state.auth_tokens == {"no-key"}


def test_api_key_env_must_be_a_name_and_is_never_echoed(tmp_path):
    pasted = "AIzaSyD-this-is-a-pasted-key-123"
    client = LLMClient("openai/test", api_base="http://127.0.0.1:9/v1", api_key_env=pasted, progress=False)
    with pytest.raises(PromptgenError) as info:
        client.check_credentials()
    assert pasted not in str(info.value) and "NAME" in str(info.value)


def test_unreadable_retry_after_falls_back_to_backoff(fake_llm, tmp_path):
    from promptgen.llm.client import _retry_after_seconds

    class Fake429(Exception):
        litellm_response_headers = {"retry-after": "soon"}

    assert _retry_after_seconds(Fake429()) is None
    client = make_client(fake_llm, tmp_path)
    assert 0 < client._wait(1, Fake429()) < 1


def test_reasks_change_the_request_so_the_answer_can_change(fake_llm, tmp_path):
    client = make_client(fake_llm, tmp_path)
    (first,) = client.plan(MESSAGES, {"temperature": 0, "max_tokens": 100, "n": 1})
    again = client.retry(first)
    assert again.param_dict["temperature"] > 0 and again.param_dict["seed"] != first.param_dict.get("seed")
    assert client.key(again) != client.key(first)
    (drawn,) = client.plan(MESSAGES, {"temperature": 0.99, "n": 4}, draw=1)
    (plain,) = client.plan(MESSAGES, {"temperature": 0.99, "n": 4})
    assert drawn.param_dict.get("seed") != plain.param_dict.get("seed")
    answers, _, _ = ask(client, [plain, drawn])
    texts = [tuple(c["text"] for c in answers[client.key(r)].choices) for r in (plain, drawn)]
    assert texts[0] != texts[1], "a new draw must be able to give new answers"


def test_corrupt_cache_entry_is_ignored_and_refetched(fake_llm, tmp_path):
    client = make_client(fake_llm, tmp_path)
    requests = client.plan(MESSAGES, SAMPLING)
    ask(client, requests)
    path = client.cache.path(client.key(requests[0]))
    path.write_text('{"key": "truncated', encoding="utf-8")
    answers, _, stats = ask(client, requests)
    assert stats.sent == 1 and fake_llm.request_count == 2 and len(answers) == 1


def test_follow_up_requests_join_the_queue_and_a_crashing_callback_stops_the_run(fake_llm, tmp_path):
    client = make_client(fake_llm, tmp_path, concurrency=2)
    seen = []

    def ask_twice(request, response):
        seen.append(request.attempt)
        return [client.retry(request)] if request.attempt == 0 else []

    requests = [LLMRequest.make([{"role": "user", "content": f"q{i}"}], {"max_tokens": 5}) for i in range(3)]
    stats = client.run(requests, ask_twice)
    assert sorted(seen) == [0, 0, 0, 1, 1, 1] and stats.requests == 6 and fake_llm.request_count == 6

    def broken(request, response):
        raise ValueError("bug in a callback")

    with pytest.raises(ValueError, match="bug in a callback"):
        make_client(fake_llm, tmp_path / "b", concurrency=2).run(requests, broken)
