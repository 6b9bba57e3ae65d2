"""A bounded loopback load test on the real engine: 200 requests, 64 at a time, some clients
hanging up mid-request. Every request that was not abandoned gets a complete, correct answer,
and the engine ends with nothing in flight."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from .conftest import API_KEY, wait_until
from .helpers import LONG_DOCS, metric_value

pytestmark = pytest.mark.engine

TOTAL_REQUESTS = 200
CONCURRENCY = 64
ABANDON_EVERY = 8  # every 8th client hangs up after a short random wait
TIME_LIMIT_S = 900  # the whole run is bounded; it normally takes well under a minute here

rng = random.Random(1234)
WORDS = "search ranking neural retrieval passage query capital river mountain history science".split()
TEMPLATES = [
    {
        "query": f"query {t}: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
        "documents": [" ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(rng.randint(3, 20))],
    }
    for t in range(8)
]


def by_index(response: httpx.Response) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def test_load_with_hang_ups(server, engine):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        expected = [by_index(c.post("/v1/rerank", json=t)) for t in TEMPLATES]

    async def run() -> tuple[list[tuple[int, httpx.Response]], int]:
        limits = httpx.Limits(max_connections=CONCURRENCY + 8)
        gate = asyncio.Semaphore(CONCURRENCY)
        answered: list[tuple[int, httpx.Response]] = []
        abandoned = 0

        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as client:

            async def one(i: int) -> None:
                nonlocal abandoned
                async with gate:
                    if i % ABANDON_EVERY == 0:
                        body = {"query": f"abandoned {i}", "documents": LONG_DOCS[:60]}
                        # A fresh connection, closed mid-request when the wait runs out.
                        async with httpx.AsyncClient(base_url=server.url, headers=headers) as impatient:
                            try:
                                await asyncio.wait_for(impatient.post("/v1/rerank", json=body), rng.uniform(0.05, 0.4))
                            except TimeoutError:
                                abandoned += 1
                                return
                        return
                    template = i % len(TEMPLATES)
                    answered.append((template, await client.post("/v1/rerank", json=TEMPLATES[template])))

            async with asyncio.timeout(TIME_LIMIT_S):
                await asyncio.gather(*(one(i) for i in range(TOTAL_REQUESTS)))
        return answered, abandoned

    answered, abandoned = asyncio.run(run())
    assert len(answered) == TOTAL_REQUESTS - TOTAL_REQUESTS // ABANDON_EVERY
    assert abandoned > 0, "no client hung up mid-request: the test did not test hang-ups"
    for template, response in answered:
        assert response.status_code == 200, response.text
        got, want = by_index(response), expected[template]
        assert got.keys() == want.keys()
        assert max(abs(got[i] - want[i]) for i in got) <= 1e-5
    # Nothing left behind: no engine request, no admitted pair, no in-flight request.
    assert wait_until(lambda: engine.llm.get_num_unfinished_requests() == 0, timeout=60)
    assert server.service.pairs_in_flight == 0
    metrics = httpx.get(server.url + "/metrics", headers=headers).text
    assert metric_value(metrics, "rerank_requests_in_flight", model="qwen3-reranker-test") == 0
    assert metric_value(metrics, "rerank_pairs_in_flight") == 0
