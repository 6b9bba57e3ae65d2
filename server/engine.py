"""The vLLM engine: its arguments, its lifetime (`open_engine`), and scoring token-id prompts.

Every (query, document) pair is one engine request; a request's pairs are submitted together so
that continuous batching packs them. Their shared prefix (system text + instruction + query) is
computed once: vLLM registers a prompt's full KV blocks in the prefix cache when it schedules
them, so the pairs scheduled after the first, in the same step or later, read them from there.
`usage.cached_tokens` shows it (16% of tokens on the benchmark's workload: every full block of
the prefix, the most block size 32 allows).

Engine defaults chosen for reranking, where every request is one prefill and nothing decodes:
- steps of 8192 tokens, or --max-model-len if longer (vLLM's server default is 2048 on the CPU
  and on GPUs under 70 GiB, 8192 on H100/H200: short steps keep decoding requests flowing, and
  reranking has none). Measured on the CPU, this server alone against 2048: docs/s +20-40% on the
  overhead-bound benchmark model, no change on the tiny one, whose forward pass dominates; 16384
  was 8% faster on the first and 13% slower on the second than 8192;
- on the CPU, KV blocks of 32 tokens: vLLM's CPU default of 128 is longer than the shared
  prefix (about 60-100 tokens), so no block of it would ever be cached;
- priority scheduling: every document's prompt has priority 0 (first come, first served, as
  vLLM's default policy), and window k of a chunked long document has priority k, so a short
  request sent while a long document is scored does not wait for all of its windows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.settings import Settings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

logger = logging.getLogger("server.engine")

GiB = 1024**3
RERANK_MAX_NUM_BATCHED_TOKENS = 8192
CPU_RERANK_BLOCK_SIZE = 32
# The model card's yes/no head as a vLLM sequence classifier (why and how: docs/qwen3-reranker.md).
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

    async def score(
        self, prompts: Sequence[list[int]], request_id: str, priorities: Sequence[int] | None = None
    ) -> Scores: ...


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
        # vLLM's stats path costs the API process CPU for every pair (README, performance).
        disable_log_stats=not settings.vllm_metrics,
        # Equal priorities are first come, first served; the windows of a chunked long document
        # after its first get lower ones, so that short requests do not wait behind them.
        scheduling_policy="priority",
    )
    kwargs["max_num_batched_tokens"] = settings.max_num_batched_tokens or max(
        RERANK_MAX_NUM_BATCHED_TOKENS, settings.max_model_len
    )
    if settings.block_size is not None:
        kwargs["block_size"] = settings.block_size
    if settings.max_num_seqs is not None:
        kwargs["max_num_seqs"] = settings.max_num_seqs
    if settings.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    if settings.data_parallel_size > 1:
        if on_cpu():
            raise ValueError("--data-parallel-size > 1 needs one GPU per engine; this machine runs vLLM on the CPU")
        kwargs["data_parallel_size"] = settings.data_parallel_size
    if on_cpu():
        kwargs.setdefault("block_size", CPU_RERANK_BLOCK_SIZE)
        if settings.dtype == "auto":
            kwargs["dtype"] = cpu_dtype()
        if settings.gpu_memory_utilization is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM's default memory fraction (0.92 of the NUMA node) fails on a shared machine.
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(settings)
    return AsyncEngineArgs(**kwargs)


class VllmEngine:
    """Scores token-id prompts with vLLM's AsyncLLM running the pooling (classify) runner.

    Each pair goes in as a ready `EngineCoreRequest` through `AsyncLLM.add_request`, one output
    collector each, all awaited by the one calling task: no task or async generator per pair.
    vLLM's per-request input processing (checking every token id against the vocabulary, the
    length against max_model_len, cloning the pooling parameters) is done once, for the
    parameters, at the first request; the prompt builder makes every prompt within those limits.
    That halved vLLM's share of the API process's CPU per document (README, performance).
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._params: Any = None  # PoolingParams as vLLM's input processing makes them
        # add_request() logs that passing an EngineCoreRequest is deprecated; the server pins vLLM.
        logging.getLogger("vllm.v1.engine.async_llm").addFilter(_drop_engine_core_request_warning)

    @property
    def is_dead(self) -> bool:
        return self.llm is None or bool(self.llm.errored)

    async def pooling_params(self) -> Any:
        """The classify task's PoolingParams, processed by vLLM's own input processor once."""
        if self._params is None:
            from vllm import PoolingParams
            from vllm.inputs.engine import tokens_input

            processed = self.llm.input_processor.process_inputs(
                "pooling-params",
                tokens_input([0]),
                PoolingParams(task="classify"),
                supported_tasks=await self.llm.get_supported_tasks(),
            )
            self._params = processed.pooling_params
        return self._params

    async def score(
        self, prompts: Sequence[list[int]], request_id: str, priorities: Sequence[int] | None = None
    ) -> Scores:
        """Score all prompts; cancelling this coroutine aborts every pair still in the engine.

        priorities: the engine schedules a lower value first (equal ones in arrival order); all 0
        by default.
        """
        if not prompts:
            return Scores([], 0)
        from vllm.v1.engine import EngineCoreRequest

        params = await self.pooling_params()
        llm, queues, results = self.llm, [], []
        arrival = time.time()
        try:
            for i, token_ids in enumerate(prompts):
                request = EngineCoreRequest(
                    request_id=f"{request_id}-{i}",
                    prompt_token_ids=token_ids,
                    mm_features=None,
                    sampling_params=None,
                    pooling_params=params,
                    arrival_time=arrival,
                    lora_request=None,
                    cache_salt=None,
                    data_parallel_rank=None,
                    priority=priorities[i] if priorities is not None else 0,
                )
                queues.append(await llm.add_request(request.request_id, request, params))
            for queue in queues:
                results.append(await _final_output(queue))
        except BaseException:
            unfinished = [q.request_id for q in queues[len(results) :]]
            if unfinished and not self.is_dead:
                try:
                    await llm.abort(unfinished, internal=True)
                except Exception:
                    logger.exception("aborting %d pairs of %s failed", len(unfinished), request_id)
            raise
        finally:
            for queue in queues:
                queue.close()
        return Scores(
            [float(out.outputs.data[0]) for out in results],
            sum(int(out.num_cached_tokens or 0) for out in results),
        )


def _drop_engine_core_request_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Passing EngineCoreRequest to AsyncLLM")


async def _final_output(queue: Any) -> Any:
    """The finished output of one pair (a pooling request yields exactly one)."""
    while True:
        out = queue.get_nowait() or await queue.get()
        if out.finished:
            return out


def api_processes(settings: Settings) -> int:
    """--api-processes, or its default: 1 on the CPU (the engine's worker is the limit there),
    2 on a GPU (one process's ~1 ms of CPU per document caps it near the GPU's rate; README)."""
    if settings.api_processes is not None:
        return settings.api_processes
    return 1 if on_cpu() else 2


def set_cpu_threads_bind(settings: Settings) -> None:
    if settings.cpu_threads_bind is not None:
        # read by vLLM when it starts the engine's worker processes, which inherit the environment
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind


@dataclass(frozen=True)
class EngineClient:
    """One API process of several, and vLLM's addresses of the engine core it talks to (made by
    the supervisor, server/multiprocess.py)."""

    index: int
    count: int
    addresses: dict[str, Any]


def start_async_llm(args: AsyncEngineArgs, client: EngineClient | None = None) -> Any:
    """vLLM's AsyncLLM: with its own engine core, or (client) a client of the supervisor's."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    if client is None:
        return AsyncLLM.from_engine_args(args)
    args._api_process_count, args._api_process_rank = client.count, client.index
    return AsyncLLM.from_vllm_config(
        args.create_engine_config(UsageContext.OPENAI_API_SERVER),
        disable_log_stats=args.disable_log_stats,
        client_addresses=dict(client.addresses),
        client_count=client.count,
        client_index=client.index,
    )


@asynccontextmanager
async def open_engine(settings: Settings, client: EngineClient | None = None) -> AsyncIterator[VllmEngine]:
    """Start vLLM for `settings` (or connect to the supervisor's engine core), yield it, and shut
    it down on exit."""
    set_cpu_threads_bind(settings)
    args = engine_args(settings)
    if client is None:
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
    llm = await asyncio.to_thread(start_async_llm, args, client)
    engine = VllmEngine(llm)
    try:
        yield engine
    finally:
        llm.shutdown()
        # Drop the last references now: AsyncLLM.__del__ fails if it first runs at interpreter exit.
        engine.llm = None
        del llm
