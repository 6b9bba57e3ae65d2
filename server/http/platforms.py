"""Managed platforms' container contracts, on the same service as every other route.

- SageMaker: `GET /ping` (200 once ready, as /ready) and `POST /invocations`, which takes every body
  this server takes and tells them apart by shape, as vLLM's /invocations does: the score API's
  sides (server/dialects/score.py), TEI's `texts`, Cohere's `documents`. (`docker run IMAGE serve`,
  port 8080 and /opt/ml/model: server/cli.py.)
- Vertex AI: `--health-route` and `--predict-route` (AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE): the first
  answers as /ready; the second takes `{"instances": [body, ...], "parameters": {...}}`, each
  instance any body /invocations takes with the parameters as defaults, and answers
  `{"predictions": [answer, ...]}` in order. An instance that fails fails the request: its status and
  `{"error": "instances[i]: message"}`, as Vertex passes a container's error to the caller.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from server.core.errors import Dialect, ErrorKind
from server.http.api_router import answer, answer_parsed, any_body, ready
from server.http.error_responses import dialect_of
from server.http.request_context import RequestRecord
from server.http.routes import INVOCATIONS_ROUTE, PING_ROUTE

router = APIRouter()


@router.get(PING_ROUTE, summary="SageMaker's health check: 200 once ready, as /ready")
async def ping(request: Request) -> Response:
    return await ready(request)


@router.post(INVOCATIONS_ROUTE, summary="SageMaker's inference route: any rerank or score body, by its shape")
async def invocations(request: Request) -> Response:
    return await answer(request, lambda data, record: any_body(request, data, record))


async def predict(request: Request) -> Response:
    """Vertex AI's predict route: every instance answered in order, or the first failure."""
    return await answer(request, lambda data, record: predict_body(request, data, record))


async def predict_body(request: Request, data: Any, record: RequestRecord) -> Response:
    instances = data.get("instances") if isinstance(data, dict) else None
    parameters = data.get("parameters") or {} if isinstance(data, dict) else {}
    if not isinstance(instances, list) or not instances or not isinstance(parameters, dict):
        message = 'a predict body is {"instances": [rerank or score bodies, at least one], "parameters": {...}}'
        return vertex_error(ErrorKind.VALIDATION, message)
    predictions = []
    for i, instance in enumerate(instances):
        merged = {**parameters, **instance} if isinstance(instance, dict) else instance
        dialect = dialect_of(merged)
        response = await answer_parsed(lambda d, r: any_body(request, d, r), merged, dialect, record)
        if response.status_code != 200:
            return vertex_error_from(response, i, dialect)
        predictions.append(orjson.loads(bytes(response.body)))
    return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")


def vertex_error(kind: ErrorKind, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=kind.status, media_type="application/json")


def vertex_error_from(response: Response, index: int, dialect: Dialect) -> Response:
    """An instance's error answer as Vertex's `{"error": "instances[i]: ..."}`, with its status and headers."""
    error: Any = orjson.loads(bytes(response.body)).get("error", "failed")
    message = error if dialect is Dialect.TEI or not isinstance(error, dict) else error.get("message", "failed")
    headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return Response(
        orjson.dumps({"error": f"instances[{index}]: {message}"}),
        status_code=response.status_code,
        media_type="application/json",
        headers=headers,
    )


def add_platform_routes(app: FastAPI, health_route: str | None, predict_route: str | None) -> None:
    """SageMaker's routes always; Vertex AI's where they are set (and not a route already served)."""
    app.include_router(router)
    taken = {getattr(route, "path", None) for route in app.routes}
    if health_route and health_route not in taken:
        app.add_api_route(health_route, ready, methods=["GET"], summary="Vertex AI's health route (AIP_HEALTH_ROUTE)")
    if predict_route and predict_route not in taken:
        app.add_api_route(
            predict_route, predict, methods=["POST"], summary="Vertex AI's predict route (AIP_PREDICT_ROUTE)"
        )
