"""HTTP routes. Thin: parse, hand to the service, serialize."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from server import __version__
from server.core.errors import CLIENT_CLOSED, ERROR_STATUSES, Dialect, ErrorKind, ServiceError
from server.core.rerank_job import Ranking, RerankJob, effective_priority, lane_of
from server.dialects.cohere import ModelCard, ModelList, RerankRequest, RerankResponse
from server.dialects.score import ScoreData, ScoreRequest, ScoreResponse, ScoreUsage, is_score_body
from server.dialects.tei import TEI_RANKS, TeiInfo, TeiRank, TeiRerankRequest
from server.engine.engine_args import Deployment
from server.http.body import read_body
from server.http.error_responses import (
    ErrorResponse,
    TeiError,
    describe_validation_errors,
    dialect_of,
    error_response,
    internal_error_message,
    log_internal_error,
    service_error_response,
)
from server.http.request_context import RequestRecord, current_request
from server.http.routes import RERANK_ROUTES, SCORE_ROUTES
from server.rerank.served_models import ServedModels
from server.rerank.serving import RerankService

logger = logging.getLogger("server.api")
router = APIRouter()

# The routes parse their body themselves (orjson, then the dialect's model): the bodies the rerank
# routes take, and every request body published in /openapi.json (server/http/app.py adds their schemas).
RERANK_REQUEST_MODELS: tuple[type[BaseModel], ...] = (RerankRequest, TeiRerankRequest)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (*RERANK_REQUEST_MODELS, ScoreRequest)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in ERROR_STATUSES}
RERANK_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse | TeiError}  # TeiError: requests in TEI's shape
    for status in ERROR_STATUSES
}


def served_models(request: Request) -> ServedModels:
    return request.app.state.models


def json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def score_unless_hung_up(
    service: RerankService, request: Request, job: RerankJob, record: RequestRecord
) -> Ranking | None:
    """The job's ranking, or None if the client hung up first (its engine requests are aborted); the
    request's record gets its counts for the access log."""
    rankings = await rank_unless_hung_up(service, request, [job], record)
    return None if rankings is None else rankings[0]


async def rank_unless_hung_up(
    service: RerankService, request: Request, jobs: list[RerankJob], record: RequestRecord
) -> list[Ranking] | None:
    """Every job's ranking (scored at once), or None if the client hung up first (their engine requests
    are aborted); served at the priority the request and its API key say. The request's record gets
    its counts for the access log."""
    key_priority = record.key_priority
    jobs = [dataclasses.replace(j, priority=effective_priority(j.priority, key_priority)) for j in jobs]
    priority = jobs[0].priority if jobs else effective_priority(0, key_priority)
    record.documents, record.priority, record.lane = sum(len(j.texts) for j in jobs), priority, lane_of(priority)
    ids = [record.request_id] if len(jobs) == 1 else [f"{record.request_id}-q{k}" for k in range(len(jobs))]
    work = asyncio.ensure_future(asyncio.gather(*(service.rerank(job, i) for job, i in zip(jobs, ids, strict=True))))
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
                record.documents,
                record.request_id,
                extra={"request_id": record.request_id},
            )
    if work.cancelled():
        return None
    rankings: list[Ranking] = work.result()
    record.tokens = sum(r.prompt_tokens for r in rankings)
    record.cached_tokens = sum(r.cached_tokens for r in rankings)
    return rankings


async def rerank(request: Request) -> Response:
    """Score every document against the query; results sorted by score, highest first.

    Cohere's shape (`documents`) or TEI's (`texts`, server/dialects/tei.py), decided once from the
    body; one scoring path; every error in the body's dialect."""
    return await answer(request, lambda data, record: rerank_body(request, data, record))


async def score(request: Request) -> Response:
    """vLLM's score API: one score per (text_1, text_2) pair, in the order sent (server/dialects/score.py)."""
    return await answer(request, lambda data, record: score_body(request, data, record))


async def answer(request: Request, handle: Any) -> Response:
    """Read the body within --max-body-bytes and answer it with `handle(data, record)`; every error in
    the body's dialect."""
    record = current_request()
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)
    return await answer_parsed(handle, body.data, body.dialect, record)


async def answer_parsed(handle: Any, data: Any, dialect: Dialect, record: RequestRecord) -> Response:
    try:
        return await handle(data, record)
    except ServiceError as exc:
        exc.dialect = dialect
        return service_error_response(exc)
    except ValidationError as exc:
        return error_response(ErrorKind.VALIDATION, describe_validation_errors(list(exc.errors())), dialect)
    except Exception:
        log_internal_error(record.request_id)
        return error_response(ErrorKind.INTERNAL, internal_error_message(record.request_id), dialect)


async def rerank_body(request: Request, data: Any, record: RequestRecord) -> Response:
    """A rerank body in its dialect: TEI's (`texts`) or Cohere's."""
    if dialect_of(data) is Dialect.TEI:
        return await rerank_tei(request, data, record)
    return await rerank_cohere(request, data, record)


async def any_body(request: Request, data: Any, record: RequestRecord) -> Response:
    """A body of any API this server speaks, told by its shape (SageMaker's /invocations, Vertex's
    instances): the score API's sides, else a rerank body."""
    if is_score_body(data):
        return await score_body(request, data, record)
    return await rerank_body(request, data, record)


async def score_body(request: Request, data: Any, record: RequestRecord) -> Response:
    body = ScoreRequest.model_validate(data)
    service = served_models(request).pick(body.model)
    jobs = body.jobs()
    rankings = await rank_unless_hung_up(service, request, [job for job, _ in jobs], record)
    if rankings is None:
        return Response(status_code=CLIENT_CLOSED)
    scores: list[float] = [0.0] * len(body.pairs())
    for (_, positions), ranking in zip(jobs, rankings, strict=True):
        values = ranking.logits if body.use_activation is False else ranking.scores
        for position, value in zip(positions, values, strict=True):
            scores[position] = value
    tokens = record.tokens
    answer = ScoreResponse(
        id=f"score-{record.request_id}",
        model=service.name,
        data=[ScoreData(index=i, score=value) for i, value in enumerate(scores)],
        usage=ScoreUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return Response(answer.model_dump_json(), media_type="application/json")


async def rerank_cohere(request: Request, data: Any, record: RequestRecord) -> Response:
    body = RerankRequest.model_validate(data)
    service = served_models(request).pick(body.model)
    ranking = await score_unless_hung_up(service, request, body.to_job(), record)
    if ranking is None:
        return Response(status_code=CLIENT_CLOSED)
    with request.app.state.tracing.span("rerank.response"):
        answer = body.response(ranking, record.request_id, service.name)
        return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")


async def rerank_tei(request: Request, data: Any, record: RequestRecord) -> Response:
    body = TeiRerankRequest.model_validate(data)
    if not body.texts:
        raise ServiceError(ErrorKind.EMPTY, "`texts` cannot be empty")
    service = served_models(request).pick_or_default(body.model)
    ranking = await score_unless_hung_up(service, request, body.to_job(), record)
    if ranking is None:
        return Response(status_code=CLIENT_CLOSED)
    with request.app.state.tracing.span("rerank.response"):
        ranks = TEI_RANKS.dump_json(body.response(ranking), exclude_unset=True)
        return Response(ranks, media_type="application/json")


for _path in SCORE_ROUTES:
    router.add_api_route(
        _path,
        score,
        methods=["POST"],
        summary="vLLM's score API: a score per pair (queries/documents, queries/items, data_1/data_2, text_1/text_2)",
        responses={200: {"model": ScoreResponse}, **ERROR_RESPONSES},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}},
            }
        },
        operation_id=f"score{_path.replace('/', '_')}",
    )

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
                        "schema": {
                            "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in RERANK_REQUEST_MODELS]
                        }
                    }
                },
            }
        },
        operation_id=f"rerank{_path.replace('/', '_')}",
    )


@router.get("/health", summary="Liveness: 200 while the process serves")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once every model has scored a warm-up request", responses={503: {}})
async def ready(request: Request) -> Response:
    models = served_models(request)
    if models.draining:
        return error_response(ErrorKind.SERVICE_UNAVAILABLE, "the server is shutting down")
    waiting = [service.name for service in models.services if not service.ready]
    if waiting:
        which = f" (models {', '.join(waiting)})" if len(models.names) > 1 else ""
        return error_response(ErrorKind.SERVICE_UNAVAILABLE, f"the engine is not ready{which}")
    return json_response({"status": "ready", "model": models.default.name})


@router.get("/v1/models", response_model=ModelList, summary="The served models, the default first")
async def models(request: Request) -> Response:
    cards = [ModelCard(id=s.name, max_model_len=s.max_model_len) for s in served_models(request).services]
    return json_response(ModelList(data=cards).model_dump())


@router.get("/info", response_model=TeiInfo, summary="The default model, in TEI's words")
async def info(request: Request) -> Response:
    service = served_models(request).default
    settings = service.settings
    deployment: Deployment = request.app.state.deployment
    card = TeiInfo(
        model_id=service.name,
        model_sha=service.model_sha,
        model_dtype=service.model_dtype or settings.dtype,
        max_concurrent_requests=settings.max_pairs_in_flight,
        max_input_length=service.max_model_len,
        max_batch_tokens=deployment.max_batch_tokens,
        max_client_batch_size=settings.max_documents,
        tokenization_workers=deployment.api_processes,
        version=__version__,
    )
    return json_response(card.model_dump())


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
