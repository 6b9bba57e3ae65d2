"""Reranking every query's candidates through a server's `POST /v1/rerank`, concurrently, with
429/503 retried (honouring Retry-After, with backoff), any other error stopping the run with the
server's own message, and every scored query appended to a partial file so that an interrupted
run continues where it stopped."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from rerank_eval.data import Run

RETRIED = (429, 503)
MAX_ATTEMPTS = 30
MAX_BACKOFF_S = 10.0


class ServerError(RuntimeError):
    """The server refused a request for a reason retrying will not change."""


@dataclass
class Combination:
    """One (server, instruction) pair to measure."""

    name: str
    server: str
    instruction: str | None  # None: the server's default instruction


def load_partial(path: Path) -> Run:
    """The queries already scored (a line cut short by an interruption is dropped)."""
    run: Run = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            run[row["qid"]] = row["scores"]
    return run


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error")
        return error.get("message", str(error)) if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        return response.text[:500]


async def rerank_one(
    client: httpx.AsyncClient, combo: Combination, query: str, docids: list[str], texts: list[str], extra: dict
) -> dict[str, float]:
    body = {"query": query, "documents": texts, "return_documents": False, **extra}
    if combo.instruction is not None:
        body["instruction"] = combo.instruction
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = await client.post(combo.server.rstrip("/") + "/v1/rerank", json=body)
        except httpx.TransportError as exc:  # a restarting server: like a 503
            status, wait = 503, None
            reason = f"{type(exc).__name__}"
        else:
            if response.status_code == 200:
                return {docids[r["index"]]: float(r["relevance_score"]) for r in response.json()["results"]}
            status, reason = response.status_code, _message(response)
            wait = float(response.headers.get("retry-after", 0) or 0) or None
            if status not in RETRIED:
                raise ServerError(f"{combo.server} answered {status}: {reason}")
        backoff = min(MAX_BACKOFF_S, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
        await asyncio.sleep(max(wait or 0, backoff))
    raise ServerError(f"{combo.server} still answered {status} after {MAX_ATTEMPTS} attempts: {reason}")


async def rerank_all(
    combo: Combination,
    candidates: dict[str, list[str]],
    queries: dict[str, str],
    corpus: dict[str, str],
    partial: Path,
    api_key: str | None,
    concurrency: int,
    extra: dict,
    progress: object | None = None,
) -> tuple[Run, int, float]:
    """Every query's candidates scored: (run, documents scored in this call, seconds it took)."""
    run = load_partial(partial)
    todo = [q for q in candidates if q not in run]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for qid in todo:
        queue.put_nowait(qid)
    scored_docs = 0
    started = time.perf_counter()
    with open(partial, "a", encoding="utf-8") as out:

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal scored_docs
            while not queue.empty():
                qid = queue.get_nowait()
                docids = candidates[qid]
                scores = await rerank_one(client, combo, queries[qid], docids, [corpus[d] for d in docids], extra)
                run[qid] = scores
                out.write(json.dumps({"qid": qid, "scores": scores}) + "\n")
                out.flush()
                scored_docs += len(docids)
                if progress is not None:
                    progress.update(1)  # type: ignore[attr-defined]
                    elapsed = time.perf_counter() - started
                    progress.set_postfix(docs_per_s=f"{scored_docs / elapsed:.0f}")  # type: ignore[attr-defined]

        async with httpx.AsyncClient(headers=headers, timeout=600) as client:
            tasks = [asyncio.create_task(worker(client)) for _ in range(max(1, min(concurrency, len(todo))))]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
    return run, scored_docs, time.perf_counter() - started
