"""Priority lanes on the real engine: an interactive request overtakes bulk work that was queued
before it, bulk sent under an API key's default priority still completes with the same scores as
interactive, and the metrics carry the lanes. Without the engine: tests/test_lanes_fast.py."""

from __future__ import annotations

import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, wait_until

pytestmark = pytest.mark.engine
BULK_KEY = "bulk-pipeline-key"
WORDS = "search ranking neural retrieval passage query capital mountain science river music".split()


def documents(n: int, seed: int) -> list[str]:
    return [" ".join(WORDS[(seed + i + k) % len(WORDS)] for k in range(60)) + f" {seed}-{i}" for i in range(n)]


def test_an_interactive_request_overtakes_queued_bulk_work(live_server):
    live = live_server(api_key_priority=[f"{BULK_KEY}=10"], max_pairs_in_flight=2048, max_documents=256)
    service = live.app.state.models.default
    finished: list[str] = []
    answers: dict[str, httpx.Response] = {}

    def post(name: str, body: dict, key: str = API_KEY) -> None:
        with live.client(api_key=key) as c:
            answers[name] = c.post("/v1/rerank", json=body)
        finished.append(name)

    bulk = [
        threading.Thread(target=post, args=(f"bulk{k}", {"query": f"q{k}", "documents": documents(200, k)}, BULK_KEY))
        for k in range(4)
    ]
    for thread in bulk:
        thread.start()
    # Every bulk request but the one in the engine waits at the lanes' gate (one step's tokens at a time).
    assert wait_until(lambda: service.admission.lanes.waiting >= 2, timeout=120), "bulk never queued"
    post("interactive", {"query": "What is the capital of China?", "documents": documents(8, 99)})
    for thread in bulk:
        thread.join(300)
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 200)
    # at most the bulk request in the engine, and one that went in before the interactive one did, finish first
    assert finished.index("interactive") <= 2, f"interactive waited for queued bulk work: {finished}"
    # the same pair scores the same in either lane
    with live.client() as c:
        same = c.post("/v1/rerank", json={"query": "q0", "documents": documents(200, 0)[:3]}).json()
    bulk_scores = {r["index"]: r["relevance_score"] for r in answers["bulk0"].json()["results"]}
    assert all(abs(bulk_scores[r["index"]] - r["relevance_score"]) < 1e-6 for r in same["results"])

    page = live.client().get("/metrics").text
    pairs = {
        s.labels["lane"]: s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "rerank_lane_pairs_total"
    }
    assert pairs == {"bulk": 800, "interactive": 11}
