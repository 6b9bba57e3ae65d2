"""The one record of a request that its middleware and its route share: its id (X-Request-Id), and
what the access log and the span report about a rerank (documents, tokens, prefix-cached tokens).

RequestContextMiddleware (server/http/middleware.py) opens it for each request in a context variable;
the rerank route (server/http/api_router.py) reads the id and fills in the counts from the ranking it
gets back. Without the middleware (an app built bare, in tests) the route gets a record of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from server.core.rerank_job import Lane


@dataclass
class RequestRecord:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    documents: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    key_priority: int | None = None  # the default priority of the API key it came with (--api-key-priority)
    priority: int = 0  # what it was served at (server/core/rerank_job.py effective_priority)
    lane: Lane | None = None  # a rerank request's priority lane, once its body is read


_current: ContextVar[RequestRecord | None] = ContextVar("rerank_request", default=None)


@contextmanager
def request_record(request_id: str) -> Iterator[RequestRecord]:
    """The record of the request being served in this context, until it is answered."""
    record = RequestRecord(request_id)
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current_request() -> RequestRecord:
    """The record of the request in this context (a fresh one where no middleware opened one)."""
    record = _current.get()
    if record is None:
        record = RequestRecord()
        _current.set(record)
    return record
