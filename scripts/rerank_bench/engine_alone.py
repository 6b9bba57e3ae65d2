"""The engine alone: the limit a rerank server's throughput is measured against.

vLLM's engine in this process, started with this server's engine arguments for the flags given
(server/engine/engine_args.py), scoring the very pairs `vllm bench serve` sends (its random-rerank data,
same seed, same tokenizer) as this server's prompts, built beforehand: no HTTP, no client, no
JSON, no admission. Requests of one query and `docs` documents go in `concurrency` at a time, as
the load generator sends them, each as `VllmEngine.score` submits a request's pairs.

Run by `scripts/bench.py curves` as a long-lived process beside the servers: it reads one JSON
object per line on stdin ({"docs", "input_len", "requests", "seed", "concurrency"}) and answers
each with one line on stdout, RESULT and JSON (requests/s, documents/s, p50/p99 in ms).

    python scripts/rerank_bench/engine_alone.py --model models/tiny [server flags...]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the server package, at the repo's root

READY = "engine-alone ready"
RESULT = "engine-alone result: "  # what starts an answer's line (vLLM logs to stdout too)


def bench_pairs(tokenizer: Any, docs: int, input_len: int, requests: int, seed: int) -> list[tuple[str, list[str]]]:
    """(query, documents) of each request, exactly as `vllm bench serve --dataset-name random-rerank
    --random-input-len INPUT_LEN --random-batch-size DOCS --num-prompts REQUESTS*DOCS --seed SEED` sends them."""
    from vllm.benchmarks.datasets import RandomDatasetForReranking

    samples = RandomDatasetForReranking(random_seed=seed).sample(
        tokenizer=tokenizer, num_requests=requests * docs, input_len=input_len, batchsize=docs, range_ratio=0.0
    )
    return [(sample.prompt[0], list(sample.prompt[1:])) for sample in samples]


async def measure(engine: Any, prompts: list[list[list[int]]], concurrency: int) -> dict[str, float]:
    """Every request's pairs through engine.score, `concurrency` requests at a time (a closed loop)."""
    queue = list(enumerate(prompts))
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            i, token_ids = queue.pop(0)
            started = time.perf_counter()
            await engine.score(token_ids, f"alone-{time.monotonic_ns()}-{i}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": len(prompts) / elapsed,
        "docs_per_s": sum(map(len, prompts)) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }


async def serve(argv: list[str]) -> None:
    from server.cli import settings_from_args
    from server.core.rerank_job import RerankJob
    from server.engine.model_kind import model_info
    from server.engine.vllm_engine import open_engine
    from server.rerank.cross_encoder import builder_for
    from server.rerank.prompt import prompts_for
    from server.rerank.serving import load_tokenizer

    settings = settings_from_args(argv)
    served = settings.served_models()[0]
    info = model_info(served)
    tokenizer = load_tokenizer(served.model)
    builder = builder_for(info, tokenizer, info.max_model_len(settings.max_model_len))
    async with open_engine(settings, served, info=info) as engine:
        warm = builder.build("warm-up", ["the engine's first request"], None, None, "right")
        await engine.score(warm.token_ids, "alone-warmup")
        print(READY, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            ask = json.loads(line)
            jobs = bench_pairs(tokenizer, ask["docs"], ask["input_len"], ask["requests"], ask["seed"])
            prompts = [prompts_for(builder, RerankJob(query=q, texts=d), settings).token_ids for q, d in jobs]
            print(RESULT + json.dumps(await measure(engine, prompts, ask["concurrency"])), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
