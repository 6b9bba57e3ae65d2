"""The rerank work: readiness, prompt building, scoring (admitted by server/rerank/admission.py), ranking.

One scoring path for both API dialects: each turns its request into a `RerankJob` and the
`Ranking` that comes back into its response (server/dialects/cohere.py, server/dialects/tei.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from server.core.cluster import Cluster
from server.core.errors import ErrorKind, ServiceError
from server.core.metrics import Metrics, ModelMetrics, RejectReason
from server.core.rerank_job import Ranking, RerankJob, lane_of
from server.core.served_model import ServedModel
from server.core.settings import Settings
from server.core.tracing import NO_TRACING, Tracing
from server.engine.engine_args import engine_identity
from server.engine.model_files import hub_revision
from server.engine.model_kind import QWEN3_RERANKER, ModelInfo, model_info
from server.engine.vllm_engine import Engine
from server.rerank.admission import TOKENS, Admission, Pairs
from server.rerank.cross_encoder import builder_for
from server.rerank.prompt import BasePromptBuilder, Prompts, QueryTooLongError, Tokenizer, prompts_for
from server.rerank.score_cache import ScoreCache, Through, score_through
from server.rerank.windows import best_windows

logger = logging.getLogger("server.serving")

WARMUP_JOB = RerankJob(
    query="What is the capital of China?",
    texts=["The capital of China is Beijing.", "Gravity pulls objects toward each other."],
)
# The warm-up's engine request id (what tests' engine wrappers look for); it is never how the warm-up
# is told apart: a client may send any X-Request-Id, this one too.
WARMUP_REQUEST_ID = "warmup"
# A request of at most this many characters (query and documents) has its prompts built on the event
# loop (a fraction of a millisecond); a larger one in a worker thread, so that the loop keeps serving.
# The thread's hand-offs cost more than tokenizing a one-document request (docs/performance.md, round 6).
INLINE_PROMPT_CHARS = 4096


def load_tokenizer(model: str) -> Tokenizer:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


@dataclass(frozen=True)
class Scored:
    """A job's ranking and what scoring it took (a request's metrics)."""

    ranking: Ranking
    engine_tokens: int  # prompt tokens the engine scored (the score cache's hits excluded)
    pairs: int  # prompts: documents, or their windows


class RerankService:
    """One served model: its engine, prompts, score cache and readiness."""

    def __init__(
        self,
        settings: Settings,
        served: ServedModel,
        metrics: Metrics,
        cluster: Cluster | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.settings = settings
        self.served = served
        self.name = served.served_model_name  # what requests' `model` names
        self.metrics = metrics.for_model(self.name)
        self.tracing = tracing  # off unless an OTLP endpoint is set (server/core/tracing.py)
        self.cluster = cluster  # the server's other API processes, if it runs several
        self.engine: Engine | None = None
        self.model = QWEN3_RERANKER  # the model's kind and limits, read from its config at start
        self.prompts: BasePromptBuilder | None = None
        self.warmed_up = False
        self.admission = Admission(settings, self.metrics, cluster, tracing, self.name)  # the 429s and the lanes
        metrics.max_pairs_in_flight.set(settings.max_pairs_in_flight)
        self.model_sha: str | None = None  # the hub commit of the model's files, if known (GET /info)
        self.score_cache: ScoreCache | None = None  # made at start, once the weights' identity is known

    @property
    def model_dtype(self) -> str | None:
        """The dtype the engine runs the model in (None before it started)."""
        return getattr(self.engine, "dtype", None)

    @property
    def max_model_len(self) -> int:
        """The longest prompt: --max-model-len, or the model's own limit if smaller (a cross-encoder's)."""
        return self.model.max_model_len(self.settings.max_model_len)

    @property
    def pairs_in_flight(self) -> int:
        """Pairs in the engine now (all API processes' together, with several)."""
        return self.admission.budget.in_flight

    # --- lifetime -------------------------------------------------------------------------
    @property
    def can_score(self) -> bool:
        return self.warmed_up and self.engine is not None and not self.engine.is_dead

    @property
    def ready(self) -> bool:
        """Whether /ready can say so (unless the server is draining: server/rerank/served_models.py): able to
        score; with several API processes, only once every one of them has scored its warm-up."""
        return self.can_score and (self.cluster is None or self.cluster.all_ready())

    async def start(self, engine: Engine, tokenizer: Tokenizer | None = None, model: ModelInfo | None = None) -> None:
        """Attach a running engine, score a warm-up request, then report ready. `model`: the model's
        kind as the engine was started for it (default: read from its config)."""
        if tokenizer is None:
            tokenizer = await asyncio.to_thread(load_tokenizer, self.served.model)
        self.model = model if model is not None else await asyncio.to_thread(model_info, self.served)
        self.prompts = builder_for(self.model, tokenizer, self.max_model_len)
        self.model_sha = hub_revision(self.served.model)
        self.engine = engine
        if self.settings.score_cache_size > 0:
            computed_by = f"{self.model.kind}; ".encode() + engine_identity(self.model_dtype or self.settings.dtype)
            self.score_cache = await asyncio.to_thread(
                ScoreCache.for_model, self.settings, self.served.model, computed_by, self.metrics.score_cache_errors.inc
            )
        started = time.perf_counter()
        await self._rank(WARMUP_JOB, WARMUP_REQUEST_ID, score_cache=None)  # past the cache: it must reach the engine
        self.warmed_up = True
        self.metrics.engine_up.set(1)
        elapsed = time.perf_counter() - started
        if self.cluster is not None:  # the supervisor says `Engine started.` once all processes are
            self.cluster.mark_warmed_up()
        # `Engine started.` follows from server/processes/, once every model has warmed up
        logger.info("model %s (%s): warm-up rerank scored in %.2fs", self.name, self.model.kind, elapsed)

    async def close(self) -> None:
        """At shutdown, after the last request: the score cache's Redis connection is closed."""
        if self.score_cache is not None:
            await self.score_cache.close()

    def mark_dead(self) -> None:
        self.warmed_up = False
        self.metrics.engine_up.set(0)

    # --- requests -------------------------------------------------------------------------
    async def rerank(self, job: RerankJob, request_id: str) -> Ranking:
        if not self.can_score:
            raise ServiceError(
                ErrorKind.SERVICE_UNAVAILABLE, "the engine is not ready yet; retry when GET /ready is 200"
            )
        if len(job.texts) > self.settings.max_documents:
            self.metrics.reject(RejectReason.TOO_MANY_DOCUMENTS, lane_of(job.priority))
            raise ServiceError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"{len(job.texts)} documents in one request; the limit is {self.settings.max_documents}",
            )
        self.metrics.requests_in_flight.inc()
        try:
            scored = await self._rank(job, request_id, self.score_cache)
        finally:
            self.metrics.requests_in_flight.dec()
        ranking = scored.ranking
        self.metrics.record_request(len(job.texts), ranking.prompt_tokens, scored.engine_tokens, ranking.cached_tokens)
        self.metrics.lane_pairs[lane_of(job.priority)].inc(scored.pairs)
        return ranking

    async def _rank(self, job: RerankJob, request_id: str, score_cache: ScoreCache | None) -> Scored:
        """Prompts, their logits (through `score_cache`, if any), each document's best one, best first."""
        assert self.prompts is not None and self.engine is not None
        with self.tracing.span("rerank.tokenize") as span:
            if len(job.query) + sum(map(len, job.texts)) <= INLINE_PROMPT_CHARS:
                prompts = self._build_prompts(job)
            else:
                prompts = await asyncio.to_thread(self._build_prompts, job)
            if span is not None:
                span.set_attributes({"rerank.pairs": len(prompts.token_ids), TOKENS: prompts.num_tokens})
        check_fits(job, prompts, self.settings, self.max_model_len, self.metrics)
        pairs = Pairs(prompts.token_ids, job.priority, prompts.priorities, prompts.second_segment)
        through = await self._logits_through_cache(pairs, request_id, score_cache)
        tokens, cached = prompts.num_tokens, through.prefix_cached_tokens
        logits, passages = best_windows(through.logits, prompts.windows)
        order = sorted(range(len(logits)), key=lambda i: -logits[i])
        hits = len(through.logits) - through.engine_pairs
        ranking = Ranking(order, logits, passages, tokens, cached, hits, self.model.identity_activation)
        return Scored(ranking, through.engine_tokens, len(prompts.token_ids))

    async def _logits_through_cache(self, pairs: Pairs, request_id: str, score_cache: ScoreCache | None) -> Through:
        """Every pair's logit, and what the engine did for them; through the score cache if there is one."""
        assert self.engine is not None
        engine = self.engine
        if score_cache is None:
            scores = await self.admission.score(engine, pairs, request_id, self.mark_dead)
            return Through(scores.logits, len(pairs.token_ids), sum(map(len, pairs.token_ids)), scores.cached_tokens)

        async def score_in_engine(token_ids: list[list[int]], windows: list[int] | None) -> tuple[list[float], int]:
            missing = dataclasses.replace(pairs, token_ids=token_ids, windows=windows)
            scores = await self.admission.score(engine, missing, request_id, self.mark_dead)
            return scores.logits, scores.cached_tokens

        through = await score_through(score_cache, pairs.token_ids, pairs.windows, score_in_engine, self.tracing)
        self.metrics.score_cache_hits.inc(len(through.logits) - through.engine_pairs)
        self.metrics.score_cache_misses.inc(through.engine_pairs)
        self.metrics.score_cache_entries.set(score_cache.entries)
        return through

    def _build_prompts(self, job: RerankJob) -> Prompts:
        """The job's prompts (a large job's in a worker thread)."""
        assert self.prompts is not None
        if job.instruction is not None and not self.prompts.takes_instruction:
            raise ServiceError(ErrorKind.INVALID_REQUEST, f"instruction: a {self.model.kind} takes none; leave it out")
        try:
            return prompts_for(self.prompts, job, self.settings)
        except QueryTooLongError as exc:
            self.metrics.reject(RejectReason.QUERY_TOO_LONG, lane_of(job.priority))
            raise ServiceError(ErrorKind.INVALID_REQUEST, str(exc)) from None


def check_fits(job: RerankJob, prompts: Prompts, settings: Settings, max_model_len: int, metrics: ModelMetrics) -> None:
    """A text refused rather than cut (truncate: false), and a request of more pairs than the engine takes."""
    if job.truncate is False and any(prompts.truncated):
        metrics.reject(RejectReason.TEXT_TOO_LONG, lane_of(job.priority))
        first = prompts.truncated.index(True)
        if prompts.doc_budget is not None:
            room = f"at most {prompts.doc_budget} of its tokens fit in the prompt (max_model_len="
            room += f"{max_model_len} less the instruction, query and template)"
        else:
            room = "it needs more windows than max_chunks_per_doc allows"
        raise ServiceError(
            ErrorKind.VALIDATION,
            f"texts[{first}] does not fit: {room}; send truncate: true (or leave it out) to cut it, or shorten it",
        )
    if len(prompts.token_ids) > settings.max_pairs_in_flight:  # only chunking gets here
        metrics.reject(RejectReason.TOO_MANY_PAIRS, lane_of(job.priority))
        raise ServiceError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"the documents split into {len(prompts.token_ids)} windows, more pairs than the engine takes at once "
            f"({settings.max_pairs_in_flight}); send fewer or shorter documents, or a smaller "
            "max_chunks_per_doc",
        )
