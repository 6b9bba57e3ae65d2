"""Response shape, routes, readiness, concurrency and prefix caching, on the real engine."""

from __future__ import annotations

import concurrent.futures
import re

import httpx
import pytest

from .conftest import API_KEY

pytestmark = pytest.mark.engine

QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "北京是中国的首都。",
    "Paris is the capital of France.",
    "Photosynthesis converts light into chemical energy.",
]


def rerank(client: httpx.Client, path: str = "/v1/rerank", **body) -> httpx.Response:
    return client.post(path, json={"query": QUERY, "documents": DOCS, **body})


def test_results_sorted_with_index_score_document(client):
    response = rerank(client)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"id", "model", "results", "usage", "meta"}
    assert data["model"] == "qwen3-reranker-test"
    results = data["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)
    assert all(r["document"] == {"text": DOCS[r["index"]]} for r in results)
    assert data["usage"]["prompt_tokens"] == data["usage"]["total_tokens"] > 0
    # Cohere's meta block, as the Cohere SDKs and LiteLLM read usage
    assert data["meta"]["billed_units"] == {"search_units": 1, "total_tokens": data["usage"]["total_tokens"]}
    assert data["meta"]["tokens"] == {"input_tokens": data["usage"]["prompt_tokens"], "output_tokens": 0}


def test_top_n_keeps_the_best(client):
    full = rerank(client).json()["results"]
    top = rerank(client, top_n=2).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    assert len(rerank(client, top_n=50).json()["results"]) == len(DOCS)


def test_return_documents_false_omits_document(client):
    results = rerank(client, return_documents=False).json()["results"]
    assert results and all(set(r) == {"index", "relevance_score"} for r in results)


def test_object_documents_score_like_strings(client):
    as_strings = rerank(client).json()["results"]
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS]})
    as_objects = response.json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in as_objects] == [
        (r["index"], r["relevance_score"]) for r in as_strings
    ]


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
def test_the_three_routes_give_the_same_answer(client, path):
    reference = rerank(client).json()["results"]
    response = rerank(client, path)
    assert response.status_code == 200
    assert response.json()["results"] == reference


def test_model_field_naming_the_served_model_is_accepted(client):
    assert rerank(client, model="qwen3-reranker-test").status_code == 200


def test_unknown_fields_are_ignored(client):
    assert rerank(client, rank_fields=["text"], max_chunks_per_doc=3).status_code == 200


def test_models_lists_the_served_model(client):
    data = client.get("/v1/models").json()
    assert [m["id"] for m in data["data"]] == ["qwen3-reranker-test"]
    assert data["data"][0]["max_model_len"] == 512


def test_request_id_is_returned(client):
    response = rerank(client, top_n=1)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert response.json()["id"] == response.headers["x-request-id"]
    mine = client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}, headers={"X-Request-Id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123" and mine.json()["id"] == "abc-123"


def test_ready_is_503_until_the_warm_up_then_200(live_server, engine_loop, engine, tokenizer):
    live = live_server(start=False)
    with live.client() as c:
        assert c.get("/health").status_code == 200
        not_ready = c.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["type"] == "service_unavailable"
        assert rerank(c).status_code == 503
        engine_loop.run(live.service.start(engine, tokenizer))
        assert c.get("/ready").json() == {"status": "ready", "model": "qwen3-reranker-test"}
        assert rerank(c).status_code == 200


def test_the_warm_up_is_logged_with_its_time_and_engine_started_is_left_to_the_process(
    live_server, engine_loop, engine, tokenizer, caplog
):
    """A model's service logs its warm-up; `Engine started.` is the process's (or the supervisor's)
    line once every model is warm (tests/test_process.py, test_several_models.py, test_multiprocess.py)."""
    live = live_server(start=False)
    with caplog.at_level("INFO", logger="server.serving"):
        engine_loop.run(live.service.start(engine, tokenizer))
    messages = [r.getMessage() for r in caplog.records if r.name == "server.serving"]
    assert any(m.startswith("model qwen3-reranker-test (qwen3-reranker): warm-up rerank scored in ") for m in messages)
    assert not any("Engine started." in m for m in messages)


def test_32_concurrent_requests_are_all_correct(server):
    """Each of 32 simultaneous requests gets exactly the scores it gets alone."""
    requests = [(f"query number {i}: capital of country {i}?", DOCS[i % 5 :] + DOCS[: i % 5]) for i in range(32)]

    def one(q_docs):
        query, docs = q_docs
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
            r = c.post("/v1/rerank", json={"query": query, "documents": docs})
            assert r.status_code == 200, r.text
            return {r["index"]: r["relevance_score"] for r in r.json()["results"]}

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        together = list(pool.map(one, requests))
    alone = [one(q) for q in requests]
    for got, want in zip(together, alone, strict=True):
        assert got.keys() == want.keys()
        assert max(abs(got[i] - want[i]) for i in got) <= 1e-5


def test_prefix_cache_is_hit_within_one_request(client):
    """The shared prefix is computed once: every document after the first reads it from the cache."""
    query = "an unseen query about the history of printing presses in Europe " * 3
    docs = [f"document {i} about movable type" for i in range(8)]
    usage = client.post("/v1/rerank", json={"query": query, "documents": docs}).json()["usage"]
    prefix_tokens = 100  # system prompt + instruction + query is well over 100 tokens here
    assert usage["cached_tokens"] >= (len(docs) - 1) * (prefix_tokens // 32) * 32
    metrics = client.get("/metrics").text
    ratio = float(re.search(r"^rerank_prefix_cache_hit_ratio (\S+)$", metrics, re.M).group(1))
    assert ratio > 0
