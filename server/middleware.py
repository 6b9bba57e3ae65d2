"""Plain ASGI middlewares: request ids and access log, API-key auth, request body limit.

Their errors come in the request's dialect (server/tei_protocol.py): on the rerank routes a body
in TEI's shape gets TEI's error body, for a 401, a 413 and a 500 alike."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from server.errors import CLIENT_CLOSED, ErrorKind, ServiceError
from server.metrics import Metrics
from server.serving import RequestStats
from server.tei_protocol import HEAD_BYTES, dialect_error_response, is_tei_head
from server.tracing import NO_TRACING, Tracing, mark_error, trace_id

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_logger = logging.getLogger("server.access")
logger = logging.getLogger("server.errors")

# Known routes are metric labels as they are; anything else is "other" (bounded cardinality).
KNOWN_ROUTES = frozenset(
    {"/v1/rerank", "/rerank", "/v2/rerank", "/v1/models", "/info"}
    | {"/health", "/ready", "/metrics", "/docs", "/openapi.json"}
)
# Probes and scrapes: no access-log line, no trace.
UNTRACED_ROUTES = frozenset({"/health", "/ready", "/metrics"})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Accepts or makes `X-Request-Id`, returns it, writes one access-log line and the HTTP metrics;
    with tracing on, the request's SERVER span (server/tracing.py), whose trace id the line carries.

    While `closing()` is true (the server drains after SIGTERM) every response says
    `Connection: close`, so that clients and load balancers reconnect elsewhere. With several API
    processes, `X-Rerank-Process: api-N` names the one that answered.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        closing: Callable[[], bool] = lambda: False,
        process_name: str | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.closing = closing
        self.tracing = tracing
        self.extra_headers = [(b"x-rerank-process", process_name.encode())] if process_name else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (header(scope, b"x-request-id") or "")[:200] or uuid.uuid4().hex
        stats = RequestStats()
        scope.setdefault("state", {}).update(request_id=request_id, stats=stats)
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        if not self.tracing.enabled or route in UNTRACED_ROUTES:
            await self._serve(scope, receive, send, request_id, stats, route, None)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        attributes = {
            "http.request.method": scope["method"],
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
            "client.address": (scope.get("client") or ("-",))[0],
            "rerank.request_id": request_id,
        }
        if route != "other":
            attributes["http.route"] = route
        name = f"{scope['method']} {route if route != 'other' else ''}".rstrip()
        with self.tracing.server_span(name, headers, attributes) as span:
            await self._serve(scope, receive, send, request_id, stats, route, span)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        stats: RequestStats,
        route: str,
        span: Any,
    ) -> None:
        status = CLIENT_CLOSED
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                    *self.extra_headers,
                ]
                if self.closing() and not any(k.lower() == b"connection" for k, _ in message["headers"]):
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # A bug: the traceback goes to the log only, the caller gets an opaque 500 with the request id.
            # Answered here rather than by Starlette's ServerErrorMiddleware, which would also drop the connection.
            logger.exception("internal error in request %s", request_id, extra={"request_id": request_id})
            if span is not None:
                span.record_exception(exc)
            if status != CLIENT_CLOSED:
                raise  # the response had started: nothing sane can be sent any more
            message = f"internal server error (request id {request_id})"
            tei = bool(scope["state"].get("tei"))  # the route found a body in TEI's shape
            await dialect_error_response(tei, ErrorKind.INTERNAL, message)(scope, receive, send_with_id)
        finally:
            latency = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(latency)
            trace = ""
            extra = {"request_id": request_id}
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("rerank.documents", stats.documents)
                if status >= 500:
                    mark_error(span, f"HTTP {status}")
                extra["trace_id"] = trace_id(span)
                trace = " trace_id=" + extra["trace_id"]
            if route not in UNTRACED_ROUTES:
                access_logger.info(
                    '%s "%s %s" %d docs=%d tokens=%d cached=%d %.1fms request_id=%s%s',
                    (scope.get("client") or ("-",))[0],
                    scope["method"],
                    scope["path"],
                    status,
                    stats.documents,
                    stats.tokens,
                    stats.cached_tokens,
                    latency * 1000,
                    request_id,
                    trace,
                    extra=extra,
                )


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer KEY` or `X-API-Key: KEY` on every route but the public ones.
    On a `dialect_paths` route the refused body is read (bounded) to answer in its dialect."""

    def __init__(
        self, app: ASGIApp, keys: Iterable[str], public_paths: Iterable[str], dialect_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.public_paths = frozenset(public_paths)
        self.dialect_paths = frozenset(dialect_paths)

    def _authorized(self, scope: Scope) -> bool:
        given = header(scope, b"x-api-key")
        auth = header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            return False
        candidate = given.encode("latin-1")
        # Compare with every key, in constant time each, so timing tells nothing about which matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        tei = False
        if scope["path"] in self.dialect_paths and scope["method"] == "POST":
            _, head = await discard_body(receive)
            tei = is_tei_head(head)
        response = dialect_error_response(
            tei,
            ErrorKind.AUTHENTICATION,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="rerank"'},
        )
        await response(scope, receive, send)


# After refusing a body, keep reading and discarding what the client still sends (as nginx's
# lingering close does), so that a client that uploads the whole body before it reads the answer
# (async httpx, aiohttp) sees the 413 instead of a reset connection. Bounded, so that a slow or
# endless upload cannot hold the connection: the most bytes and seconds spent discarding.
LINGER_MAX_BYTES = 256 * 1024 * 1024
LINGER_MAX_SECONDS = 10.0


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


class BodyLimitMiddleware:
    """Refuses a request body over `limit` bytes with 413, without keeping it in memory.

    A Content-Length over the limit is refused before any of the body is read; a chunked body as
    soon as it passes the limit. Either way the rest of the body is read and discarded before the
    answer (bounded: LINGER_MAX_BYTES, LINGER_MAX_SECONDS; not when the client sent
    `Expect: 100-continue` and so waits for the answer before it uploads), and the connection is
    closed after it.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, size: str) -> ServiceError:
        return ServiceError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"request body of {size} bytes is over the limit of {self.limit} bytes",
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            exc = self._too_large(length)
            head = b""
            if (header(scope, b"expect") or "").lower() != "100-continue":
                _, head = await discard_body(receive)
            await dialect_error_response(is_tei_head(head), exc.kind, exc.message, exc.headers)(scope, receive, send)
            return
        received = 0
        state = scope.setdefault("state", {})
        state["body_head"] = b""  # for the route's answer to a body it cannot read or parse

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if len(state["body_head"]) < HEAD_BYTES:
                    state["body_head"] += chunk[: HEAD_BYTES - len(state["body_head"])]
                received += len(chunk)
                if received > self.limit:
                    exc = self._too_large(f"more than {received}")
                    if message.get("more_body", False):
                        await discard_body(receive)
                    raise exc
            return message

        await self.app(scope, limited_receive, send)
