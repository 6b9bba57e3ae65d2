"""OpenTelemetry traces, off unless an OTLP endpoint is given (--otlp-traces-endpoint, or the standard
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables).

One SERVER span per request (`POST /v1/rerank`), continuing the caller's W3C `traceparent`, with a
child span for each part that costs time:

    POST /v1/rerank                 http.*, url.path, client.address, rerank.request_id, rerank.documents
      rerank.tokenize               rerank.pairs (windows included), gen_ai.usage.input_tokens
      rerank.score_cache.lookup     rerank.score_cache.hits, rerank.score_cache.misses
      rerank.admission              rerank.pairs, rerank.pairs_in_flight, rerank.admitted
      rerank.engine                 rerank.pairs, gen_ai.usage.input_tokens, gen_ai.usage.cache_read.input_tokens
      rerank.score_cache.store      rerank.pairs
      rerank.response               (serializing the answer)

Attribute names follow OpenTelemetry's semantic conventions where one exists (HTTP server spans,
gen_ai.* token usage); the rest are `rerank.*`. Each API process has its own TracerProvider and
exporter (made after the process started) and its own `service.instance.id`. The rest of the
standard variables are the SDK's own: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER(_ARG), OTEL_PROPAGATORS, OTEL_BSP_*, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS,
_TIMEOUT, _CERTIFICATE, _COMPRESSION; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn
tracing off.

Off, `Tracing` imports nothing of OpenTelemetry and every span is `contextlib.nullcontext()`: a
call site pays one method call (docs/performance.md measures it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from server import __version__

logger = logging.getLogger("server.tracing")

Protocol = Literal["http/protobuf", "grpc"]
SERVICE_NAME = "qwen3-reranker"
TRACER_NAME = "server"
FLUSH_TIMEOUT_MS = 5000  # at shutdown: at most this long sending the last spans
_OFF = contextlib.nullcontext()  # reusable: `with` on it yields None


class Tracing:
    """The tracer of one API process, or nothing (`Tracing()`: off)."""

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME, __version__) if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(self, name: str) -> contextlib.AbstractContextManager[Any]:
        """A child span of the current one (set attributes on what `with` yields, unless None)."""
        if self._tracer is None:
            return _OFF
        return self._tracer.start_as_current_span(name)

    @contextlib.contextmanager
    def server_span(self, name: str, headers: Mapping[str, str], attributes: dict[str, Any]) -> Iterator[Any]:
        """The request's SERVER span, continuing the trace of a `traceparent` among `headers`."""
        from opentelemetry import propagate, trace

        assert self._tracer is not None
        parent = propagate.extract(headers)
        with self._tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes, record_exception=False
        ) as span:
            yield span

    def flush(self, timeout_ms: int = FLUSH_TIMEOUT_MS) -> bool:
        """Send the spans buffered so far; False if they were not all sent in time."""
        return self._provider.force_flush(timeout_ms) if self._provider is not None else True

    def shutdown(self) -> None:
        """Send the spans still buffered (bounded), then stop the exporter."""
        if self._provider is not None:
            self.flush()
            self._provider.shutdown()


NO_TRACING = Tracing()  # off: what every part of the server holds unless given a provider's


def trace_id(span: Any) -> str:
    """A span's trace id as W3C writes it (32 hex digits)."""
    return format(span.get_span_context().trace_id, "032x")


def mark_error(span: Any, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


def traces_endpoint(endpoint: str | None) -> str | None:
    """The endpoint given, or the standard variables' (None: tracing is off)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    return endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def traces_protocol(protocol: Protocol | None) -> Protocol:
    chosen = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if chosen not in ("http/protobuf", "grpc"):
        raise ValueError(f"OTLP protocol {chosen!r}: this server exports http/protobuf or grpc")
    return chosen  # type: ignore[return-value]


def http_traces_url(endpoint: str) -> str:
    """OTLP/HTTP posts to <endpoint>/v1/traces: a bare collector address gets the path added."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def setup_tracing(endpoint: str | None, protocol: Protocol | None, process_name: str | None = None) -> Tracing:
    """This process's tracing: off (no endpoint anywhere), or a provider exporting in batches."""
    endpoint = traces_endpoint(endpoint)
    if not endpoint:
        return NO_TRACING
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    chosen = traces_protocol(protocol)
    if chosen == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter: Any = GrpcExporter(endpoint=endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        endpoint = http_traces_url(endpoint)
        exporter = HttpExporter(endpoint=endpoint)
    attributes: dict[str, Any] = {
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
    }
    if process_name is not None:
        attributes["rerank.api_process"] = process_name
    resource = Resource.create(attributes)  # + OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER (default: parent-based, all)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info("tracing: OTLP %s to %s as service %s", chosen, endpoint, resource.attributes.get("service.name"))
    return Tracing(provider)
