"""Error responses: one error body per dialect, and the handlers that turn every error into one.

- Cohere's (Jina's, vLLM's) and every non-rerank route: `{"error": {"message", "type", "code"}}`;
- TEI's, for a request in TEI's shape: `{"error": "...", "error_type": "..."}`.

A request's dialect is decided once, by `dialect_of`, from its body: TEI's names `texts` and no
`documents`. The kinds and their statuses are server/core/errors.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from server.core.errors import Dialect, ErrorKind, ServiceError

logger = logging.getLogger("server.errors")
HEAD_BYTES = 64 * 1024  # of a body that is not parsed (too large, not JSON, refused): what tells its dialect


def dialect_of(body: Any) -> Dialect:
    """TEI's shape names `texts` and not `documents`: from the parsed body's keys, or, for a body that
    cannot be parsed (over the size limit, not JSON, refused unread), from its first HEAD_BYTES."""
    if isinstance(body, bytes | bytearray):
        head = bytes(body[:HEAD_BYTES])
        return Dialect.TEI if b'"texts"' in head and b'"documents"' not in head else Dialect.COHERE
    if isinstance(body, Mapping) and "texts" in body and "documents" not in body:
        return Dialect.TEI
    return Dialect.COHERE


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


def service_error_response(exc: ServiceError) -> Response:
    """A `ServiceError` answered: its kind's status, its dialect's body, its headers (Retry-After)."""
    return error_response(exc.kind, exc.message, exc.dialect, exc.headers)


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
        return service_error_response(exc)

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
