"""TEI's rerank dialect (`texts` in, a bare array out), `GET /info`, raw scores, left truncation,
`truncate: false`, TEI's error body, and the caller's document fields echoed in the Cohere shape.
Raw bodies as Dify, RAGFlow and Elasticsearch send them (tests/test_clients.py runs the client
libraries themselves), on the real engine."""

from __future__ import annotations

import math

import httpx
import pytest

from server.rerank.prompt import PromptBuilder

from .conftest import MAX_MODEL_LEN

pytestmark = pytest.mark.engine

QUERY = "What is the capital of China?"
TEXTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "北京是中国的首都。",
    "Paris is the capital of France.",
]
# One token each (with the space before them) in the Qwen3 vocabulary: a text of n of them is n tokens.
WORDS = "the of and to in is was for that with as on by at from city world school river house music".split()


def cohere_scores(client: httpx.Client, texts: list[str], **body) -> dict[int, float]:
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": texts, **body})
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def tei(client: httpx.Client, path: str = "/rerank", **body) -> httpx.Response:
    return client.post(path, json={"query": QUERY, "texts": TEXTS, **body})


def assert_tei_error(response: httpx.Response, status: int, error_type: str, message: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert message in body["error"], body


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_tei_shape_on_every_route_scores_like_the_cohere_shape(client, path):
    response = tei(client, path)
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert isinstance(ranks, list) and all(set(r) == {"index", "score"} for r in ranks)
    assert sorted(r["index"] for r in ranks) == list(range(len(TEXTS)))
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    want = cohere_scores(client, TEXTS)
    assert all(abs(r["score"] - want[r["index"]]) <= 1e-6 for r in ranks)


def test_dify_reads_info_then_reranks_with_return_text(client, server):
    info = client.get("/info")
    assert info.status_code == 200, info.text
    card = info.json()
    assert card["model_id"] == "qwen3-reranker-test" and card["model_dtype"] == "float32"
    assert card["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert card["max_input_length"] == MAX_MODEL_LEN
    assert card["max_client_batch_size"] == server.app.state.settings.max_documents
    assert card["max_concurrent_requests"] == server.app.state.settings.max_pairs_in_flight
    assert card["max_batch_tokens"] == 8192 and card["tokenization_workers"] == 1
    assert card["model_sha"] is None  # a local directory, not a hub snapshot
    assert {"version"} <= set(card)
    ranks = tei(client, return_text=True).json()
    assert all(r["text"] == TEXTS[r["index"]] for r in ranks)


def test_ragflow_body(client):
    response = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": False, "truncate": True})
    assert response.status_code == 200
    want = cohere_scores(client, TEXTS)
    assert all(abs(r["score"] - want[r["index"]]) <= 1e-6 for r in response.json())


def test_elasticsearch_body_top_n_keeps_the_best(client):
    body = {"texts": TEXTS, "query": QUERY, "return_text": False, "top_n": 2}
    ranks = client.post("/rerank", json=body).json()
    full = tei(client).json()
    assert [r["index"] for r in ranks] == [r["index"] for r in full[:2]]


def test_raw_scores_are_the_logit_of_the_probability(client):
    probabilities = {r["index"]: r["score"] for r in tei(client).json()}
    raw = {r["index"]: r["score"] for r in tei(client, raw_scores=True).json()}
    assert set(raw) == set(probabilities)
    for i, p in probabilities.items():
        assert abs(raw[i] - math.log(p / (1 - p))) <= 1e-4
    assert [r["index"] for r in tei(client, raw_scores=True).json()] == [r["index"] for r in tei(client).json()]


@pytest.mark.parametrize("direction", ["Left", "left", "LEFT"])
def test_left_truncation_scores_the_texts_tail(client, tokenizer, card, direction):
    words = [WORDS[(i * 7) % len(WORDS)] for i in range(2 * MAX_MODEL_LEN)]
    text = " ".join(words)
    builder = PromptBuilder(tokenizer, MAX_MODEL_LEN)
    budget = MAX_MODEL_LEN - len(builder.prefix_ids) - len(builder.head_ids(QUERY, None)) - len(builder.suffix_ids)
    ids = tokenizer.encode(" " + text, add_special_tokens=False)
    assert len(ids) == len(words) > budget
    tail = " ".join(words[-budget:])
    assert tokenizer.encode(" " + tail, add_special_tokens=False) == ids[-budget:]  # a cut on a token boundary

    response = client.post(
        "/rerank", json={"query": QUERY, "texts": [text, "short"], "truncation_direction": direction}
    )
    assert response.status_code == 200, response.text
    left = {r["index"]: r["score"] for r in response.json()}
    assert abs(left[0] - cohere_scores(client, [tail])[0]) <= 1e-4
    assert abs(left[0] - card.scores(QUERY, [tail])[0]) <= 1e-4
    assert abs(left[1] - cohere_scores(client, ["short"])[0]) <= 1e-6  # a short text is not cut
    right = {r["index"]: r["score"] for r in tei(client, texts=[text]).json()}
    assert abs(right[0] - card.scores(QUERY, [text])[0]) <= 1e-4  # Right (the default): the card's head


def test_truncate_false_refuses_a_text_that_does_not_fit(client):
    long_text = " ".join(WORDS * 60)
    response = client.post("/rerank", json={"query": QUERY, "texts": ["short", long_text], "truncate": False})
    assert_tei_error(response, 422, "Validation", "texts[1]")
    assert "tokens" in response.json()["error"] and str(MAX_MODEL_LEN) in response.json()["error"]
    ok = client.post("/rerank", json={"query": QUERY, "texts": ["short", "fits"], "truncate": False})
    assert ok.status_code == 200 and len(ok.json()) == 2


def test_tei_errors_come_in_teis_body(client, live_server):
    assert_tei_error(client.post("/rerank", json={"query": QUERY, "texts": []}), 422, "Empty", "cannot be empty")
    assert_tei_error(client.post("/rerank", json={"query": QUERY, "texts": [1]}), 422, "Validation", "texts.0")
    assert_tei_error(tei(client, truncation_direction="Up"), 422, "Validation", "truncation_direction")
    assert tei(client, model="any-name").status_code == 200  # ignored, as TEI does (rerankers sends its own)
    small = live_server(max_documents=2, max_pairs_in_flight=2)
    with small.client() as c:
        assert_tei_error(tei(c), 413, "Validation", "the limit is 2")
    with live_server(start=False).client() as c:
        assert_tei_error(tei(c), 503, "Unhealthy", "not ready")
    assert tei(client).status_code == 200


def test_no_key_is_401_on_the_tei_shape_and_on_info(server):
    with server.client(api_key=None) as anonymous:
        assert_tei_error(tei(anonymous), 401, "Validation", "API key")  # in TEI's shape: the body says TEI
        assert anonymous.post("/rerank", json={"query": QUERY, "documents": TEXTS}).json()["error"]["code"] == 401
        assert anonymous.get("/info").status_code == 401


def test_errors_found_before_the_body_is_parsed_come_in_teis_body_too(live_server, engine):
    """Over --max-body-bytes (with a Content-Length and chunked), not JSON, and an internal error:
    a TEI body gets TEI's error body; a Cohere body the one shape."""
    from .fake_engine import EngineWrapper

    small = live_server(max_body_bytes=2048)
    big_tei = {"query": QUERY, "texts": ["x" * 4096]}
    with small.client() as c:
        assert_tei_error(c.post("/rerank", json=big_tei), 413, "Validation", "over the limit")
        chunked = c.post("/rerank", content=iter([b'{"query": "q", "texts": ["', b"x" * 4096, b'"]}']))
        assert_tei_error(chunked, 413, "Validation", "over the limit")
        cohere = c.post("/rerank", json={"query": QUERY, "documents": ["x" * 4096]})
        assert cohere.status_code == 413 and cohere.json()["error"]["type"] == "payload_too_large"
        not_json = c.post(
            "/rerank", content=b'{"query": "q", "texts": ["a",]}', headers={"content-type": "application/json"}
        )
        assert_tei_error(not_json, 400, "Validation", "not valid JSON")
    flaky = EngineWrapper(engine)
    broken = live_server(engine_override=flaky)
    flaky.failure = RuntimeError("secret internal detail")
    with broken.client() as c:
        assert_tei_error(tei(c), 500, "Backend", "internal server error")
        assert "secret internal detail" not in tei(c).text


def test_long_document_strategy_chunk_in_a_tei_body(client):
    long_text = " ".join(WORDS * 60)
    ranks = tei(client, texts=[long_text, "short"], long_document_strategy="chunk", max_chunks_per_doc=4).json()
    chunked = client.post(
        "/v1/rerank",
        json={
            "query": QUERY,
            "documents": [long_text, "short"],
            "long_document_strategy": "chunk",
            "max_chunks_per_doc": 4,
        },
    ).json()["results"]
    assert {r["index"]: r["score"] for r in ranks} == pytest.approx({r["index"]: r["relevance_score"] for r in chunked})


def test_the_callers_document_fields_come_back_whole(client):
    docs = [
        {"id": "a1", "text": TEXTS[0], "meta": {"source": "wiki", "rank": 3}},
        {"text": TEXTS[1]},
        TEXTS[2],
    ]
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": docs})
    assert response.status_code == 200
    by_index = {r["index"]: r for r in response.json()["results"]}
    assert by_index[0]["document"] == docs[0]
    assert by_index[1]["document"] == {"text": TEXTS[1]}
    assert by_index[2]["document"] == {"text": TEXTS[2]}
    want = cohere_scores(client, [d if isinstance(d, str) else d["text"] for d in docs])
    assert {i: r["relevance_score"] for i, r in by_index.items()} == pytest.approx(want, abs=1e-6)
    bare = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_documents": False}).json()
    assert all("document" not in r for r in bare["results"])
