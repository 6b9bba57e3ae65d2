"""Several API processes on one engine (`--api-processes 2`), as whole servers (`python -m server`).

Both processes answer (each response names its process) and each exports its traces, scores
equal a one-process server's (up to fp32 rounding), one /metrics scrape counts the requests of
both, `Engine started.` is logged once, SIGTERM drains and exits 0, and losing an API process
or the engine core ends the whole server non-zero.
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import wait_until
from .helpers import GOOD, LONG_DOCS, SHARED_HOST_FLAGS, ServerProcess
from .otlp_receiver import http_receiver

TWO = ("--api-processes", "2", *SHARED_HOST_FLAGS)
QUERY = {"query": "What is the capital of China?", "documents": ["Beijing is the capital.", "Gravity.", "Paris."]}


def ranked(response: httpx.Response) -> list[tuple[int, float]]:
    assert response.status_code == 200, response.text
    return [(r["index"], r["relevance_score"]) for r in response.json()["results"]]


@pytest.mark.engine
def test_two_api_processes_serve_one_engine(tiny_model: Path, tmp_path: Path, redis_server, live_server):
    (tmp_path / "two").mkdir()
    receiver = contextlib.ExitStack()
    otlp_url, received = receiver.enter_context(http_receiver())
    tracing = ("--otlp-traces-endpoint", otlp_url)
    two = ServerProcess(
        tiny_model, tmp_path / "two", (*TWO, "--vllm-metrics", "--score-cache-url", redis_server.url, *tracing)
    )
    one = live_server()  # the session's engine, in this process: the same engine settings as `two`
    try:
        two.wait_ready(600)
        assert two.log.count("Engine started.") == 1, "one line, once every process has scored its warm-up"
        assert all(tag in two.log for tag in ("[supervisor]", "[api-0]", "[api-1]", "[EngineCore]"))
        assert len(two.children_titled("VLLM::EngineCore")) == 1
        assert len(two.children_titled("rerank::api-")) == 2

        # Both processes answer on the one port: concurrent requests, each on its own connection.
        def post(_: int) -> str:
            r = httpx.post(two.url + "/v1/rerank", json=QUERY, timeout=120)
            assert r.status_code == 200 and len(r.json()["results"]) == 3
            return r.headers["x-rerank-process"]

        answered_by: Counter[str] = Counter()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(25):
                answered_by.update(pool.map(post, range(16)))
                if len(answered_by) == 2:
                    break
        assert set(answered_by) == {"api-0", "api-1"}, answered_by
        # Each process exports its own traces (its own provider, made in the process).
        assert wait_until(
            lambda: {s.resource.get("rerank.api_process") for s in received.spans} >= {"api-0", "api-1"}, timeout=60
        ), {s.resource.get("rerank.api_process") for s in received.spans}
        instances = {s.resource["rerank.api_process"]: s.resource["service.instance.id"] for s in received.spans}
        assert len(set(instances.values())) == 2

        # The same scores as one API process on one engine (short and truncated documents), up to fp32
        # rounding (1e-7 seen: the engine batches pairs as they come, and a different batch sums
        # in a different order).
        for body in (GOOD, QUERY, {"query": "q", "documents": LONG_DOCS}):
            got = dict(ranked(httpx.post(two.url + "/v1/rerank", json=body, timeout=120)))
            with one.client() as client:
                want = dict(ranked(client.post("/v1/rerank", json=body)))
            assert got.keys() == want.keys() == set(range(len(body["documents"])))
            assert max(abs(got[i] - want[i]) for i in want) <= 1e-6

        # The score cache on one Redis: a request that one process scored, the other answers from
        # Redis (its own cache never saw it): the engine sees each pair once for both.
        fresh = {"query": "Which process scored this?", "documents": ["one pair", "another pair", "a third"]}
        misses = two.metric("rerank_score_cache_misses_total")
        first = httpx.post(two.url + "/v1/rerank", json=fresh, timeout=120)
        repeats: Counter[str] = Counter()
        for _ in range(200):
            r = httpx.post(two.url + "/v1/rerank", json=fresh, timeout=120)
            assert ranked(r) == ranked(first)
            repeats[r.headers["x-rerank-process"]] += 1
            if r.headers["x-rerank-process"] != first.headers["x-rerank-process"]:
                break
        assert len(repeats | Counter([first.headers["x-rerank-process"]])) == 2, repeats
        assert two.metric("rerank_score_cache_misses_total") == misses + 3, "the other process scored it again"

        # Any process's scrape counts the rerank requests of both.
        sent = sum(answered_by.values()) + 3 + 1 + sum(repeats.values())
        for _ in range(4):
            assert two.metric("rerank_requests_total", route="/v1/rerank", status="200") == sent
        assert two.metric("rerank_engine_up") == 1
        assert two.metric("rerank_pairs_in_flight") == 0
        assert two.metric("rerank_prompt_tokens_total") > 0
        # --vllm-metrics: vLLM's own engine metrics too, every process's engine requests (pairs the
        # score cache did not have, and the warm-ups) in one scrape (without it, none: test_process.py).
        scored = two.metric("rerank_score_cache_misses_total")
        assert scored >= 3 + 3  # QUERY and `fresh`, at least (both processes scored)
        assert two.metric("vllm:request_success_total") >= scored + 2 * 2

        two.proc.send_signal(signal.SIGTERM)
        assert two.proc.wait(120) == 0, two.log[-3000:]
        two.wait_gone(60)
        assert two.log.count("server stopped (exit code 0)") == 2  # each API process drained
    finally:
        two.stop()
        receiver.close()


@pytest.mark.engine
def test_a_lost_api_process_or_engine_core_ends_the_whole_server(tiny_model: Path, tmp_path: Path):
    servers = {}
    for victim in ("api", "core"):
        (tmp_path / victim).mkdir()
        servers[victim] = ServerProcess(tiny_model, tmp_path / victim, TWO)
    try:
        for p in servers.values():
            p.wait_ready(600)
        servers["api"].children_titled("rerank::api-1")[0].kill()
        servers["core"].children_titled("VLLM::EngineCore")[0].kill()
        for victim, p in servers.items():
            assert p.proc.wait(120) == 1, (victim, p.log[-3000:])
            p.wait_gone(60)  # nothing half-working left behind
        assert "API process api-1 (pid" in servers["api"].log and "ending the server" in servers["api"].log
        assert "the vLLM engine core" in servers["core"].log
    finally:
        for p in servers.values():
            p.stop()
