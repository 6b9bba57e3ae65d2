"""Error kinds: one table (the `ErrorKind` enum: each kind's HTTP status and TEI's name for it), the
two dialects a request may be answered in, and `ServiceError`, which carries a kind, its message and
that dialect from wherever it is raised. How an error becomes a response body is the HTTP edge's
(server/http/error_responses.py).
"""

from __future__ import annotations

from enum import StrEnum

CLIENT_CLOSED = 499  # nginx's code for "the client hung up before the answer" (access log, metrics)


class ErrorKind(StrEnum):
    """What went wrong, as Cohere's error body's `type` names it, with its HTTP status and TEI's name."""

    INVALID_REQUEST = "invalid_request_error", 400, "Validation"
    AUTHENTICATION = "authentication_error", 401, "Validation"
    NOT_FOUND = "not_found_error", 404, "Validation"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "Validation"
    PAYLOAD_TOO_LARGE = "payload_too_large", 413, "Validation"
    VALIDATION = "validation_error", 422, "Validation"
    EMPTY = "empty", 422, "Empty"  # TEI's "Empty": a request in TEI's shape with no texts
    OVERLOADED = "overloaded_error", 429, "Overloaded"
    INTERNAL = "internal_error", 500, "Backend"
    SERVICE_UNAVAILABLE = "service_unavailable", 503, "Unhealthy"
    TIMEOUT = "timeout_error", 504, "Backend"

    status: int
    tei_type: str

    def __new__(cls, value: str, status: int, tei_type: str) -> ErrorKind:
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.status = status
        kind.tei_type = tei_type
        return kind


ERROR_STATUSES = sorted({kind.status for kind in ErrorKind})  # every status an error may have (OpenAPI)


class Dialect(StrEnum):
    COHERE = "cohere"  # Cohere's, Jina's and vLLM's shape (`documents`), and every non-rerank route
    TEI = "tei"  # text-embeddings-inference's (`texts`): server/dialects/tei.py


class ServiceError(Exception):
    """An error a caller sees: its kind, its message, and the dialect it is answered in."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        headers: dict[str, str] | None = None,
        dialect: Dialect = Dialect.COHERE,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers or {}
        self.dialect = dialect
