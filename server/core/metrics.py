"""Prometheus metrics (prometheus-client), one registry per app so that tests can build several.

With several API processes (--api-processes) prometheus-client's multiprocess mode is on (the
supervisor sets PROMETHEUS_MULTIPROC_DIR): every process writes its samples to that directory and
a scrape of any process reads all of them, summed (in-flight gauges: summed over live processes;
engine_up: the lowest).
"""

from __future__ import annotations

import os
from collections import defaultdict
from enum import StrEnum

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from server.core.rerank_job import Lane

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class RejectReason(StrEnum):
    """rerank_rejected_requests_total's reasons (server/rerank/serving.py); overloaded is the 429."""

    TOO_MANY_DOCUMENTS = "too_many_documents"
    TEXT_TOO_LONG = "text_too_long"
    TOO_MANY_PAIRS = "too_many_pairs"
    QUERY_TOO_LONG = "query_too_long"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"


LANES = tuple(Lane)
PREFIX_RATIO_HELP = "prefix-cache tokens / tokens the engine scored, since start (the engine's own counts only)"
TOKEN_BUCKETS = (100, 500, 1000, 5000, 10_000, 50_000, 100_000, 500_000, 1_000_000)


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class Metrics:
    """The app's metrics. What the rerank work records is labelled with the served model's name
    (`for_model`); HTTP requests and the pairs in flight (what autoscalers read) are the server's."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._add_request_metrics(self.registry, ["model"])
        self._add_score_cache_metrics(self.registry, ["model"])
        self._add_lane_metrics(self.registry)

    def _add_request_metrics(self, r: CollectorRegistry, m: list[str]) -> None:
        """HTTP requests; each model's documents, tokens and refusals; what is in the engines."""
        self.requests = Counter("rerank_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "rerank_request_latency_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.documents = Histogram(
            "rerank_documents_per_request", "documents per rerank request", m, buckets=SIZE_BUCKETS, registry=r
        )
        self.tokens = Histogram(
            "rerank_tokens_per_request", "prompt tokens per rerank request", m, buckets=TOKEN_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter(
            "rerank_prompt_tokens", "prompt tokens of the requests (score-cache hits included)", m, registry=r
        )
        self.engine_prompt_tokens = Counter(
            "rerank_engine_prompt_tokens", "prompt tokens the engine scored (score-cache hits excluded)", m, registry=r
        )
        self.cached_tokens = Counter(
            "rerank_cached_prompt_tokens",
            "of the engine's prompt tokens, those read from vLLM's prefix cache",
            m,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "rerank_requests_in_flight", "rerank requests being scored", m, registry=r, multiprocess_mode="livesum"
        )
        self.pairs_in_flight = Gauge(
            "rerank_pairs_in_flight",
            "pairs in the engines, all models' (a pair: the query with one document, or one window of a chunked "
            "one; what autoscalers scale on)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.max_pairs_in_flight = Gauge(
            "rerank_max_pairs_in_flight",
            "--max-pairs-in-flight, the limit of rerank_pairs_in_flight (each model's engine)",
            registry=r,
            multiprocess_mode="max",
        )
        self.rejected = Counter(
            "rerank_rejected_requests", "requests refused, by model and reason", ["model", "reason"], registry=r
        )
        self.engine_up = Gauge(
            "rerank_engine_up", "1 when the model's engine can score", m, registry=r, multiprocess_mode="livemin"
        )

    def _add_score_cache_metrics(self, r: CollectorRegistry, m: list[str]) -> None:
        self.score_cache_hits = Counter(
            "rerank_score_cache_hits", "pairs answered from the score cache (this process's or Redis)", m, registry=r
        )
        self.score_cache_misses = Counter(
            "rerank_score_cache_misses", "pairs the score cache did not have (scored by the engine)", m, registry=r
        )
        self.score_cache_errors = Counter(
            "rerank_score_cache_errors", "Redis calls of the score cache that failed or timed out", m, registry=r
        )
        self.score_cache_entries = Gauge(
            "rerank_score_cache_entries",
            "pairs held in the in-process score cache",
            m,
            registry=r,
            multiprocess_mode="livesum",
        )

    def _add_lane_metrics(self, r: CollectorRegistry) -> None:
        """Priority lanes (interactive: priority <= 0, bulk: above; server/core/rerank_job.py Lane)."""
        self.lane_latency = Histogram(
            "rerank_lane_request_latency_seconds",
            "rerank request latency by priority lane (every status)",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lane_pairs = Counter(
            "rerank_lane_pairs",
            "pairs of the requests scored, by model and priority lane (score-cache hits included)",
            ["model", "lane"],
            registry=r,
        )
        self.lane_rejected = Counter(
            "rerank_lane_rejected_requests",
            "requests refused, by model, priority lane and reason",
            ["model", "lane", "reason"],
            registry=r,
        )
        self.lane_pairs_in_flight = Gauge(
            "rerank_lane_pairs_in_flight",
            "pairs in the engines by priority lane",
            ["lane"],
            registry=r,
            multiprocess_mode="livesum",
        )

    def for_model(self, name: str) -> ModelMetrics:
        return ModelMetrics(self, name)

    def render(self) -> bytes:
        """Our metrics with the prefix-cache ratio computed from their counters, then the process-wide
        registry: vLLM's own `vllm:*` engine metrics live there. In multiprocess mode: every process's
        samples, ours and vLLM's, from the shared directory."""
        tail = b""
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            families = list(registry.collect())
        else:
            families = list(self.registry.collect())
            tail = generate_latest(REGISTRY)
        totals: dict[str, float] = defaultdict(float)  # every model's together
        for family in families:
            for sample in family.samples:
                totals[sample.name] += sample.value
        engine = totals.get("rerank_engine_prompt_tokens_total", 0)
        cached = totals.get("rerank_cached_prompt_tokens_total", 0)
        hit_ratio = GaugeMetricFamily("rerank_prefix_cache_hit_ratio", PREFIX_RATIO_HELP, ratio(cached, engine))
        out = CollectorRegistry()
        out.register(_Fixed([*families, hit_ratio]))
        return generate_latest(out) + tail


class ModelMetrics:
    """One served model's series of the app's metrics (what server/rerank/serving.py records)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.model = model
        self._rejected = metrics.rejected
        self.documents = metrics.documents.labels(model)
        self.tokens = metrics.tokens.labels(model)
        self.prompt_tokens = metrics.prompt_tokens.labels(model)
        self.engine_prompt_tokens = metrics.engine_prompt_tokens.labels(model)
        self.cached_tokens = metrics.cached_tokens.labels(model)
        self.requests_in_flight = metrics.requests_in_flight.labels(model)
        self.pairs_in_flight = metrics.pairs_in_flight
        self.max_pairs_in_flight = metrics.max_pairs_in_flight
        self.score_cache_hits = metrics.score_cache_hits.labels(model)
        self.score_cache_misses = metrics.score_cache_misses.labels(model)
        self.score_cache_errors = metrics.score_cache_errors.labels(model)
        self.score_cache_entries = metrics.score_cache_entries.labels(model)
        self.engine_up = metrics.engine_up.labels(model)
        self._lane_rejected = metrics.lane_rejected
        self.lane_pairs = {lane: metrics.lane_pairs.labels(model, lane) for lane in LANES}
        self.lane_pairs_in_flight = {lane: metrics.lane_pairs_in_flight.labels(lane) for lane in LANES}
        for reason in RejectReason:  # every reason's series from the start: its rate is 0, not absent
            metrics.rejected.labels(model, reason)
            for lane in LANES:
                metrics.lane_rejected.labels(model, lane, reason)

    def reject(self, reason: RejectReason, lane: Lane) -> None:
        self._rejected.labels(self.model, reason).inc()
        self._lane_rejected.labels(self.model, lane, reason).inc()

    def record_request(self, documents: int, prompt: int, engine: int, cached: int) -> None:
        """A rerank request's documents, its prompt tokens, those the engine scored, and those of its
        read from the prefix cache (the warm-up is not a request: it is not recorded)."""
        self.documents.observe(documents)
        self.tokens.observe(prompt)
        self.prompt_tokens.inc(prompt)
        self.engine_prompt_tokens.inc(engine)
        self.cached_tokens.inc(cached)


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class _Fixed:
    """A collector of already collected metric families."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> list:
        return self.families
