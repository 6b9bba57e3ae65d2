"""The rerank work: readiness, admission, prompt building, scoring, ranking.

One scoring path for both API dialects: each turns its request into a `RerankJob` and the
`Ranking` that comes back into its response (server/protocol.py, server/tei_protocol.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from server.cluster import Cluster, PairBudget
from server.cross_encoder import builder_for
from server.engine import Engine, Scores
from server.engine_args import engine_identity, max_batch_tokens
from server.errors import ErrorKind, ServiceError
from server.lanes import EngineLanes
from server.metrics import Metrics, RejectReason
from server.model_files import hub_revision, weights_identity
from server.model_kind import QWEN3_RERANKER, ModelInfo, model_info
from server.prompt import BasePromptBuilder, Prompts, QueryTooLongError, Tokenizer, best_windows, prompts_for
from server.rerank_job import Lane, Ranking, RerankJob, lane_of
from server.score_cache import ScoreCache, Through, score_through
from server.settings import ServedModel, Settings
from server.tracing import NO_TRACING, Tracing

logger = logging.getLogger("server.serving")

TOKENS = "gen_ai.usage.input_tokens"  # OpenTelemetry's name for a span's prompt tokens
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
class Pairs:
    """What the engine needs of a request besides its prompts: where it queues and a cross-encoder's
    token types."""

    priority: int  # the request's (lower first)
    windows: list[int] | None  # each prompt's window number in its document (None: each a document's first)
    second_segment: int | None  # a cross-encoder's: where token type 1 starts in every prompt

    def engine_priorities(self, n: int, now: float, delay: float) -> list[int]:
        """vLLM's priority of each pair (lower first): its arrival plus `delay` seconds for each
        priority point and each window after a document's first, in microseconds. The engine thus
        serves the earliest deadline first: an interactive pair overtakes bulk pairs that arrived up to
        priority x delay before it, and bulk that waited longer goes first (it ages, never starves)."""
        windows = self.windows or [0] * n
        return [round((now + (self.priority + k) * delay) * 1_000_000) for k in windows]


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
        self.tracing = tracing  # off unless an OTLP endpoint is set (server/tracing.py)
        self.cluster = cluster  # the server's other API processes, if it runs several
        self.engine: Engine | None = None
        self.model = QWEN3_RERANKER  # the model's kind and limits, read from its config at start
        self.prompts: BasePromptBuilder | None = None
        self.warmed_up = False
        self.draining = False  # SIGTERM came: /ready is 503, responses close their connection
        self.pairs = PairBudget(
            settings.max_pairs_in_flight,
            settings.interactive_reserve_pairs or 0,
            cluster.pairs if cluster else None,
            cluster.bulk_pairs if cluster else None,
        )
        metrics.max_pairs_in_flight.set(settings.max_pairs_in_flight)
        self.lanes = EngineLanes(max_batch_tokens(settings))  # bulk waits while interactive is scored
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
        return self.pairs.in_flight

    # --- lifetime -------------------------------------------------------------------------
    @property
    def can_score(self) -> bool:
        return self.warmed_up and self.engine is not None and not self.engine.is_dead

    @property
    def ready(self) -> bool:
        """What /ready says: able to score and not shutting down (a draining server still scores);
        with several API processes, only once every one of them has scored its warm-up."""
        return self.can_score and not self.draining and (self.cluster is None or self.cluster.all_ready())

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
            self.score_cache = await asyncio.to_thread(self._make_score_cache)
        started = time.perf_counter()
        await self._rank(WARMUP_JOB, WARMUP_REQUEST_ID, warmup=True)
        self.warmed_up = True
        self.metrics.engine_up.set(1)
        elapsed = time.perf_counter() - started
        if self.cluster is not None:  # the supervisor says `Engine started.` once all are
            self.cluster.mark_warmed_up()
        if self.cluster is not None or len(self.settings.model) > 1:  # several: server/process.py says it
            logger.info("model %s (%s): warm-up rerank scored in %.2fs", self.name, self.model.kind, elapsed)
            return
        logger.info(
            "Engine started. model=%s kind=%s warm-up rerank scored in %.2fs; ready on /v1/rerank",
            self.name,
            self.model.kind,
            elapsed,
        )

    def _make_score_cache(self) -> ScoreCache | None:
        """The score cache, keyed on the weights' identity, what computes with them (vLLM's release,
        the device kind, the dtype the engine runs: server/engine_args.py `engine_identity`) and the kind."""
        started = time.perf_counter()
        try:
            weights = weights_identity(self.served.model)
        except OSError as exc:
            logger.warning("score cache off: the model's files cannot be read to identify them (%s)", exc)
            return None
        identity = weights + f"{self.model.kind}; ".encode() + engine_identity(self.model_dtype or self.settings.dtype)
        cache = ScoreCache.from_settings(self.settings, identity, on_error=self.metrics.score_cache_errors.inc)
        logger.info("score cache identified in %.2fs", time.perf_counter() - started)
        return cache

    def start_draining(self) -> None:
        """SIGTERM came: /ready turns 503 and every answer closes its connection."""
        self.draining = True

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
            return await self._rank(job, request_id)
        finally:
            self.metrics.requests_in_flight.dec()

    async def _rank(self, job: RerankJob, request_id: str, warmup: bool = False) -> Ranking:
        """Prompts, their logits (through the score cache), each document's best one, best first. The
        warm-up goes past the score cache (it must reach the engine) and the request metrics."""
        assert self.prompts is not None and self.engine is not None
        with self.tracing.span("rerank.tokenize") as span:
            if len(job.query) + sum(map(len, job.texts)) <= INLINE_PROMPT_CHARS:
                prompts = self._build_prompts(job)
            else:
                prompts = await asyncio.to_thread(self._build_prompts, job)
            if span is not None:
                span.set_attributes({"rerank.pairs": len(prompts.token_ids), TOKENS: prompts.num_tokens})
        self._check_fits(job, prompts)
        through = await self._logits_through_cache(prompts, job.priority, request_id, use_score_cache=not warmup)
        tokens, cached = prompts.num_tokens, through.prefix_cached_tokens
        if not warmup:
            self.metrics.record_request(len(job.texts), tokens, through.engine_tokens, cached)
            self.metrics.lane_pairs[lane_of(job.priority)].inc(len(prompts.token_ids))
        logits, passages = best_windows(through.logits, prompts.windows)
        order = sorted(range(len(logits)), key=lambda i: -logits[i])
        hits = len(through.logits) - through.engine_pairs
        return Ranking(order, logits, passages, tokens, cached, hits, self.model.identity_activation)

    def _check_fits(self, job: RerankJob, prompts: Prompts) -> None:
        """A text refused rather than cut (truncate: false), and a request of more pairs than the engine takes."""
        if job.truncate is False and any(prompts.truncated):
            self.metrics.reject(RejectReason.TEXT_TOO_LONG, lane_of(job.priority))
            first = prompts.truncated.index(True)
            if prompts.doc_budget is not None:
                room = f"at most {prompts.doc_budget} of its tokens fit in the prompt (max_model_len="
                room += f"{self.max_model_len} less the instruction, query and template)"
            else:
                room = "it needs more windows than max_chunks_per_doc allows"
            raise ServiceError(
                ErrorKind.VALIDATION,
                f"texts[{first}] does not fit: {room}; send truncate: true (or leave it out) to cut it, or shorten it",
            )
        if len(prompts.token_ids) > self.settings.max_pairs_in_flight:  # only chunking gets here
            self.metrics.reject(RejectReason.TOO_MANY_PAIRS, lane_of(job.priority))
            raise ServiceError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"the documents split into {len(prompts.token_ids)} windows, more pairs than the engine takes at once "
                f"({self.settings.max_pairs_in_flight}); send fewer or shorter documents, or a smaller "
                "max_chunks_per_doc",
            )

    async def _logits_through_cache(
        self, prompts: Prompts, priority: int, request_id: str, use_score_cache: bool
    ) -> Through:
        """Every pair's logit, and what the engine did for them; through the score cache when there is one."""
        windows = prompts.priorities  # each prompt's window number in its document (None: all first)
        if self.score_cache is None or not use_score_cache:
            scores = await self._admit_and_score(
                prompts.token_ids, request_id, Pairs(priority, windows, prompts.second_segment)
            )
            return Through(scores.logits, len(prompts.token_ids), prompts.num_tokens, scores.cached_tokens)

        async def score_in_engine(token_ids: list[list[int]], windows: list[int] | None) -> tuple[list[float], int]:
            pairs = Pairs(priority, windows, prompts.second_segment)
            scores = await self._admit_and_score(token_ids, request_id, pairs)
            return scores.logits, scores.cached_tokens

        through = await score_through(self.score_cache, prompts.token_ids, windows, score_in_engine, self.tracing)
        self.metrics.score_cache_hits.inc(len(through.logits) - through.engine_pairs)
        self.metrics.score_cache_misses.inc(through.engine_pairs)
        self.metrics.score_cache_entries.set(self.score_cache.entries)
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

    async def _admit_and_score(self, token_ids: list[list[int]], request_id: str, pairs: Pairs) -> Scores:
        """Admission control around the engine call: the pairs count against --max-pairs-in-flight
        (a bulk request's against its share, server/cluster.py) while the engine has them, or the
        request gets 429. Admitted, they enter the engine's queue in their lane's order."""
        n, lane = len(token_ids), lane_of(pairs.priority)
        bulk = lane is Lane.BULK
        with self.tracing.span("rerank.admission") as span:
            admitted = self.pairs.try_take(n, bulk)
            if span is not None:
                span.set_attributes(
                    {
                        "rerank.pairs": n,
                        "rerank.pairs_in_flight": self.pairs.in_flight,
                        "rerank.admitted": admitted,
                        "rerank.priority": pairs.priority,
                    }
                )
        if not admitted:
            self.metrics.reject(RejectReason.OVERLOADED, lane)
            limit = f"limit {self.pairs.bulk_limit} for bulk requests" if bulk else f"limit {self.pairs.limit}"
            raise ServiceError(
                ErrorKind.OVERLOADED,
                f"server busy: {self.pairs.in_flight} pairs in the engine, {limit}; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.metrics.pairs_in_flight.inc(n)
        self.metrics.lane_pairs_in_flight[lane].inc(n)
        try:
            delay = self.settings.priority_delay_ms / 1000
            priorities = pairs.engine_priorities(n, time.time(), delay)
            if bulk:  # it ages at the gate for its deferral, at most a quarter of its time-out
                max_wait = min(pairs.priority * delay, self.settings.request_timeout / 4)
                gate = self.lanes.bulk(sum(map(len, token_ids)), max_wait)
            else:
                gate = self.lanes.interactive(n)
            async with gate:
                return await self._score_in_engine(token_ids, request_id, priorities, pairs.second_segment, lane)
        finally:
            self.pairs.give_back(n, bulk)
            self.metrics.pairs_in_flight.dec(n)
            self.metrics.lane_pairs_in_flight[lane].dec(n)

    async def _score_in_engine(
        self,
        token_ids: list[list[int]],
        request_id: str,
        priorities: list[int],
        second_segment: int | None,
        lane: Lane,
    ) -> Scores:
        """engine.score() under --request-timeout; an engine that died turns the server unready."""
        assert self.engine is not None
        try:
            with self.tracing.span("rerank.engine") as span:
                async with asyncio.timeout(self.settings.request_timeout):
                    scores = await self.engine.score(token_ids, request_id, priorities, second_segment)
                if span is not None:
                    span.set_attributes(
                        {
                            "gen_ai.request.model": self.name,
                            "rerank.pairs": len(token_ids),
                            TOKENS: sum(map(len, token_ids)),
                            "gen_ai.usage.cache_read.input_tokens": scores.cached_tokens,
                        }
                    )
                return scores
        except TimeoutError:
            self.metrics.reject(RejectReason.TIMEOUT, lane)
            raise ServiceError(
                ErrorKind.TIMEOUT,
                f"scoring took longer than {self.settings.request_timeout:g}s and was aborted; "
                "send fewer or shorter documents",
            ) from None
        except Exception as exc:
            if self.engine.is_dead:
                self.mark_dead()
                raise ServiceError(
                    ErrorKind.SERVICE_UNAVAILABLE, "the engine has stopped; the server is restarting"
                ) from exc
            raise
