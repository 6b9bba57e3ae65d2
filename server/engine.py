"""The vLLM engine: its arguments, its lifetime (`open_engine`), and scoring token-id prompts.

Every (query, document) pair is one engine request; a request's pairs are submitted together so
that continuous batching packs them. With `prime_prefix` the first pair goes alone first: its
KV blocks (system text + instruction + query) enter the prefix cache, and the other pairs, which
vLLM would otherwise schedule in the same step as the first, reuse them instead of recomputing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.settings import Settings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

logger = logging.getLogger("server.engine")

GiB = 1024**3
# The model card's yes/no head as a vLLM sequence classifier (see ../shared/QWEN3_RERANKER.md).
QWEN3_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


@dataclass(frozen=True)
class Scores:
    scores: list[float]
    cached_tokens: int


class Engine(Protocol):
    """What the service needs from an engine (a fake one serves API-edge unit tests)."""

    @property
    def is_dead(self) -> bool: ...

    async def score(self, prompts: Sequence[list[int]], request_id: str) -> Scores: ...


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively, float32 elsewhere (always correct)."""
    import torch

    return "bfloat16" if torch.cpu._is_avx512_bf16_supported() else "float32"


def cpu_kv_cache_bytes(settings: Settings) -> int:
    """A KV cache that fits beside the weights: 1/8 of available memory, between 1 and 16 GiB."""
    import psutil

    if settings.kv_cache_gib is not None:
        return int(settings.kv_cache_gib * GiB)
    available = psutil.virtual_memory().available
    return int(min(16 * GiB, max(1 * GiB, available // 8)))


def engine_args(settings: Settings) -> AsyncEngineArgs:
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = dict(
        model=settings.model,
        served_model_name=settings.model_name,
        runner="pooling",
        hf_overrides=QWEN3_RERANKER_HF_OVERRIDES,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        enable_prefix_caching=settings.enable_prefix_caching,
        enforce_eager=settings.enforce_eager,
        disable_log_stats=False,
    )
    if settings.block_size is not None:
        kwargs["block_size"] = settings.block_size
    if settings.max_num_seqs is not None:
        kwargs["max_num_seqs"] = settings.max_num_seqs
    if settings.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = settings.max_num_batched_tokens
    if on_cpu():
        if settings.dtype == "auto":
            kwargs["dtype"] = cpu_dtype()
        if settings.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        elif not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM's default memory fraction (0.92 of the NUMA node) fails on a shared machine.
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(settings)
    elif settings.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs)


class VllmEngine:
    """Scores token-id prompts with vLLM's AsyncLLM running the pooling (classify) runner."""

    def __init__(self, llm: Any, prime_prefix: bool = True) -> None:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        self._tokens_prompt = TokensPrompt
        self.llm = llm
        self.prime_prefix = prime_prefix
        self._params = PoolingParams(task="classify")

    @property
    def is_dead(self) -> bool:
        return self.llm is None or bool(self.llm.errored)

    async def _score_one(self, token_ids: list[int], request_id: str) -> tuple[float, int]:
        final = None
        prompt = self._tokens_prompt(prompt_token_ids=token_ids)
        async for output in self.llm.encode(prompt, self._params, request_id):
            final = output
        assert final is not None and final.finished
        return float(final.outputs.data[0]), int(final.num_cached_tokens or 0)

    async def score(self, prompts: Sequence[list[int]], request_id: str) -> Scores:
        """Score all prompts; cancelling this coroutine aborts every pair still in the engine."""
        if not prompts:
            return Scores([], 0)
        results: list[tuple[float, int]] = []
        rest = range(len(prompts))
        if self.prime_prefix and len(prompts) > 1:
            results.append(await self._score_one(prompts[0], f"{request_id}-0"))
            rest = range(1, len(prompts))
        # A TaskGroup cancels (and so aborts in the engine) the other pairs when one fails.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._score_one(prompts[i], f"{request_id}-{i}")) for i in rest]
        results += [task.result() for task in tasks]
        return Scores([s for s, _ in results], sum(c for _, c in results))


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[VllmEngine]:
    """Start vLLM for `settings`, yield it, and shut it down on exit."""
    from vllm.v1.engine.async_llm import AsyncLLM

    args = engine_args(settings)
    logger.info(
        "starting vLLM: model=%s dtype=%s max_model_len=%d prefix_caching=%s device=%s",
        args.model,
        args.dtype,
        args.max_model_len,
        args.enable_prefix_caching,
        "cpu" if on_cpu() else "gpu",
    )
    # Start-up blocks for a minute or more; in a thread, /health keeps answering meanwhile.
    # (Built off the loop, AsyncLLM starts its output handler with the first request: the warm-up.)
    llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
    engine = VllmEngine(llm, prime_prefix=settings.prime_prefix)
    try:
        yield engine
    finally:
        llm.shutdown()
        # Drop the last references now: AsyncLLM.__del__ fails if it first runs at interpreter exit.
        engine.llm = None
        del llm
