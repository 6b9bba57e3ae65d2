"""HTTP routes. Thin: parse, hand to the service, serialize."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from server import __version__
from server.engine_args import api_processes, max_batch_tokens
from server.errors import CLIENT_CLOSED, ErrorKind, ServiceError, describe_validation_errors, error_response
from server.protocol import ErrorResponse, ModelCard, ModelList, RerankRequest, RerankResponse
from server.rerank_job import Ranking, RerankJob
from server.serving import RequestStats, RerankService
from server.tei_protocol import (
    HEAD_BYTES,
    TEI_RANKS,
    TeiError,
    TeiInfo,
    TeiRank,
    TeiRerankRequest,
    dialect_error_response,
    is_tei_body,
    is_tei_head,
    tei_error_response,
)

logger = logging.getLogger("server.api")
router = APIRouter()

RERANK_ROUTES = ("/v1/rerank", "/rerank", "/v2/rerank")
# The rerank routes parse their body themselves (orjson, then the dialect's model): these are the
# request bodies they take, published in /openapi.json (server/app.py adds their schemas).
REQUEST_MODELS: tuple[type[BaseModel], ...] = (RerankRequest, TeiRerankRequest)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 500, 503, 504)
}
RERANK_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse | TeiError}
    for status in ERROR_RESPONSES  # TeiError: requests in TEI's shape
}


def json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def model_response(answer: BaseModel) -> Response:
    """A typed answer as JSON; fields never set (`document` without return_documents) are left out."""
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def score_unless_hung_up(service: RerankService, request: Request, job: RerankJob) -> Ranking | None:
    """The job's ranking, or None if the client hung up first (its engine requests are aborted)."""
    request_id: str = request.state.request_id
    stats: RequestStats = request.state.stats
    work = asyncio.create_task(service.rerank(job, request_id, stats))
    hangup = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait((work, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not work.done():  # the client hung up (or we were cancelled): abort its engine requests
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServiceError):
                await work
            logger.info(
                "client hung up: aborted %d documents of request %s",
                stats.documents,
                request_id,
                extra={"request_id": request_id},
            )
    return None if work.cancelled() else work.result()


async def rerank(request: Request) -> Response:
    """Score every document against the query; results sorted by score, highest first.

    Cohere's shape (`documents`) or TEI's (`texts`, server/tei_protocol.py): one scoring path."""
    try:
        raw = await request.body()
    except ServiceError as exc:  # over --max-body-bytes (server/middleware.py): its first bytes tell the dialect
        return dialect_error_response(is_tei_head(request.state.body_head), exc.kind, exc.message, exc.headers)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"request body is not valid JSON: {exc}"
        return dialect_error_response(is_tei_head(raw[:HEAD_BYTES]), ErrorKind.INVALID_REQUEST, message)
    if is_tei_body(data):
        request.state.tei = True  # an internal error, too, answers in TEI's shape (server/middleware.py)
        return await rerank_tei(request, data)
    body = RerankRequest.model_validate(data)
    ranking = await score_unless_hung_up(request.app.state.service, request, body.to_job())
    if ranking is None:
        return Response(status_code=CLIENT_CLOSED)
    with request.app.state.tracing.span("rerank.response"):
        answer = body.response(ranking, request.state.request_id, request.app.state.settings.model_name)
        return model_response(answer)


async def rerank_tei(request: Request, data: Any) -> Response:
    try:
        body = TeiRerankRequest.model_validate(data)
    except ValidationError as exc:
        return tei_error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())))
    if not body.texts:
        return tei_error_response(ErrorKind.EMPTY, "`texts` cannot be empty")
    try:
        ranking = await score_unless_hung_up(request.app.state.service, request, body.to_job())
    except ServiceError as exc:
        return tei_error_response(exc.kind, exc.message, exc.headers)
    if ranking is None:
        return Response(status_code=CLIENT_CLOSED)
    with request.app.state.tracing.span("rerank.response"):
        ranks = TEI_RANKS.dump_json(body.response(ranking), exclude_unset=True)
        return Response(ranks, media_type="application/json")


for _path in RERANK_ROUTES:
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        summary="Rerank documents by relevance to a query",
        responses={200: {"model": RerankResponse | list[TeiRank]}, **RERANK_ERROR_RESPONSES},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in REQUEST_MODELS]}
                    }
                },
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
        return error_response(ErrorKind.SERVICE_UNAVAILABLE, "the server is shutting down")
    if not service.ready:
        return error_response(ErrorKind.SERVICE_UNAVAILABLE, "the engine is not ready")
    return json_response({"status": "ready", "model": service.settings.model_name})


@router.get("/v1/models", response_model=ModelList, summary="The served model")
async def models(request: Request) -> Response:
    settings = request.app.state.settings
    card = ModelCard(id=settings.model_name, max_model_len=settings.max_model_len)
    return json_response(ModelList(data=[card]).model_dump())


@router.get("/info", response_model=TeiInfo, summary="The served model, in TEI's words")
async def info(request: Request) -> Response:
    service: RerankService = request.app.state.service
    settings = service.settings
    card = TeiInfo(
        model_id=settings.model_name,
        model_sha=service.model_sha,
        model_dtype=service.model_dtype or settings.dtype,
        max_concurrent_requests=settings.max_pairs_in_flight,
        max_input_length=settings.max_model_len,
        max_batch_tokens=max_batch_tokens(settings),
        max_client_batch_size=settings.max_documents,
        tokenization_workers=api_processes(settings),
        version=__version__,
    )
    return json_response(card.model_dump())


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
