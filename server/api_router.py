"""HTTP routes. Thin: parse, hand to the service, serialize."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from server.errors import ServiceError, error_response
from server.middleware import CLIENT_CLOSED
from server.protocol import ErrorResponse, ModelCard, ModelList, RerankRequest, RerankResponse
from server.serving import RequestStats, RerankService

logger = logging.getLogger("server.api")
router = APIRouter()

RERANK_ROUTES = ("/v1/rerank", "/rerank", "/v2/rerank")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 500, 503, 504)
}


def json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def parse_rerank_request(body: bytes) -> RerankRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError("invalid_request_error", f"request body is not valid JSON: {exc}") from None
    return RerankRequest.model_validate(data)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def rerank(request: Request) -> Response:
    """Score every document against the query; results sorted by relevance_score, highest first."""
    service: RerankService = request.app.state.service
    body = parse_rerank_request(await request.body())
    request_id: str = request.state.request_id
    stats: RequestStats = request.state.stats
    work = asyncio.create_task(service.rerank(body, request_id, stats))
    hangup = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait((work, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not work.done():  # the client hung up (or we were cancelled): abort its engine requests
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServiceError):
                await work
            logger.info("client hung up: aborted %d documents of request %s", stats.documents, request_id)
    if work.cancelled():
        return Response(status_code=CLIENT_CLOSED)
    return json_response(work.result())


for _path in RERANK_ROUTES:
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        summary="Rerank documents by relevance to a query",
        responses={200: {"model": RerankResponse}, **ERROR_RESPONSES},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RerankRequest"}}},
            }
        },
        operation_id=f"rerank{_path.replace('/', '_')}",
    )


@router.get("/health", summary="Liveness: 200 while the process serves")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once the engine has scored a warm-up request", responses={503: {}})
async def ready(request: Request) -> Response:
    service: RerankService = request.app.state.service
    if service.draining:
        return error_response("service_unavailable", "the server is shutting down")
    if not service.ready:
        return error_response("service_unavailable", "the engine is not ready")
    return json_response({"status": "ready", "model": service.settings.model_name})


@router.get("/v1/models", response_model=ModelList, summary="The served model")
async def models(request: Request) -> Response:
    settings = request.app.state.settings
    card = ModelCard(id=settings.model_name, max_model_len=settings.max_model_len)
    return json_response(ModelList(data=[card]).model_dump())


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
