"""One table from error kind to HTTP status, and one JSON shape for every error:

{"error": {"message": "...", "type": "...", "code": <status>}}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response


class ErrorKind(StrEnum):
    """What went wrong, as the error body's `type` names it."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    NOT_FOUND = "not_found_error"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    VALIDATION = "validation_error"
    EMPTY = "empty"  # TEI's "Empty": a request in TEI's shape with no texts
    OVERLOADED = "overloaded_error"
    INTERNAL = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout_error"


# The one table: error kind -> HTTP status
ERROR_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.EMPTY: 422,
    ErrorKind.VALIDATION: 422,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.INTERNAL: 500,
    ErrorKind.SERVICE_UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
}
STATUS_TYPE: dict[int, ErrorKind] = {status: kind for kind, status in ERROR_STATUS.items()}  # 422: VALIDATION
CLIENT_CLOSED = 499  # nginx's code for "the client hung up before the answer" (access log, metrics)


class ServiceError(Exception):
    """An error a caller sees, in the caller's dialect."""

    def __init__(self, kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.kind]


def error_body(kind: ErrorKind, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": ERROR_STATUS[kind]}})


def error_response(kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(kind, message), status_code=ERROR_STATUS[kind], media_type="application/json", headers=headers
    )


def describe_validation_errors(errors: list[Any]) -> str:
    """`documents.2: Input should be a valid string; top_n: ...` from pydantic's error list."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "str", "TextDocument"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        return error_response(exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        return error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        fallback = ErrorKind.INVALID_REQUEST if exc.status_code < 500 else ErrorKind.INTERNAL
        kind = STATUS_TYPE.get(exc.status_code, fallback)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return Response(
            orjson.dumps({"error": {"message": message, "type": kind, "code": exc.status_code}}),
            status_code=exc.status_code,
            media_type="application/json",
            headers=getattr(exc, "headers", None),
        )
