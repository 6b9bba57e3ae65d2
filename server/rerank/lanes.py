"""Priority lanes in front of the engine: bulk pairs wait here while interactive ones are scored.

vLLM's priority queue (server/rerank/serving.py `Pairs.engine_priorities`) puts interactive pairs first,
but an engine step carries every waiting pair its token budget holds, so an interactive request
still waits for the step in progress and then shares its own step with bulk pairs. Measured on the
tiny model on 2 cores, 6 bulk clients of 64 documents: interactive p50 190 ms with the priority
queue alone, and the same with bulk held to two requests in the engine (docs/performance.md).

So bulk requests enter the engine through a gate: while any interactive pair of this process is in
the engine, no bulk pair goes in, and at most one step's worth of bulk tokens is in the engine at a
time (a bulk request larger than that goes in alone). An interactive request then waits for at
most the bulk step in progress and is scored in a step of its own. A bulk request that has waited
its deferral (priority x --priority-delay-ms) goes in regardless: bulk ages, never starves.
With several API processes each gates its own requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class EngineLanes:
    def __init__(self, bulk_tokens_limit: int) -> None:
        self.bulk_tokens_limit = bulk_tokens_limit  # bulk tokens in the engine at once (one step's)
        self.interactive_pairs = 0  # interactive pairs in the engine now
        self.bulk_tokens = 0  # bulk tokens in the engine now
        self.waiting = 0  # bulk requests at the gate now
        self._changed = asyncio.Condition()

    def _bulk_may_enter(self, tokens: int) -> bool:
        if self.interactive_pairs:
            return False
        return self.bulk_tokens == 0 or self.bulk_tokens + tokens <= self.bulk_tokens_limit

    @asynccontextmanager
    async def interactive(self, pairs: int) -> AsyncIterator[None]:
        """Around an interactive request's engine call: bulk waits meanwhile."""
        self.interactive_pairs += pairs
        try:
            yield
        finally:
            self.interactive_pairs -= pairs
            await self._notify()

    @asynccontextmanager
    async def bulk(self, tokens: int, max_wait: float) -> AsyncIterator[None]:
        """Around a bulk request's engine call: it enters when the gate lets it, or after `max_wait` s."""
        self.waiting += 1
        try:
            async with asyncio.timeout(max_wait), self._changed:
                await self._changed.wait_for(lambda: self._bulk_may_enter(tokens))
        except TimeoutError:
            pass  # it has aged: in it goes
        finally:
            self.waiting -= 1
        self.bulk_tokens += tokens
        try:
            yield
        finally:
            self.bulk_tokens -= tokens
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
