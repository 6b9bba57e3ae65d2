"""Bad input, limits, auth, internal errors, overload, time-outs and hang-ups (real engine).

Every case checks the status, the one error shape, and that the next good request still succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from .conftest import API_KEY, wait_until
from .fake_engine import EngineWrapper, GatedEngine
from .helpers import GOOD, LONG_DOCS, assert_error, assert_still_serving

pytestmark = pytest.mark.engine


def engine_idle(engine) -> bool:
    return engine.llm.get_num_unfinished_requests() == 0


BAD_BODIES = [
    ("malformed-json", b'{"query": "q", "documents": [', 400, "invalid_request_error", "not valid JSON"),
    ("invalid-utf8", b'{"query": "\xff\xfe", "documents": ["a"]}', 400, "invalid_request_error", "UTF-8"),
    ("not-an-object", b'["q", ["a"]]', 422, "validation_error", "valid dictionary"),
    ("missing-query", b'{"documents": ["a"]}', 422, "validation_error", "query: Field required"),
    ("empty-query", b'{"query": "", "documents": ["a"]}', 422, "validation_error", "query"),
    ("query-not-text", b'{"query": 5, "documents": ["a"]}', 422, "validation_error", "query: Input should be"),
    ("missing-documents", b'{"query": "q"}', 422, "validation_error", "documents: Field required"),
    ("documents-not-list", b'{"query": "q", "documents": "a"}', 422, "validation_error", "documents"),
    ("null-document", b'{"query": "q", "documents": ["a", null]}', 422, "validation_error", r"documents\[1\].*null"),
    ("number-document", b'{"query": "q", "documents": [3]}', 422, "validation_error", r"documents\[0\].*int"),
    ("object-without-text", b'{"query": "q", "documents": [{"t": "a"}]}', 422, "validation_error", "without"),
    ("text-not-string", b'{"query": "q", "documents": [{"text": 1}]}', 422, "validation_error", "documents"),
    ("top-n-zero", b'{"query": "q", "documents": ["a"], "top_n": 0}', 422, "validation_error", "top_n"),
    ("top-n-negative", b'{"query": "q", "documents": ["a"], "top_n": -2}', 422, "validation_error", "top_n"),
    ("top-n-float", b'{"query": "q", "documents": ["a"], "top_n": 1.5}', 422, "validation_error", "top_n"),
    ("top-n-string", b'{"query": "q", "documents": ["a"], "top_n": "2"}', 422, "validation_error", "top_n"),
    ("bad-max-tokens", b'{"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}', 422, "validation_error", "max_"),
    (
        "return-docs-string",
        b'{"query": "q", "documents": ["a"], "return_documents": "no"}',
        422,
        "validation_error",
        "",
    ),
    (
        "unknown-model",
        b'{"query": "q", "documents": ["a"], "model": "bge-reranker"}',
        404,
        "not_found_error",
        "'bge-reranker' is not served here; this server serves 'qwen3-reranker-test'",
    ),
    (
        "query-too-long",
        b'{"query": "' + b"word " * 600 + b'", "documents": ["a"]}',
        400,
        "invalid_request_error",
        "no room for a document",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_input_gets_a_clear_4xx(client, body, status, kind, message):
    response = client.post("/v1/rerank", content=body, headers={"content-type": "application/json"})
    assert_error(response, status, kind, message)
    assert_still_serving(client)


def test_empty_documents_gives_no_results(client):
    response = client.post("/v1/rerank", json={"query": "q", "documents": []})
    assert response.status_code == 200
    assert response.json()["results"] == [] and response.json()["usage"]["prompt_tokens"] == 0


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found_error", "no route GET /v1/nothing")
    assert_error(client.get("/v1/rerank"), 405, "method_not_allowed", "GET")
    assert_still_serving(client)


def test_too_many_documents_is_413(live_server):
    live = live_server(max_documents=3)
    with live.client() as c:
        response = c.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 4})
        assert_error(response, 413, "payload_too_large", "4 documents in one request; the limit is 3")
        assert c.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 3}).status_code == 200


def test_body_over_the_limit_is_413_before_it_is_read(live_server):
    live = live_server(max_body_bytes=4096)
    big = {"query": "q", "documents": ["x" * 5000]}
    with live.client() as c:
        assert_error(c.post("/v1/rerank", json=big), 413, "payload_too_large", "over the limit of 4096 bytes")

        def chunks():  # no Content-Length: the limit applies while reading
            yield b'{"query": "q", "documents": ["'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"]}'

        assert_error(c.post("/v1/rerank", content=chunks()), 413, "payload_too_large", "over the limit")
        assert_still_serving(c)


PROTECTED = [("POST", p) for p in ("/v1/rerank", "/rerank", "/v2/rerank")] + [
    ("GET", p) for p in ("/v1/models", "/metrics", "/docs", "/openapi.json")
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_health_and_ready_needs_the_key(server, method, path):
    with server.client(api_key=None) as anonymous:
        response = anonymous.request(method, path, json=GOOD)
        assert_error(response, 401, "authentication_error", "API key")
        assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = anonymous.request(method, path, json=GOOD, headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "authentication_error", "API key")
        assert anonymous.request(method, path, json=GOOD, headers={"X-API-Key": API_KEY}).status_code == 200
        assert anonymous.request(method, path, json=GOOD, headers={"Authorization": f"Bearer {API_KEY}"}).is_success


def test_health_and_ready_are_public(server):
    with server.client(api_key=None) as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/ready").status_code == 200


def test_several_keys_and_public_metrics(live_server):
    live = live_server(api_key=["key-one", "key-two"], metrics_public=True)
    with live.client(api_key=None) as c:
        assert c.get("/metrics").status_code == 200
        for key in ("key-one", "key-two"):
            assert c.post("/v1/rerank", json=GOOD, headers={"X-API-Key": key}).status_code == 200
        assert c.post("/v1/rerank", json=GOOD, headers={"X-API-Key": API_KEY}).status_code == 401


def test_api_key_never_logged(live_server, caplog, server):
    with caplog.at_level(logging.DEBUG), server.client() as c:
        c.post("/v1/rerank", json=GOOD)
        server.client(api_key="wrong-secret-key").post("/v1/rerank", json=GOOD)
    assert API_KEY not in caplog.text and "wrong-secret-key" not in caplog.text


def test_internal_error_is_an_opaque_500_with_request_id(live_server, engine, caplog):
    flaky = EngineWrapper(engine)
    live = live_server(engine_override=flaky)
    flaky.failure = RuntimeError("secret internal detail")
    with live.client() as c, caplog.at_level(logging.ERROR, logger="server"):
        response = c.post("/v1/rerank", json=GOOD, headers={"X-Request-Id": "req-500"})
        assert_error(response, 500, "internal_error", r"internal server error \(request id req-500\)")
        assert "secret internal detail" not in response.text
        assert "secret internal detail" in caplog.text and "req-500" in caplog.text  # traceback in the log
        flaky.failure = None
        assert_still_serving(c)


def test_overload_is_429_with_retry_after(live_server, engine, engine_loop):
    gated = GatedEngine(engine, engine_loop.loop)
    gated.gate.set()  # let the warm-up through
    live = live_server(engine_override=gated, max_documents=4, max_pairs_in_flight=4)
    gated.gate = asyncio.Event()
    with live.client() as c:
        first: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: first.update(r=c.post("/v1/rerank", json=GOOD)))
        thread.start()
        assert wait_until(lambda: gated.waiting == 1, timeout=60)
        response = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
        assert_error(response, 429, "overloaded_error", "2 pairs in the engine, limit 4")
        assert response.headers["retry-after"] == "1"
        gated.open()
        thread.join(60)
        assert first["r"].status_code == 200
        assert_still_serving(c)
        series = 'rerank_rejected_requests_total{model="qwen3-reranker-test",reason="overloaded"}'
        assert series in c.get("/metrics").text


def test_two_requests_in_flight_with_one_request_id_are_both_scored(live_server, engine, engine_loop):
    """A client's X-Request-Id names the engine's requests: two in flight at once under one id (retries,
    a constant id) must not collide in vLLM, which needs every id unique."""
    gated = GatedEngine(engine, engine_loop.loop)
    gated.gate.set()  # let the warm-up through
    live = live_server(engine_override=gated, score_cache_size=0)  # both reach the engine, none waits on the other
    gated.gate = asyncio.Event()
    answers: list[httpx.Response] = []
    with live.client() as c:

        def send() -> None:
            answers.append(c.post("/v1/rerank", json=GOOD, headers={"X-Request-Id": "same-id"}))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: gated.waiting == 2, timeout=60)  # both in the service, held before the engine
        gated.open()
        for thread in threads:
            thread.join(60)
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json()["results"] == answers[1].json()["results"]


def test_timeout_is_504_and_aborts_the_engine_requests(live_server, engine, client):
    live = live_server(request_timeout=0.2)
    with live.client() as c:
        response = c.post("/v1/rerank", json={"query": "slow", "documents": LONG_DOCS})
        assert_error(response, 504, "timeout_error", "longer than 0.2s and was aborted")
        assert wait_until(lambda: engine_idle(engine), timeout=60), "the timed-out pairs were not aborted"
        assert live.service.pairs_in_flight == 0
    # Still serving: on the same engine, through a server with the default time-out (a good small
    # request may itself take longer than 0.2 s on a slow machine).
    assert_still_serving(client)


def test_client_hang_up_aborts_its_engine_requests(server, engine):
    with server.client(timeout=0.3) as impatient, pytest.raises(httpx.TimeoutException):
        impatient.post("/v1/rerank", json={"query": "hang up", "documents": LONG_DOCS})
    assert wait_until(lambda: engine_idle(engine) and server.service.pairs_in_flight == 0, timeout=60)
    with server.client() as c:
        assert 'status="499"' in c.get("/metrics").text
        assert_still_serving(c)


def test_every_error_kind_has_a_status_and_a_tei_type():
    from server.core.errors import ERROR_STATUSES, ErrorKind
    from server.http.error_responses import kind_of_http_status

    assert all(400 <= kind.status < 600 and kind.tei_type for kind in ErrorKind)
    assert ErrorKind.EMPTY.status == ErrorKind.VALIDATION.status == 422  # TEI answers Empty with 422
    assert set(ERROR_STATUSES) == {kind.status for kind in ErrorKind} and 405 in ERROR_STATUSES
    assert kind_of_http_status(404) is ErrorKind.NOT_FOUND and kind_of_http_status(405) is ErrorKind.METHOD_NOT_ALLOWED
    assert kind_of_http_status(418) is ErrorKind.INVALID_REQUEST and kind_of_http_status(502) is ErrorKind.INTERNAL


def test_a_body_decides_its_dialect_by_its_fields():
    from server.core.errors import Dialect
    from server.http.error_responses import dialect_of

    assert dialect_of({"query": "q", "texts": ["a"]}) is Dialect.TEI
    assert dialect_of({"query": "q", "documents": ["texts"]}) is Dialect.COHERE
    assert dialect_of({"query": "q", "texts": ["a"], "documents": ["b"]}) is Dialect.COHERE
    assert dialect_of(["texts"]) is Dialect.COHERE
    assert dialect_of(b'{"query": "q", "texts": ["a",]}') is Dialect.TEI  # unparsed: its first bytes
    assert dialect_of(b'{"query": "q", "documents": ["a",]}') is Dialect.COHERE
