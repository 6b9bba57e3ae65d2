"""The vLLM engine's arguments, chosen for reranking (server/engine/vllm_engine.py runs the engine and says how
a request's pairs share their prefix). `usage.cached_tokens` shows the prefix cache at work (16%
of tokens on the benchmark's workload: every full block of the prefix, the most block size 32
allows).

Engine defaults chosen for reranking, where every request is one prefill and nothing decodes:
- steps of 8192 tokens, or --max-model-len if longer (vLLM's server default is 2048 on the CPU
  and on GPUs under 70 GiB, 8192 on H100/H200: short steps keep decoding requests flowing, and
  reranking has none). Measured on the CPU, this server alone against 2048: docs/s +20-40% on the
  overhead-bound benchmark model, no change on the tiny one, whose forward pass dominates; 16384
  was 8% faster on the first and 13% slower on the second than 8192;
- on the CPU, KV blocks of 32 tokens: vLLM's CPU default of 128 is longer than the shared
  prefix (about 60-100 tokens), so no block of it would ever be cached;
- on a CPU of at most 4 cores, the model worker's threads on every core (vLLM keeps one back for
  its scheduler, which in reranking mostly waits): 1.6x docs/s on 2 cores (`whole_machine_for_worker`),
  and those threads sleep between parallel regions instead of spinning (OMP_WAIT_POLICY=PASSIVE), since
  they share the cores with the HTTP process and the scheduler: under `vllm bench serve` on the tiny
  model the worker's CPU per request halved and requests/s rose 1.4x on an AVX512-BF16 VM (level
  within noise on an AVX2 one), the 0.6B width unchanged (docs/performance.md, round 5);
- priority scheduling: every document's prompt has priority 0 (first come, first served, as
  vLLM's default policy), and window k of a chunked long document has priority k, so a short
  request sent while a long document is scored does not wait for all of its windows.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.core.served_model import ModelKind, ServedModel
from server.core.settings import Settings
from server.engine.model_kind import ModelInfo

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

GiB = 1024**3
RERANK_MAX_NUM_BATCHED_TOKENS = 8192
CPU_RERANK_BLOCK_SIZE = 32
SMALL_CPU_CORES = 4  # up to this many cores, the CPU engine's model worker gets all of them
# The model card's yes/no head as a vLLM sequence classifier (why and how: docs/qwen3-reranker.md).
QWEN3_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def engine_identity(dtype: str) -> bytes:
    """What computes the logits, besides the weights: vLLM's release, the device kind and the dtype.
    The score cache keys every logit on it, so that an upgraded vLLM, another GPU model or another
    CPU (its vector units change the arithmetic) sharing one Redis never reads another's logits."""
    import platform

    import vllm

    if on_cpu():
        flags = ("avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")
        found: set[str] = set()
        model = platform.processor()
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    found.update(f for f in value.split() if f in flags)
                elif key.strip() == "model name":
                    model = value.strip()
        device = f"cpu {platform.machine()} {model} {' '.join(sorted(found))}"
    else:
        from vllm.platforms import current_platform

        device = f"{current_platform.device_name} {current_platform.get_device_name()}"
    return f"vllm {vllm.__version__}; {device}; {dtype}".encode()


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively, float32 elsewhere (always correct)."""
    import torch

    return "bfloat16" if torch.cpu._is_avx512_bf16_supported() else "float32"


def cpu_kv_cache_bytes(served: ServedModel, models: int = 1) -> int:
    """A KV cache that fits beside the weights: --kv-cache-gib, or 1/8 of available memory split
    between the models, between 1 and 16 GiB."""
    import psutil

    if served.kv_cache_gib is not None:
        return int(served.kv_cache_gib * GiB)
    available = psutil.virtual_memory().available
    return int(min(16 * GiB, max(1 * GiB, available // (8 * models))))


def max_batch_tokens(settings: Settings) -> int:
    """Tokens in one engine step: --max-num-batched-tokens, or 8192 (--max-model-len if longer)."""
    return settings.max_num_batched_tokens or max(RERANK_MAX_NUM_BATCHED_TOKENS, settings.max_model_len)


def engine_args(settings: Settings, served: ServedModel, info: ModelInfo) -> AsyncEngineArgs:
    """vLLM's arguments for one served model of kind `info` (server/engine/model_kind.py): the original
    Qwen3-Reranker gets the overrides that make its yes/no head a classifier; a sequence classifier
    or cross-encoder runs its own head."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = dict(
        model=served.model,
        served_model_name=served.served_model_name,
        runner="pooling",
        dtype=settings.dtype,
        max_model_len=info.max_model_len(settings.max_model_len),
        # An encoder attends both ways (a prefix's keys depend on what follows): nothing to share.
        enable_prefix_caching=settings.enable_prefix_caching and info.kind is not ModelKind.CROSS_ENCODER,
        enforce_eager=settings.enforce_eager,
        # vLLM's stats path costs the API process CPU for every pair (docs/performance.md).
        disable_log_stats=not settings.vllm_metrics,
        # Equal priorities are first come, first served; the windows of a chunked long document
        # after its first get lower ones, so that short requests do not wait behind them.
        scheduling_policy="priority",
    )
    if info.kind is ModelKind.QWEN3_RERANKER:
        kwargs["hf_overrides"] = QWEN3_RERANKER_HF_OVERRIDES
    kwargs["max_num_batched_tokens"] = max_batch_tokens(settings)
    if settings.block_size is not None:
        kwargs["block_size"] = settings.block_size
    if settings.max_num_seqs is not None:
        kwargs["max_num_seqs"] = settings.max_num_seqs
    if served.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = served.gpu_memory_utilization
    if settings.data_parallel_size > 1:
        if on_cpu():
            raise ValueError("--data-parallel-size > 1 needs one GPU per engine; this machine runs vLLM on the CPU")
        kwargs["data_parallel_size"] = settings.data_parallel_size
    if on_cpu():
        kwargs.setdefault("block_size", CPU_RERANK_BLOCK_SIZE)
        if settings.dtype == "auto":
            kwargs["dtype"] = cpu_dtype()
        if served.gpu_memory_utilization is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM's default memory fraction (0.92 of the NUMA node) fails on a shared machine.
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(served, len(settings.model))
    return AsyncEngineArgs(**kwargs)


@dataclass(frozen=True)
class Deployment:
    """What this server runs, resolved from the settings once at start-up (by the app: nothing on a
    request's path asks vLLM's platform or derives it again)."""

    device: str  # "cpu" or "gpu"
    api_processes: int
    max_batch_tokens: int

    @classmethod
    def resolve(cls, settings: Settings) -> Deployment:
        return cls("cpu" if on_cpu() else "gpu", api_processes(settings), max_batch_tokens(settings))


def api_processes(settings: Settings) -> int:
    """--api-processes, or its default: 1 on the CPU (the engine's worker is the limit there) and
    with several models, 2 on a GPU (one process's ~1 ms of CPU per document caps it near the GPU's
    rate; docs/performance.md)."""
    if settings.api_processes is not None:
        return settings.api_processes
    return 1 if on_cpu() or len(settings.model) > 1 else 2


def check_several_models(settings: Settings) -> None:
    """What several models need, checked before any loads: one API process, and on a GPU an
    explicit memory share each (vLLM's default, 0.9 each, cannot fit two engines on one GPU)."""
    if len(settings.model) == 1:
        return
    if api_processes(settings) > 1:
        raise ValueError("several models are served by one API process; leave --api-processes at 1")
    if settings.data_parallel_size > 1:
        raise ValueError("several models share one GPU; --data-parallel-size must stay 1")
    if not on_cpu() and not settings.gpu_memory_utilization:
        raise ValueError(
            "several models on one GPU need --gpu-memory-utilization for each, in --model's order, together "
            "at most 1 (e.g. 0.25 for a 0.6B and 0.65 for an 8B on an 80 GB GPU)"
        )


def set_cpu_threads_bind(settings: Settings) -> None:
    """The CPU engine's thread binding, read by vLLM when it starts the engine's worker processes
    (they inherit the environment): --cpu-threads-bind if given; else, on a machine of at most
    SMALL_CPU_CORES cores, vLLM's auto binding without the core it keeps back for its scheduler,
    and the worker's OpenMP threads waiting passively (asleep, not spinning: they share those cores
    with the HTTP process and the scheduler) unless the user set OMP_WAIT_POLICY."""
    if settings.cpu_threads_bind is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
    elif whole_machine_for_worker():
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def whole_machine_for_worker() -> bool:
    """On the CPU, vLLM binds the model worker's threads to every core of its NUMA node but one,
    kept for the engine core (its scheduler). Reranking is all prefill: the scheduler mostly waits
    for the worker, and the HTTP process spends under 1 ms of CPU per document. On 2 cores the
    worker got one, and giving it both scored 1.6x the documents/s on the 0.6B-width model
    (docs/performance.md). So on small machines (the gain is 1/N of the cores) the worker gets
    them all; on larger ones, where it is small and unmeasured, vLLM's reserve stays. Not when the
    user set VLLM_CPU_NUM_OF_RESERVED_CPU or VLLM_CPU_OMP_THREADS_BIND, or on a GPU."""
    if "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return False
    return on_cpu() and len(os.sched_getaffinity(0)) <= SMALL_CPU_CORES
