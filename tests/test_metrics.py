"""Metrics (server/core/metrics.py) engine-free: what each counter counts, and the prefix-cache ratio
from the engine's own tokens (score-cache hits excluded)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.core.metrics import Metrics
from server.core.rerank_job import Lane

from .helpers import metric_value


def samples(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("rerank_")
    }


def test_tokens_and_the_prefix_cache_ratio_count_the_engine_apart_from_the_score_cache():
    metrics = Metrics()
    assert samples(metrics)["rerank_prefix_cache_hit_ratio"] == 0.0  # nothing scored yet: 0, not a division error
    model = metrics.for_model("m")
    model.record_request(documents=4, prompt=1000, engine=1000, cached=250)  # the engine scored all, 1/4 cached
    model.record_request(documents=4, prompt=1000, engine=0, cached=0)  # a repeat answered by the score cache
    values = samples(metrics)
    assert values["rerank_prompt_tokens_total"] == 2000
    assert values["rerank_engine_prompt_tokens_total"] == 1000
    assert values["rerank_cached_prompt_tokens_total"] == 250
    assert values["rerank_prefix_cache_hit_ratio"] == 0.25  # not 1250 / 2000


def test_each_app_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.requests.labels("/v1/rerank", "200").inc()
    assert samples(first)["rerank_requests_total"] == 1
    assert "rerank_requests_total" not in samples(second)


def test_every_refusal_reason_is_a_series_from_the_start():
    """So that a rate over rerank_rejected_requests_total{reason="overloaded"} (an alert, a panel)
    is 0 before the first 429, not absent; the service refuses only with these reasons (RejectReason)."""
    from server.core.metrics import RejectReason

    metrics = Metrics()
    model = metrics.for_model("m")
    text = metrics.render().decode()
    for reason in RejectReason:
        assert metric_value(text, "rerank_rejected_requests_total", model="m", reason=reason) == 0
    model.reject(RejectReason.OVERLOADED, Lane.BULK)
    text = metrics.render().decode()
    assert metric_value(text, "rerank_rejected_requests_total", model="m", reason="overloaded") == 1


def test_two_models_series_are_apart_and_the_prefix_ratio_counts_both():
    metrics = Metrics()
    small, large = metrics.for_model("small"), metrics.for_model("large")
    small.record_request(documents=2, prompt=100, engine=100, cached=50)
    large.record_request(documents=3, prompt=300, engine=300, cached=0)
    small.engine_up.set(1)
    assert metrics.registry.get_sample_value("rerank_prompt_tokens_total", {"model": "small"}) == 100
    assert metrics.registry.get_sample_value("rerank_prompt_tokens_total", {"model": "large"}) == 300
    assert metrics.registry.get_sample_value("rerank_engine_up", {"model": "large"}) == 0
    assert samples(metrics)["rerank_prefix_cache_hit_ratio"] == 50 / 400
