"""The score cache without the engine: its default, and the in-flight bookkeeping of score_through
(server/rerank/score_cache.py). On the real engine and a real Redis: tests/test_score_cache.py."""

from __future__ import annotations

import pytest

from server.core.settings import Settings


def test_the_cache_is_on_by_default():
    assert Settings(model="models/tiny").score_cache_size == 200_000


def test_a_pair_whose_first_scorer_fails_is_scored_by_the_one_that_waited():
    """The in-flight bookkeeping alone (no engine): the second call waits for the first's pair;
    the first fails (a hang-up, an engine error); the second scores it itself, once."""
    import asyncio

    from server.rerank.score_cache import ScoreCache, score_through

    async def main() -> None:
        cache = ScoreCache(100, b"identity")
        first_started, waiting = asyncio.Event(), asyncio.Event()
        calls: list[str] = []

        async def failing(prompts, priorities):
            calls.append("first")
            first_started.set()
            await waiting.wait()
            raise RuntimeError("the first caller's client hung up")

        async def working(prompts, priorities):
            calls.append("second")
            return [0.25] * len(prompts), 0

        prompt = [[1, 2, 3, 4]]
        first = asyncio.create_task(score_through(cache, prompt, None, failing))
        await first_started.wait()
        second = asyncio.create_task(score_through(cache, prompt, None, working))
        while cache._inflight.get(cache.key(prompt[0])) is None:  # the second now waits
            await asyncio.sleep(0)
        waiting.set()
        with pytest.raises(RuntimeError):
            await first
        assert await second == ([0.25], 1, 4, 0)  # the engine scored it: 1 pair, 4 tokens, none from its prefix cache
        assert calls == ["first", "second"]
        assert await score_through(cache, prompt, None, failing) == ([0.25], 0, 0, 0)  # cached: the engine did nothing

    asyncio.run(main())
