"""One model the server serves: the i-th value of each per-model setting (--model,
--served-model-name, --model-kind, --gpu-memory-utilization, --kv-cache-gib)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

PER_MODEL = ("model", "served_model_name", "model_kind", "gpu_memory_utilization", "kv_cache_gib")
T = TypeVar("T")


class ModelKind(StrEnum):
    """What kind of reranker a model is, as --model-kind names it. AUTO, that flag's default, means
    "tell it from the model's config.json" (server/engine/model_kind.py); the kind found
    (`ModelInfo.kind`) is never AUTO."""

    AUTO = "auto"
    QWEN3_RERANKER = "qwen3-reranker"
    QWEN3_SEQ_CLS = "qwen3-seq-cls"
    CROSS_ENCODER = "cross-encoder"


class ServedModel(BaseModel):
    """One model the server serves (Settings.served_models)."""

    model_config = ConfigDict(frozen=True)

    model: str
    served_model_name: str
    model_kind: ModelKind = ModelKind.AUTO
    gpu_memory_utilization: float | None = None
    kv_cache_gib: float | None = None


def per_model(
    models: list[str],
    names: list[str],
    kinds: list[ModelKind],
    gpu_shares: list[float],
    kv_sizes: list[float],
) -> list[ServedModel]:
    """The i-th model with its i-th value of each per-model list; a list of one value holds for all."""

    def nth(values: list[T], i: int) -> T | None:
        return values[i] if len(values) > i else (values[0] if len(values) == 1 else None)

    return [
        ServedModel(
            model=model,
            served_model_name=names[i],
            model_kind=nth(kinds, i) or ModelKind.AUTO,
            gpu_memory_utilization=nth(gpu_shares, i),
            kv_cache_gib=nth(kv_sizes, i),
        )
        for i, model in enumerate(models)
    ]
