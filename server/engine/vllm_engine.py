"""The vLLM engine: its lifetime (`open_engine`) and scoring token-id prompts.

Every (query, document) pair is one engine request; a request's pairs are submitted together so
that continuous batching packs them. Their shared prefix (system text + instruction + query) is
computed once: vLLM registers a prompt's full KV blocks in the prefix cache when it schedules
them, so the pairs scheduled after the first, in the same step or later, read them from there.
The engine's arguments, chosen for reranking, are in server/engine/engine_args.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.core.served_model import ServedModel
from server.core.settings import Settings
from server.engine.engine_args import engine_args, on_cpu, set_cpu_threads_bind
from server.engine.model_kind import ModelInfo, model_info

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

logger = logging.getLogger("server.engine")


@dataclass(frozen=True)
class Scores:
    logits: list[float]  # per prompt: the classifier's raw output (Qwen3-Reranker: the yes logit minus the no logit)
    cached_tokens: int


class Engine(Protocol):
    """What the service needs from an engine (tests/fake_engine.py's FakeEngine serves the fast tier)."""

    @property
    def is_dead(self) -> bool: ...

    async def score(
        self,
        prompts: Sequence[list[int]],
        request_id: str,
        priorities: Sequence[int] | None = None,
        second_segment: int | None = None,
    ) -> Scores: ...


class VllmEngine:
    """Scores token-id prompts with vLLM's AsyncLLM running the pooling (classify) runner.

    Each pair goes in as a ready `EngineCoreRequest` through `AsyncLLM.add_request`, one output
    collector each, all awaited by the one calling task: no task or async generator per pair.
    vLLM's per-request input processing (checking every token id against the vocabulary, the
    length against max_model_len, cloning the pooling parameters) is done once, for the
    parameters, at the first request; the prompt builder makes every prompt within those limits.
    That halved vLLM's share of the API process's CPU per document (docs/performance.md).
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._params: Any = None  # PoolingParams as vLLM's input processing makes them
        # add_request() logs that passing an EngineCoreRequest is deprecated; the server pins vLLM.
        logging.getLogger("vllm.v1.engine.async_llm").addFilter(_drop_engine_core_request_warning)

    @property
    def is_dead(self) -> bool:
        return self.llm is None or bool(self.llm.errored)

    @property
    def dtype(self) -> str | None:
        """The dtype vLLM runs the model in: float32, bfloat16 or float16."""
        if self.llm is None:
            return None
        return str(self.llm.model_config.dtype).removeprefix("torch.")

    async def pooling_params(self) -> Any:
        """The classify task's PoolingParams, processed by vLLM's own input processor once.

        Without the activation: the engine returns the logit (yes minus no), from which both the
        probability and TEI's raw score follow at full precision, also near 0 and 1."""
        if self._params is None:
            from vllm import PoolingParams
            from vllm.inputs.engine import tokens_input

            processed = self.llm.input_processor.process_inputs(
                "pooling-params",
                tokens_input([0]),
                PoolingParams(task="classify", use_activation=False),
                supported_tasks=await self.llm.get_supported_tasks(),
            )
            self._params = processed.pooling_params
        return self._params

    async def score(
        self,
        prompts: Sequence[list[int]],
        request_id: str,
        priorities: Sequence[int] | None = None,
        second_segment: int | None = None,
    ) -> Scores:
        """Score all prompts; cancelling this coroutine aborts every pair still in the engine.

        priorities: the engine schedules a lower value first (equal ones in arrival order); all 0
        by default. second_segment: a cross-encoder's token type 1 starts at this position of every
        prompt (BERT's segment B: the document); vLLM passes it to the model as it does for its own
        score API.
        """
        if not prompts:
            return Scores([], 0)
        from vllm.v1.engine import EngineCoreRequest

        params = await self.pooling_params()
        if second_segment is not None:
            params = params.clone()
            params.extra_kwargs = {**(params.extra_kwargs or {}), "compressed_token_type_ids": second_segment}
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


@dataclass(frozen=True)
class EngineClient:
    """One API process of several, and vLLM's addresses of the engine core it talks to (made by
    the supervisor, server/processes/supervisor.py)."""

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
async def open_engine(
    settings: Settings,
    served: ServedModel | None = None,
    client: EngineClient | None = None,
    info: ModelInfo | None = None,
) -> AsyncIterator[VllmEngine]:
    """Start vLLM for one served model (default: the first; or connect to the supervisor's engine
    core), yield it, and shut it down on exit. `info`: its kind (default: read from its config)."""
    served = served or settings.served_models()[0]
    set_cpu_threads_bind(settings)
    if info is None:
        info = await asyncio.to_thread(model_info, served)
    args = engine_args(settings, served, info)
    if client is None:
        logger.info(
            "starting vLLM: model=%s kind=%s dtype=%s max_model_len=%d prefix_caching=%s device=%s",
            args.model,
            info.kind,
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
