"""The ASGI middlewares (server/http/middleware.py) around a stub app, engine-free: request ids, the
access log, API keys, the body limit, and errors in the request's dialect."""

from __future__ import annotations

import logging

import httpx
import pytest

from server.core.errors import ServiceError
from server.core.metrics import Metrics
from server.http.body import read_body
from server.http.error_responses import service_error_response
from server.http.middleware import ApiKeyMiddleware, RequestContextMiddleware


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server runs on asyncio (uvicorn)


async def echo_body(scope, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/boom":
        raise RuntimeError("a bug")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")


@pytest.mark.anyio
async def test_request_id_is_echoed_or_made_and_the_access_log_names_it(caplog):
    metrics = Metrics()
    app = RequestContextMiddleware(echo_body, metrics, process_name="api-3")
    async with client(app) as c:
        with caplog.at_level(logging.INFO, logger="server.access"):
            given = await c.post("/v1/rerank", content=b"x", headers={"X-Request-Id": "abc"})
        made = await c.post("/v1/rerank", content=b"x")
        boom = await c.post("/boom", content=b'{"texts": ["a"]}')
    assert given.headers["x-request-id"] == "abc" and given.headers["x-rerank-process"] == "api-3"
    assert len(made.headers["x-request-id"]) == 32
    assert "request_id=abc" in caplog.text and '"POST /v1/rerank" 200' in caplog.text
    assert boom.status_code == 500 and "a bug" not in boom.text
    assert boom.json()["error"]["type"] == "internal_error"  # /boom is no rerank route: the one shape


@pytest.mark.anyio
async def test_api_keys_and_the_dialect_of_a_refused_body():
    app = ApiKeyMiddleware(echo_body, keys=["k1", "k2"], public_paths=["/health"], dialect_paths=["/rerank"])
    async with client(app) as c:
        assert (await c.post("/rerank", content=b"ok", headers={"Authorization": "Bearer k2"})).text == "ok"
        assert (await c.post("/rerank", content=b"ok", headers={"X-API-Key": "k1"})).status_code == 200
        assert (await c.get("/health")).status_code == 200
        cohere = await c.post("/rerank", json={"query": "q", "documents": ["a"]}, headers={"X-API-Key": "k3"})
        tei = await c.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert cohere.status_code == 401 and cohere.json()["error"]["type"] == "authentication_error"
    assert cohere.headers["www-authenticate"].startswith("Bearer")
    assert tei.status_code == 401 and set(tei.json()) == {"error", "error_type"}


async def parse_body(scope, receive, send) -> None:
    """A route that reads its body as the rerank routes do (server/http/body.py), limit 16 bytes."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    try:
        body = await read_body(Request(scope, receive), limit=16)
        response = JSONResponse({"data": body.data, "dialect": body.dialect})
    except ServiceError as exc:
        response = service_error_response(exc)
    await response(scope, receive, send)


@pytest.mark.anyio
async def test_the_body_limit_refuses_before_and_while_reading_in_the_bodys_dialect():
    async def chunks(*parts: bytes):  # no Content-Length: the limit applies while reading
        for part in parts:
            yield part

    async with client(parse_body) as c:
        fits = await c.post("/rerank", content=b'{"texts":["ab"]}')  # 16 bytes: at the limit
        declared = await c.post("/rerank", content=b'{"texts": ["0123456789"]}')
        streamed = await c.post("/rerank", content=chunks(b'{"texts": [', b'"0123456789"]}'))
        cohere = await c.post("/rerank", content=chunks(b'{"documents": ', b'["0123456789"]}'))
        not_json = await c.post("/rerank", content=b'{"texts": [1,]}')
    assert fits.json() == {"data": {"texts": ["ab"]}, "dialect": "tei"}
    assert declared.status_code == 413 and declared.json()["error_type"] == "Validation"  # TEI's body said so
    assert declared.headers["connection"] == "close"
    assert streamed.status_code == 413 and streamed.json()["error_type"] == "Validation"
    assert cohere.status_code == 413 and cohere.json()["error"]["type"] == "payload_too_large"
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
