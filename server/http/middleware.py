"""Plain ASGI middlewares: request ids, access log and HTTP metrics; API-key auth.

On the rerank routes a refused body is read (bounded) to answer the 401 in its dialect
(server/http/error_responses.py). The body limit and the other errors of a rerank request are the route's
(server/http/body.py, server/http/api_router.py), in the dialect the body decided."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.errors import CLIENT_CLOSED, Dialect, ErrorKind
from server.core.metrics import Metrics
from server.core.tracing import NO_TRACING, Tracing, mark_error, trace_id
from server.http.body import discard_body
from server.http.error_responses import (
    dialect_of,
    error_response,
    internal_error_message,
    log_internal_error,
)
from server.http.request_context import RequestRecord, current_request, request_record
from server.http.routes import INVOCATIONS_ROUTE, OTHER_ROUTES, PROBE_ROUTES, RERANK_ROUTES, SCORE_ROUTES

access_logger = logging.getLogger("server.access")

# Known routes are metric labels as they are; anything else is "other" (bounded cardinality).
KNOWN_ROUTES = frozenset(RERANK_ROUTES + SCORE_ROUTES + (INVOCATIONS_ROUTE,) + PROBE_ROUTES + OTHER_ROUTES)
# Probes and scrapes: no access-log line, no trace.
UNTRACED_ROUTES = frozenset(PROBE_ROUTES)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Accepts or makes `X-Request-Id`, returns it, writes one access-log line and the HTTP metrics;
    with tracing on, the request's SERVER span (server/core/tracing.py), whose trace id the line carries.

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
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        if not self.tracing.enabled or route in UNTRACED_ROUTES:
            with request_record(request_id) as record:
                await self._serve(scope, receive, send, record, route, None)
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
        with self.tracing.server_span(name, headers, attributes) as span, request_record(request_id) as record:
            await self._serve(scope, receive, send, record, route, span)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord, route: str, span: Any
    ) -> None:
        status = CLIENT_CLOSED
        started = time.perf_counter()
        id_header = (b"x-request-id", record.request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header, *self.extra_headers]
                if self.closing() and not any(k.lower() == b"connection" for k, _ in message["headers"]):
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # A bug outside a rerank route's own handling (which answers in the request's dialect): the
            # traceback goes to the log only, the caller gets an opaque 500 with the request id. Answered
            # here rather than by Starlette's ServerErrorMiddleware, which would also drop the connection.
            log_internal_error(record.request_id)
            if span is not None:
                span.record_exception(exc)
            if status != CLIENT_CLOSED:
                raise  # the response had started: nothing sane can be sent any more
            response = error_response(ErrorKind.INTERNAL, internal_error_message(record.request_id))
            await response(scope, receive, send_with_id)
        finally:
            self._record(scope, route, status, time.perf_counter() - started, record, span)

    def _record(self, scope: Scope, route: str, status: int, latency: float, record: RequestRecord, span: Any) -> None:
        """The request's HTTP metrics, its span's outcome and its access-log line."""
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(latency)
        if record.lane is not None:
            self.metrics.lane_latency.labels(record.lane).observe(latency)
        trace = ""
        extra = {"request_id": record.request_id}
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("rerank.documents", record.documents)
            if status >= 500:
                mark_error(span, f"HTTP {status}")
            extra["trace_id"] = trace_id(span)
            trace = " trace_id=" + extra["trace_id"]
        if route not in UNTRACED_ROUTES:
            access_logger.info(
                '%s "%s %s" %d docs=%d tokens=%d cached=%d priority=%d %.1fms request_id=%s%s',
                (scope.get("client") or ("-",))[0],
                scope["method"],
                scope["path"],
                status,
                record.documents,
                record.tokens,
                record.cached_tokens,
                record.priority,
                latency * 1000,
                record.request_id,
                trace,
                extra=extra,
            )


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer KEY` or `X-API-Key: KEY` on every route but the public ones.
    A key with a default priority (`priorities`) hands it to the request's record. On a
    `dialect_paths` route the refused body is read (bounded) to answer in its dialect."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        public_paths: Iterable[str],
        dialect_paths: Iterable[str] = (),
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        keys = list(keys)
        self.keys = [k.encode() for k in keys]
        self.priorities = [(priorities or {}).get(k) for k in keys]
        self.public_paths = frozenset(public_paths)
        self.dialect_paths = frozenset(dialect_paths)

    def _matching_key(self, scope: Scope) -> int | None:
        """The index of the key the request carries, or None."""
        given = header(scope, b"x-api-key")
        auth = header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            return None
        candidate = given.encode("latin-1")
        # Compare with every key, in constant time each, so timing tells nothing about which matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return matches.index(True) if any(matches) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        index = self._matching_key(scope)
        if index is not None:
            current_request().key_priority = self.priorities[index]
            await self.app(scope, receive, send)
            return
        dialect = Dialect.COHERE
        if scope["path"] in self.dialect_paths and scope["method"] == "POST":
            _, head = await discard_body(receive)
            dialect = dialect_of(head)
        response = error_response(
            ErrorKind.AUTHENTICATION,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            dialect,
            headers={"WWW-Authenticate": 'Bearer realm="rerank"'},
        )
        await response(scope, receive, send)
