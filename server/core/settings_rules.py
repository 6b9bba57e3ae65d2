"""The checks of single settings' values: `Settings`' field validators (server/core/settings.py)
call these; what spans several settings stays in `Settings._check`."""

from __future__ import annotations

from pydantic import SecretStr

from server.core.rerank_job import MAX_PRIORITY, MIN_PRIORITY


def split_values(value: object) -> object:
    """API keys, or one value per model: a list (flags repeated), or comma-separated in one string."""
    if isinstance(value, str | int | float):
        value = [value]
    if isinstance(value, list | tuple):
        return [v.strip() if isinstance(v, str) else v for item in value for v in _split(item)]
    return value


def fractions(value: list[float]) -> list[float]:
    """--gpu-memory-utilization: each model's share of the GPU, together at most the whole of it."""
    if any(not 0 < v <= 1 for v in value):
        raise ValueError("each value must be above 0 and at most 1")
    if sum(value) > 1 + 1e-9:
        raise ValueError(f"the models' shares add up to {sum(value):g}, more than the whole GPU (1)")
    return value


def sizes(value: list[float]) -> list[float]:
    """--kv-cache-gib: each model's KV cache, a positive size."""
    if any(v <= 0 for v in value):
        raise ValueError("each value must be above 0")
    return value


def key_priorities(value: list[SecretStr]) -> list[SecretStr]:
    """--api-key-priority: KEY=PRIORITY entries, the priority within the request field's bounds."""
    for i, item in enumerate(value):
        key, sep, priority = item.get_secret_value().rpartition("=")
        try:
            number = int(priority)
        except ValueError:
            number = None
        if not sep or not key or number is None or not MIN_PRIORITY <= number <= MAX_PRIORITY:
            # the key itself is a secret: the message names the entry by its position only
            raise ValueError(
                f"entry {i + 1}: write KEY=PRIORITY, PRIORITY an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
            )
    return value


def no_url_is_none(value: object) -> object:
    """An empty URL (`RERANK_SCORE_CACHE_URL=`) is none."""
    return None if value == "" else value


def redis_url(value: SecretStr | None) -> SecretStr | None:
    """--score-cache-url: a Redis URL (never echoed: it may hold a password)."""
    if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def endpoint_url(value: str | None) -> str | None:
    """--otlp-traces-endpoint: an HTTP(S) URL."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, e.g. http://otel-collector:4318")
    return value


def empty_is_none(value: object) -> object:
    """--log-file '' (or none): no log file."""
    return None if value in ("", "none", "None") else value


def _split(item: object) -> list[object]:
    return [v for v in item.split(",") if v.strip()] if isinstance(item, str) else [item]
