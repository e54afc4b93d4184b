"""The online run: `concurrency` workers answering one queue of requests, and the callback
contract that batch mode (promptgen.llm.batch) keeps too.

A caller hands over requests with `on_answer` (and optionally `on_failure`); either may return
follow-up requests (e.g. a retry after an unusable answer), which join the run. Callbacks run on
the event loop's thread, one at a time.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Awaitable, Callable, Iterable

from promptgen.llm.requests import LLMRequest, LLMRequestFailed, LLMResponse, RunStats

__all__ = ["OnAnswer", "OnFailure", "hand_over", "run_pool"]

OnAnswer = Callable[[LLMRequest, LLMResponse], Iterable[LLMRequest] | None]
OnFailure = Callable[[LLMRequest, LLMRequestFailed], Iterable[LLMRequest] | None]


def hand_over(request: LLMRequest, outcome: LLMResponse | LLMRequestFailed, on_answer: OnAnswer,
              on_failure: OnFailure | None, stats: RunStats) -> list[LLMRequest]:
    """Give `outcome` to the caller's callback; the follow-ups it returns, counted in `stats` as
    requests (and a failure as failed)."""
    if isinstance(outcome, LLMRequestFailed):
        stats.failed += 1
        follow_ups = on_failure(request, outcome) if on_failure else None
    else:
        follow_ups = on_answer(request, outcome)
    follow_ups = list(follow_ups or [])
    stats.requests += len(follow_ups)
    return follow_ups


async def run_pool(requests: list[LLMRequest], complete: Callable[[LLMRequest, RunStats], Awaitable[LLMResponse]],
                   on_answer: OnAnswer, on_failure: OnFailure | None, stats: RunStats, *, concurrency: int,
                   progress: bool, description: str) -> None:
    """Answer `requests` (and their follow-ups) with `complete`, `concurrency` at a time.

    The workers share one queue (O(1) per request, however long the queue); follow-ups join the
    queue before their parent is marked done, so `join` waits for them. An exception other than
    LLMRequestFailed (FatalError, or a bug in a callback) stops every worker and is raised."""
    from tqdm import tqdm

    queue: asyncio.Queue[LLMRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    stats.requests += len(requests)
    fatal: list[Exception] = []
    stopped = asyncio.Event()
    bar = tqdm(total=len(requests), desc=description, unit="req", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)

    def settle(request: LLMRequest, outcome: LLMResponse | LLMRequestFailed) -> None:
        bar.update(1)
        follow_ups = hand_over(request, outcome, on_answer, on_failure, stats)
        for follow_up in follow_ups:
            queue.put_nowait(follow_up)
        if follow_ups:
            bar.total += len(follow_ups)
        if progress:
            cost = f"${stats.cost_usd:.4f}" if stats.cost_usd is not None else "?"
            bar.set_postfix(cached=stats.cache_hits, failed=stats.failed, cost=cost, refresh=False)

    async def worker() -> None:
        while True:
            request = await queue.get()
            try:
                try:
                    outcome: LLMResponse | LLMRequestFailed = await complete(request, stats)
                except LLMRequestFailed as exc:
                    outcome = exc
                settle(request, outcome)  # before task_done, so follow-ups are queued before join can end
            except Exception as exc:  # FatalError, or a bug in a callback: stop everything, report it
                fatal.append(exc)
                stopped.set()
                return
            finally:
                queue.task_done()

    async def all_done() -> None:
        await queue.join()
        stopped.set()

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    watcher = asyncio.create_task(all_done())
    try:
        await stopped.wait()
        if fatal:
            raise fatal[0]
    finally:
        for task in workers + [watcher]:
            task.cancel()
        await asyncio.gather(*workers, watcher, return_exceptions=True)
        bar.close()
