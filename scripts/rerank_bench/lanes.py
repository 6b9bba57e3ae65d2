"""Priority lanes under a bulk flood (`bench.py lanes`): one interactive client sends small requests
one after another while bulk clients send large ones without pause, both dialects mixed.

Phases, each on the same server: the interactive client alone; under the flood with every request
at priority 0 (no lanes); under the flood with the bulk clients at `--bulk-priority` (lanes). Each
reports the interactive latency (p50/p90/p99), its refusals, and the bulk pairs/s, 429s and
transport errors or 5xx (which must be none). Every request is new (seeded, never repeated), so the
score cache answers none.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

from rerank_bench.workloads import WORDS

QUERY_WORDS, DOC_WORDS = 12, 64


@dataclass
class Lane:
    """What one kind of client saw in one phase."""

    latencies: list[float] = field(default_factory=list)  # answered requests only
    answered: int = 0
    pairs: int = 0
    refused: int = 0  # 429
    failed: int = 0  # transport errors and 5xx

    def pct(self, q: float) -> float | None:
        data = sorted(self.latencies)
        return round(data[min(len(data) - 1, int(q / 100 * len(data)))] * 1000, 1) if data else None

    def summary(self, seconds: float) -> dict:
        return {
            "answered": self.answered,
            "refused_429": self.refused,
            "failed": self.failed,
            "p50_ms": self.pct(50),
            "p90_ms": self.pct(90),
            "p99_ms": self.pct(99),
            "pairs_per_s": round(self.pairs / seconds, 1),
        }


def request(rng: random.Random, docs: int, priority: int | None, tei: bool) -> dict:
    query = " ".join(rng.choices(WORDS, k=QUERY_WORDS))
    texts = [" ".join(rng.choices(WORDS, k=DOC_WORDS)) for _ in range(docs)]
    body: dict = {"query": query, "texts": texts} if tei else {"query": query, "documents": texts}
    if not tei:
        body["return_documents"] = False
    if priority is not None:
        body["priority"] = priority
    return body


async def post(session, url: str, body: dict, lane: Lane) -> int:
    """Send one request; its status (0: a transport error) is counted in `lane`."""
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(url + "/v1/rerank", data=json.dumps(body).encode()) as response:
            await response.read()
            status = response.status
    except aiohttp.ClientError:
        status = 0
    if status == 200:
        lane.latencies.append(time.perf_counter() - started)
        lane.answered += 1
        lane.pairs += len(body.get("documents") or body["texts"])
    elif status == 429:
        lane.refused += 1
    else:
        lane.failed += 1
    return status


async def phase(
    url: str,
    seed: int,
    interactive_requests: int,
    interactive_docs: int,
    bulk_clients: int,
    bulk_docs: int,
    bulk_priority: int | None,
) -> dict:
    """The interactive client's `interactive_requests`, one after another, while `bulk_clients` flood
    (none: the interactive client alone); the bulk clients stop when it is done."""
    import aiohttp

    rng = random.Random(seed)
    interactive, bulk = Lane(), Lane()
    done = asyncio.Event()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=bulk_clients + 1)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def flood(k: int) -> None:
            while not done.is_set():
                status = await post(session, url, request(rng, bulk_docs, bulk_priority, tei=k % 2 == 1), bulk)
                if status == 429 and not done.is_set():
                    await asyncio.sleep(0.05)  # a 429 says Retry-After; a real client backs off a little

        async def user() -> None:
            for i in range(interactive_requests):
                await post(session, url, request(rng, interactive_docs, None, tei=i % 2 == 1), interactive)
            done.set()

        flooders = [asyncio.create_task(flood(k)) for k in range(bulk_clients)]
        if bulk_clients:  # the flood fills the engine first
            await asyncio.sleep(2)
        started = time.perf_counter()
        await user()
        seconds = time.perf_counter() - started
        await asyncio.gather(*flooders)
    return {"seconds": round(seconds, 1), "interactive": interactive.summary(seconds), "bulk": bulk.summary(seconds)}


def medians(results: list[dict]) -> dict:
    """Each number's median over rounds, per client kind."""
    out: dict = {}
    for kind in ("interactive", "bulk"):
        keys = results[0][kind].keys()
        values = {key: sorted(r[kind][key] for r in results if r[kind][key] is not None) for key in keys}
        out[kind] = {key: v[len(v) // 2] if v else None for key, v in values.items()}
    return out
