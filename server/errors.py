"""Errors: one table (the `ErrorKind` enum: each kind's HTTP status and TEI's name for it), the two
dialects a request may speak, and one error body per dialect:

- Cohere's (Jina's, vLLM's) and every non-rerank route: `{"error": {"message", "type", "code"}}`;
- TEI's, for a request in TEI's shape: `{"error": "...", "error_type": "..."}`.

A request's dialect is decided once, by `dialect_of`, from its body: TEI's names `texts` and no
`documents`. A `ServiceError` carries its kind and the dialect it is answered in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger("server.errors")
CLIENT_CLOSED = 499  # nginx's code for "the client hung up before the answer" (access log, metrics)
HEAD_BYTES = 64 * 1024  # of a body that is not parsed (too large, not JSON, refused): what tells its dialect


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
    TEI = "tei"  # text-embeddings-inference's (`texts`): server/tei_protocol.py


def dialect_of(body: Any) -> Dialect:
    """TEI's shape names `texts` and not `documents`: from the parsed body's keys, or, for a body that
    cannot be parsed (over the size limit, not JSON, refused unread), from its first HEAD_BYTES."""
    if isinstance(body, bytes | bytearray):
        head = bytes(body[:HEAD_BYTES])
        return Dialect.TEI if b'"texts"' in head and b'"documents"' not in head else Dialect.COHERE
    if isinstance(body, Mapping) and "texts" in body and "documents" not in body:
        return Dialect.TEI
    return Dialect.COHERE


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

    def response(self) -> Response:
        return error_response(self.kind, self.message, self.dialect, self.headers)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    """The error body of Cohere's dialect and of every route but the rerank ones' TEI requests."""

    error: ErrorDetail


class TeiError(BaseModel):
    """TEI's error body, on requests in TEI's shape."""

    error: str
    error_type: str


def error_response(
    kind: ErrorKind, message: str, dialect: Dialect = Dialect.COHERE, headers: dict[str, str] | None = None
) -> Response:
    """The one way an error becomes a response: the kind's status, the dialect's body."""
    if dialect is Dialect.TEI:
        body: BaseModel = TeiError(error=message, error_type=kind.tei_type)
    else:
        body = ErrorResponse(error=ErrorDetail(message=message, type=kind, code=kind.status))
    return Response(body.model_dump_json(), status_code=kind.status, media_type="application/json", headers=headers)


def internal_error_message(request_id: str) -> str:
    return f"internal server error (request id {request_id})"


def log_internal_error(request_id: str) -> None:
    """A bug's traceback (the exception being handled) goes to the log only; the caller gets an opaque 500."""
    logger.exception("internal error in request %s", request_id, extra={"request_id": request_id})


def describe_validation_errors(errors: list[Any]) -> str:
    """`documents.2: Input should be a valid string; top_n: ...` from pydantic's error list."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "str", "TextDocument"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def kind_of_http_status(status: int) -> ErrorKind:
    """The kind of an error Starlette raised by status (routing: 404, 405)."""
    if status == ErrorKind.NOT_FOUND.status:
        return ErrorKind.NOT_FOUND
    if status == ErrorKind.METHOD_NOT_ALLOWED.status:
        return ErrorKind.METHOD_NOT_ALLOWED
    return ErrorKind.INVALID_REQUEST if status < 500 else ErrorKind.INTERNAL


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        return error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = kind_of_http_status(exc.status_code)
        message = str(exc.detail)
        if kind is ErrorKind.NOT_FOUND:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif kind is ErrorKind.METHOD_NOT_ALLOWED:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(kind, message, headers=getattr(exc, "headers", None))
