"""A body over --max-body-bytes gets a 413 that every client reads, also one that uploads the
whole body before it reads the answer (async httpx, as cohere.AsyncClientV2 uses), and the
server neither keeps the body in memory nor stops serving."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import requests

from .conftest import API_KEY
from .helpers import GOOD, assert_still_serving

pytestmark = pytest.mark.engine

LIMIT = 1024 * 1024
BODY_BYTES = 20 * 1024 * 1024  # well past the socket buffers: the server must read it away
CHUNK = b"x" * 65536  # one object yielded again and again: the client holds no copy of the body
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def chunks() -> Iterator[bytes]:
    for _ in range(BODY_BYTES // len(CHUNK)):
        yield CHUNK


async def async_chunks() -> AsyncIterator[bytes]:
    for chunk in chunks():
        yield chunk


def headers(framing: str) -> dict[str, str]:
    extra = {"Content-Length": str(BODY_BYTES)} if framing == "content-length" else {}
    return {**AUTH, "Content-Type": "application/json", **extra}


def send_async_httpx(url: str, framing: str) -> tuple[int, dict]:
    async def run() -> tuple[int, dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(url, content=async_chunks(), headers=headers(framing))
            return response.status_code, response.json()

    return asyncio.run(run())


def send_httpx(url: str, framing: str) -> tuple[int, dict]:
    response = httpx.post(url, content=chunks(), headers=headers(framing), timeout=60)
    return response.status_code, response.json()


class SizedBody:
    """A file-like body of known length: requests sends it with a Content-Length, in blocks."""

    def __init__(self) -> None:
        self.left = BODY_BYTES

    def __len__(self) -> int:
        return self.left

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        self.left -= len(CHUNK)
        return CHUNK


def send_requests(url: str, framing: str) -> tuple[int, dict]:
    body = SizedBody() if framing == "content-length" else chunks()
    response = requests.post(url, data=body, headers=headers(framing), timeout=60)
    return response.status_code, response.json()


CLIENTS: dict[str, Callable[[str, str], tuple[int, dict]]] = {
    "async-httpx": send_async_httpx,
    "httpx": send_httpx,
    "requests": send_requests,
}


@pytest.fixture(scope="module")
def small_body_server(module_live_server):
    return module_live_server(max_body_bytes=LIMIT)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("client_name", list(CLIENTS))
def test_every_client_reads_the_413(small_body_server, client_name, framing):
    tracemalloc.start()
    try:
        status, body = CLIENTS[client_name](small_body_server.url + "/v1/rerank", framing)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413, body
    assert body["error"]["type"] == "payload_too_large"
    assert f"over the limit of {LIMIT} bytes" in body["error"]["message"]
    # The refused body was read away, not kept: the peak of everything this process allocated
    # meanwhile (client and server) stays far below the body's size.
    assert peak < BODY_BYTES / 4, f"{peak} bytes allocated at the peak for a {BODY_BYTES}-byte body"
    with small_body_server.client() as c:
        assert_still_serving(c)
        assert c.post("/v1/rerank", json=GOOD).status_code == 200
