"""Builds the FastAPI app. The engine is attached later (`RerankService.start`), so tests can
build apps around one shared engine, and the server answers /health while the engine loads."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from server import __version__
from server.core.cluster import Cluster
from server.core.metrics import Metrics
from server.core.settings import Settings
from server.core.tracing import setup_tracing
from server.engine.engine_args import Deployment
from server.http.api_router import REQUEST_MODELS, router
from server.http.error_responses import install_error_handlers
from server.http.middleware import ApiKeyMiddleware, RequestContextMiddleware
from server.http.platforms import add_platform_routes
from server.http.routes import INVOCATIONS_ROUTE, RERANK_ROUTES, SCORE_ROUTES
from server.rerank.served_models import ServedModels
from server.rerank.serving import RerankService

PUBLIC_PATHS = ("/health", "/ready", "/ping")  # probes: liveness, readiness, SageMaker's


def create_app(settings: Settings, cluster: Cluster | None = None, deployment: Deployment | None = None) -> FastAPI:
    app = FastAPI(
        title="Qwen3 rerank server",
        version=__version__,
        description="Qwen3-Reranker on vLLM behind a Cohere/Jina/vLLM-compatible rerank API.",
    )
    metrics = Metrics()
    process_name = f"api-{cluster.index}" if cluster is not None else None
    tracing = setup_tracing(settings.otlp_traces_endpoint, settings.otlp_traces_protocol, process_name)
    app.state.settings = settings
    app.state.deployment = deployment or Deployment.resolve(settings)  # what /info reports
    app.state.metrics = metrics
    app.state.tracing = tracing  # shut down by whoever runs the app (server/processes/process.py)
    models = ServedModels(
        [RerankService(settings, served, metrics, cluster, tracing) for served in settings.served_models()]
    )
    app.state.models = models
    app.include_router(router)
    add_platform_routes(app, settings.health_route, settings.predict_route)
    install_error_handlers(app)

    # Added innermost first: the request context wraps auth. The body limit is the rerank routes'
    # (server/http/body.py): no other route reads a body.
    keys = settings.api_keys()
    if keys:
        public = PUBLIC_PATHS + (("/metrics",) if settings.metrics_public else ())
        public += (settings.health_route,) if settings.health_route else ()
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            public_paths=public,
            dialect_paths=RERANK_ROUTES + SCORE_ROUTES + (INVOCATIONS_ROUTE,),
            priorities=settings.key_priorities(),
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        closing=lambda: models.draining,
        process_name=process_name,
        tracing=tracing,
    )

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The rerank routes parse their body themselves (orjson): their request models' schemas.
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default_openapi()  # also caches it in app.openapi_schema
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in REQUEST_MODELS:
            request_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components[model.__name__] = request_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
