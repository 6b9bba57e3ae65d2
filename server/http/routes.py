"""The server's HTTP paths, named once: the routes serve them, the middleware labels its metrics and
decides a body's dialect by them."""

from __future__ import annotations

RERANK_ROUTES = ("/v1/rerank", "/rerank", "/v2/rerank")  # Cohere's and Jina's shape, and TEI's
SCORE_ROUTES = ("/score", "/v1/score")  # vLLM's score API
INVOCATIONS_ROUTE = "/invocations"  # SageMaker's: any rerank or score body, by its shape
PING_ROUTE = "/ping"  # SageMaker's health check
PROBE_ROUTES = ("/health", "/ready", PING_ROUTE, "/metrics")  # probes and scrapes: no access log, no trace
OTHER_ROUTES = ("/v1/models", "/info", "/docs", "/openapi.json")
