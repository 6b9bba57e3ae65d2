"""Traces (server/core/tracing.py): received by an OTLP receiver in the test (OTLP/HTTP and OTLP/gRPC,
decoded with opentelemetry-proto) and checked span by span: the caller's trace continued, one
SERVER span per request with its children, their attributes, the trace id in the access log.
With several API processes each exports (tests/test_multiprocess.py)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from server.core.settings import Settings
from server.core.tracing import Tracing, http_traces_url, setup_tracing, traces_endpoint, traces_protocol

from . import otlp_receiver
from .conftest import API_KEY, wait_until
from .otlp_receiver import ReceivedSpan, Receiver

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BODY = {"query": "What is the capital of China?", "documents": ["Beijing.", "Gravity.", "Paris is in France."]}


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Receiver]]:
    with otlp_receiver.http_receiver() as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Receiver]]:
    with otlp_receiver.grpc_receiver() as receiver:
        yield receiver


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# --- no engine ------------------------------------------------------------------------------
def test_off_by_default_and_off_means_no_opentelemetry(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    tracing = setup_tracing(Settings().otlp_traces_endpoint, None)
    assert not tracing.enabled
    with tracing.span("anything") as span:
        assert span is None  # call sites set attributes only on a real span
    tracing.shutdown()


def test_the_standard_variables_are_honoured(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert traces_endpoint(None) == "http://collector:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces")
    assert traces_endpoint(None) == "http://traces:4318/v1/traces"
    assert traces_endpoint("http://flag:4318") == "http://flag:4318"  # the flag wins
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert traces_endpoint("http://flag:4318") is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert traces_endpoint("http://flag:4318") is None

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    assert traces_protocol(None) == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert traces_protocol(None) == "grpc"
    assert traces_protocol("http/protobuf") == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        traces_protocol(None)

    assert http_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert http_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert http_traces_url("https://x/otlp/v1/traces") == "https://x/otlp/v1/traces"
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(otlp_traces_endpoint="collector:4317")


def test_service_name_and_process_in_the_resource(monkeypatch, http_receiver):
    url, received = http_receiver
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    tracing = setup_tracing(url, "http/protobuf", "api-3")
    with tracing.span("one"):
        pass
    assert tracing.flush()
    tracing.shutdown()
    (span,) = received.spans
    assert span.resource["service.name"] == "qwen3-reranker"
    assert span.resource["rerank.api_process"] == "api-3"
    assert span.resource["deployment.environment.name"] == "test"
    assert span.resource["service.instance.id"]

    monkeypatch.setenv("OTEL_SERVICE_NAME", "search-reranker")
    tracing = setup_tracing(url, "http/protobuf")
    with tracing.span("two"):
        pass
    tracing.shutdown()
    assert received.spans[-1].resource["service.name"] == "search-reranker"


# --- the real engine ------------------------------------------------------------------------
def spans_of(received: Receiver, tracing: Tracing, trace_id: str, count: int) -> dict[str, ReceivedSpan]:
    assert tracing.flush()
    assert wait_until(lambda: len(received.trace(trace_id)) >= count, timeout=30), received.trace(trace_id)
    spans = received.trace(trace_id)
    by_name = {s.name: s for s in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]  # each part once
    return by_name


@pytest.mark.engine
def test_a_rerank_request_is_one_trace_continuing_the_callers(live_server, http_receiver, caplog):
    url, received = http_receiver
    live = live_server(otlp_traces_endpoint=url, score_cache_size=1000)
    tracing: Tracing = live.app.state.tracing
    try:
        header, trace_id, caller_span = traceparent()
        caplog.set_level(logging.INFO, logger="server.access")
        r = httpx.post(
            live.url + "/v1/rerank", json=BODY, headers={**AUTH, "traceparent": header, "X-Request-Id": "traced-1"}
        )
        assert r.status_code == 200, r.text
        spans = spans_of(received, tracing, trace_id, 7)
        root = spans["POST /v1/rerank"]
        assert root.parent_span_id == caller_span  # the caller's trace continues
        assert root.kind == SpanProto.SPAN_KIND_SERVER
        assert root.attributes["http.request.method"] == "POST"
        assert root.attributes["http.route"] == "/v1/rerank"
        assert root.attributes["url.path"] == "/v1/rerank"
        assert root.attributes["http.response.status_code"] == 200
        assert root.attributes["client.address"] == "127.0.0.1"
        assert root.attributes["rerank.request_id"] == "traced-1"
        assert root.attributes["rerank.documents"] == 3
        children = {
            "rerank.tokenize",
            "rerank.score_cache.lookup",
            "rerank.admission",
            "rerank.engine",
            "rerank.score_cache.store",
            "rerank.response",
        }
        assert set(spans) == children | {root.name}
        for name in children:
            assert spans[name].parent_span_id == root.span_id, name
        usage = r.json()["usage"]
        assert spans["rerank.tokenize"].attributes == {
            "rerank.pairs": 3,
            "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        }
        assert spans["rerank.score_cache.lookup"].attributes == {
            "rerank.score_cache.hits": 0,
            "rerank.score_cache.misses": 3,
        }
        assert spans["rerank.admission"].attributes["rerank.admitted"] is True
        assert spans["rerank.admission"].attributes["rerank.pairs"] == 3
        engine = spans["rerank.engine"].attributes
        assert engine["rerank.pairs"] == 3
        assert engine["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
        assert engine["gen_ai.usage.cache_read.input_tokens"] == usage["cached_tokens"]
        assert engine["gen_ai.request.model"] == "qwen3-reranker-test"
        # The access log line names the trace (text and JSON: the record carries it).
        (line,) = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "traced-1"]
        assert line.trace_id == trace_id and f"trace_id={trace_id}" in line.getMessage()

        # Again: the score cache answers; no admission, no engine. TEI's shape too, a trace of its own.
        header, trace_id, _ = traceparent()
        body = {"query": BODY["query"], "texts": BODY["documents"]}
        r = httpx.post(live.url + "/rerank", json=body, headers={**AUTH, "traceparent": header})
        assert r.status_code == 200, r.text
        spans = spans_of(received, tracing, trace_id, 4)
        assert set(spans) == {"POST /rerank", "rerank.tokenize", "rerank.score_cache.lookup", "rerank.response"}
        assert spans["rerank.score_cache.lookup"].attributes["rerank.score_cache.hits"] == 3

        # No traceparent: a trace of its own, rooted here. A refusal: the root span says so.
        before = {s.trace_id for s in received.spans}
        r = httpx.post(live.url + "/v1/rerank", json={"query": "q", "documents": []}, headers=AUTH)
        assert r.status_code == 200
        r = httpx.post(live.url + "/v1/rerank", json={"query": "q"}, headers=AUTH)
        assert r.status_code == 422
        assert tracing.flush()
        assert wait_until(lambda: len({s.trace_id for s in received.spans} - before) == 2, timeout=30)
        roots = [s for s in received.spans if s.trace_id not in before and s.name == "POST /v1/rerank"]
        assert all(s.parent_span_id == "" for s in roots)
        assert sorted(s.attributes["http.response.status_code"] for s in roots) == [200, 422]

        # Probes and scrapes are not traced.
        count = len(received.spans)
        for path in ("/health", "/ready", "/metrics"):
            httpx.get(live.url + path, headers=AUTH)
        assert tracing.flush() and len(received.spans) == count
    finally:
        tracing.shutdown()


@pytest.mark.engine
def test_traces_over_grpc(live_server, grpc_receiver):
    url, received = grpc_receiver
    live = live_server(otlp_traces_endpoint=url, otlp_traces_protocol="grpc")
    tracing: Tracing = live.app.state.tracing
    try:
        header, trace_id, caller_span = traceparent()
        r = httpx.post(live.url + "/v2/rerank", json=BODY, headers={**AUTH, "traceparent": header})
        assert r.status_code == 200, r.text
        spans = spans_of(received, tracing, trace_id, 5)
        assert spans["POST /v2/rerank"].parent_span_id == caller_span
        assert {"rerank.tokenize", "rerank.admission", "rerank.engine", "rerank.response"} <= set(spans)
    finally:
        tracing.shutdown()
