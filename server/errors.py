"""One table from error kind to HTTP status, and one JSON shape for every error:

{"error": {"message": "...", "type": "...", "code": <status>}}
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

# error type -> HTTP status
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "validation_error": 422,
    "overloaded_error": 429,
    "internal_error": 500,
    "service_unavailable": 503,
    "timeout_error": 504,
}
STATUS_TYPE: dict[int, str] = {status: kind for kind, status in ERROR_STATUS.items()}
CLIENT_CLOSED = 499  # nginx's code for "the client hung up before the answer" (access log, metrics)


class ServiceError(Exception):
    """An error a caller sees: its `kind` is a key of ERROR_STATUS."""

    def __init__(self, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if kind not in ERROR_STATUS:
            raise ValueError(f"unknown error kind {kind!r}")
        self.kind = kind
        self.message = message
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.kind]


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": ERROR_STATUS[kind]}})


def error_response(kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
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
        return error_response("validation_error", describe_validation_errors(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        return error_response("validation_error", describe_validation_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = STATUS_TYPE.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "internal_error")
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
