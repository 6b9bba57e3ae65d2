"""Reading a rerank request's body: bounded by --max-body-bytes, parsed with orjson, its dialect
decided (server/http/error_responses.py `dialect_of`). A body over the limit is refused with 413 without being
kept in memory: on its Content-Length before any of it is read, or as soon as a chunked one passes
the limit. Either way the rest is read and discarded before the answer (bounded: LINGER_MAX_BYTES,
LINGER_MAX_SECONDS; not when the client sent `Expect: 100-continue` and so waits for the answer
before it uploads), as nginx's lingering close does, so that a client that uploads the whole body
before it reads the answer (async httpx, aiohttp) sees the 413 instead of a reset connection; the
connection is closed after it.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from server.core.errors import Dialect, ErrorKind, ServiceError
from server.http.error_responses import HEAD_BYTES, dialect_of

LINGER_MAX_BYTES = 256 * 1024 * 1024
LINGER_MAX_SECONDS = 10.0


class RerankBody(NamedTuple):
    data: Any  # the parsed JSON
    dialect: Dialect


async def discard_body(
    receive: Receive, max_bytes: int = LINGER_MAX_BYTES, max_seconds: float = LINGER_MAX_SECONDS
) -> tuple[bool, bytes]:
    """Read and drop the rest of a request body: (whether it was read to its end within the
    bounds, its first HEAD_BYTES, which tell its dialect)."""
    discarded = 0
    head = b""
    try:
        async with asyncio.timeout(max_seconds):
            while discarded <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return False, head  # the client went away
                chunk = message.get("body", b"")
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                discarded += len(chunk)
                if not message.get("more_body", False):
                    return True, head
    except TimeoutError:
        pass
    return False, head


def too_large(size: str, limit: int, head: bytes) -> ServiceError:
    return ServiceError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"request body of {size} bytes is over the limit of {limit} bytes",
        headers={"Connection": "close"},
        dialect=dialect_of(head),
    )


async def read_body(request: Request, limit: int) -> RerankBody:
    """The body parsed, with its dialect; a ServiceError (in the body's dialect) if it is over `limit`
    bytes or not JSON."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        head = b""
        if request.headers.get("expect", "").lower() != "100-continue":
            _, head = await discard_body(request.receive)
        raise too_large(length, limit, head)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect  # the client hung up before its body was in
        chunk = message.get("body", b"")
        chunks.append(chunk)
        received += len(chunk)
        more = message.get("more_body", False)
        if received > limit:
            if more:
                await discard_body(request.receive)
            raise too_large(f"more than {received}", limit, b"".join(chunks)[:HEAD_BYTES])
        if not more:
            break
    raw = b"".join(chunks)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(
            ErrorKind.INVALID_REQUEST, f"request body is not valid JSON: {exc}", dialect=dialect_of(raw)
        ) from None
    return RerankBody(data, dialect_of(data))
