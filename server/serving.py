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
from server.engine import Engine, Scores
from server.errors import ErrorKind, ServiceError
from server.metrics import Metrics
from server.model_files import hub_revision, weights_identity
from server.prompt import PromptBuilder, Prompts, QueryTooLongError, Tokenizer, Window
from server.rerank_job import Passage, Ranking, RerankJob
from server.score_cache import ScoreCache, score_through
from server.settings import Settings
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


@dataclass
class RequestStats:
    """What the access log and metrics report about one rerank request."""

    documents: int = 0
    tokens: int = 0
    cached_tokens: int = 0


def load_tokenizer(model: str) -> Tokenizer:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


class RerankService:
    def __init__(
        self, settings: Settings, metrics: Metrics, cluster: Cluster | None = None, tracing: Tracing = NO_TRACING
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracing = tracing  # off unless an OTLP endpoint is set (server/tracing.py)
        self.cluster = cluster  # the server's other API processes, if it runs several
        self.engine: Engine | None = None
        self.prompts: PromptBuilder | None = None
        self.warmed_up = False
        self.draining = False  # SIGTERM came: /ready is 503, responses close their connection
        self.pairs = PairBudget(settings.max_pairs_in_flight, cluster.pairs if cluster else None)
        metrics.max_pairs_in_flight.set(settings.max_pairs_in_flight)
        self.model_sha: str | None = None  # the hub commit of the model's files, if known (GET /info)
        self.score_cache: ScoreCache | None = None  # made at start, once the weights' identity is known

    @property
    def model_dtype(self) -> str | None:
        """The dtype the engine runs the model in (None before it started)."""
        return getattr(self.engine, "dtype", None)

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

    async def start(self, engine: Engine, tokenizer: Tokenizer | None = None) -> None:
        """Attach a running engine, score a warm-up request, then report ready."""
        if tokenizer is None:
            tokenizer = await asyncio.to_thread(load_tokenizer, self.settings.model)
        self.prompts = PromptBuilder(tokenizer, self.settings.max_model_len)
        self.model_sha = hub_revision(self.settings.model)
        self.engine = engine
        if self.settings.score_cache_size > 0:
            self.score_cache = await asyncio.to_thread(self._make_score_cache)
        started = time.perf_counter()
        await self._rank(WARMUP_JOB, WARMUP_REQUEST_ID, RequestStats(), use_score_cache=False)
        self.warmed_up = True
        self.metrics.engine_up.set(1)
        if self.cluster is not None:  # the supervisor says `Engine started.` once all are
            self.cluster.mark_warmed_up()
            logger.info("warm-up rerank scored in %.2fs", time.perf_counter() - started)
            return
        logger.info(
            "Engine started. model=%s warm-up rerank scored in %.2fs; ready on /v1/rerank",
            self.settings.model_name,
            time.perf_counter() - started,
        )

    def _make_score_cache(self) -> ScoreCache | None:
        """The score cache, keyed on the weights' identity and the dtype the engine runs."""
        started = time.perf_counter()
        try:
            weights = weights_identity(self.settings.model)
        except OSError as exc:
            logger.warning("score cache off: the model's files cannot be read to identify them (%s)", exc)
            return None
        dtype = self.model_dtype or self.settings.dtype
        url = self.settings.score_cache_url
        cache = ScoreCache(
            self.settings.score_cache_size,
            weights + dtype.encode(),
            url.get_secret_value() if url is not None else None,
            self.settings.score_cache_ttl,
            on_error=self.metrics.score_cache_errors.inc,
        )
        logger.info(
            "score cache: %d entries in this process%s; weights identified in %.2fs",
            self.settings.score_cache_size,
            ", shared through Redis" if url is not None else "",
            time.perf_counter() - started,
        )
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
    async def rerank(self, job: RerankJob, request_id: str, stats: RequestStats) -> Ranking:
        if not self.can_score:
            raise ServiceError(
                ErrorKind.SERVICE_UNAVAILABLE, "the engine is not ready yet; retry when GET /ready is 200"
            )
        if job.model is not None and job.model != self.settings.model_name:
            raise ServiceError(
                ErrorKind.NOT_FOUND,
                f"model {job.model!r} is not served here; this server serves {self.settings.model_name!r}",
            )
        if len(job.texts) > self.settings.max_documents:
            self.metrics.rejected.labels("too_many_documents").inc()
            raise ServiceError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"{len(job.texts)} documents in one request; the limit is {self.settings.max_documents}",
            )
        return await self._rank(job, request_id, stats)

    async def _rank(
        self, job: RerankJob, request_id: str, stats: RequestStats, use_score_cache: bool = True
    ) -> Ranking:
        assert self.prompts is not None and self.engine is not None
        stats.documents = len(job.texts)
        with self.tracing.span("rerank.tokenize") as span:
            prompts = await asyncio.to_thread(self._build_prompts, job)
            if span is not None:
                span.set_attributes({"rerank.prompts": len(prompts.token_ids), TOKENS: prompts.num_tokens})
        stats.tokens = prompts.num_tokens
        self.metrics.documents.observe(len(job.texts))
        self.metrics.tokens.observe(stats.tokens)
        if job.truncate is False and any(prompts.truncated):
            self.metrics.rejected.labels("text_too_long").inc()
            first = prompts.truncated.index(True)
            if prompts.doc_budget is not None:
                room = f"at most {prompts.doc_budget} of its tokens fit in the prompt (max_model_len="
                room += f"{self.settings.max_model_len} less the instruction, query and template)"
            else:
                room = "it needs more windows than max_chunks_per_doc allows"
            raise ServiceError(
                ErrorKind.VALIDATION,
                f"texts[{first}] does not fit: {room}; send truncate: true (or leave it out) to cut it, or shorten it",
            )
        if len(prompts.token_ids) > self.settings.max_pairs_in_flight:  # only chunking gets here
            self.metrics.rejected.labels("too_many_windows").inc()
            raise ServiceError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"the documents split into {len(prompts.token_ids)} windows, more pairs than the engine takes at once "
                f"({self.settings.max_pairs_in_flight}); send fewer or shorter documents, or a smaller "
                "max_chunks_per_doc",
            )

        pair_logits, engine_pairs, engine_tokens, prefix_cached = await self._logits_through_cache(
            prompts, request_id, use_score_cache
        )
        stats.cached_tokens = prefix_cached
        self.metrics.record_tokens(stats.tokens, engine_tokens, prefix_cached)
        logits, passages = best_windows(pair_logits, prompts.windows)
        order = sorted(range(len(logits)), key=lambda i: -logits[i])
        return Ranking(
            order, logits, passages, stats.tokens, prefix_cached, score_cache_hits=len(pair_logits) - engine_pairs
        )

    async def _logits_through_cache(
        self, prompts: Prompts, request_id: str, use_score_cache: bool
    ) -> tuple[list[float], int, int, int]:
        """Every prompt's logit, and what the engine did: (logits, pairs it scored, their tokens, the
        tokens of those it read from vLLM's prefix cache). Through the score cache when there is one;
        the warm-up goes past it (it must reach the engine), whatever its request id."""
        if self.score_cache is None or not use_score_cache:
            scores = await self._admit_and_score(prompts.token_ids, request_id, prompts.priorities)
            return scores.logits, len(prompts.token_ids), prompts.num_tokens, scores.cached_tokens

        async def score_in_engine(token_ids: list[list[int]], priorities: list[int] | None) -> tuple[list[float], int]:
            scores = await self._admit_and_score(token_ids, request_id, priorities)
            return scores.logits, scores.cached_tokens

        through = await score_through(
            self.score_cache, prompts.token_ids, prompts.priorities, score_in_engine, self.tracing
        )
        self.metrics.score_cache_hits.inc(len(through.logits) - through.engine_pairs)
        self.metrics.score_cache_misses.inc(through.engine_pairs)
        self.metrics.score_cache_entries.set(self.score_cache.entries)
        return through

    def _build_prompts(self, job: RerankJob) -> Prompts:
        """The job's prompts under its long-document strategy (runs in a worker thread)."""
        assert self.prompts is not None
        try:
            strategy = job.long_document_strategy
            if strategy is None:  # Cohere's v1 SDK sends only max_chunks_per_doc
                strategy = "chunk" if job.max_chunks_per_doc is not None else self.settings.long_document_strategy
            if strategy == "truncate":
                return self.prompts.build(
                    job.query, job.texts, job.instruction, job.max_tokens_per_doc, job.truncation_direction
                )
            max_chunks = job.max_chunks_per_doc or self.settings.max_chunks_per_doc
            if max_chunks > self.settings.max_chunks_per_doc:
                raise ServiceError(
                    ErrorKind.VALIDATION,
                    f"max_chunks_per_doc: at most {self.settings.max_chunks_per_doc} on this server, got {max_chunks}",
                )
            return self.prompts.build_chunked(
                job.query,
                job.texts,
                job.instruction,
                job.max_tokens_per_doc,
                max_chunks,
                self.settings.chunk_overlap_tokens,
            )
        except QueryTooLongError as exc:
            self.metrics.rejected.labels("query_too_long").inc()
            raise ServiceError(ErrorKind.INVALID_REQUEST, str(exc)) from None

    async def _admit_and_score(
        self, token_ids: list[list[int]], request_id: str, priorities: list[int] | None
    ) -> Scores:
        """Admission control, time-out and engine errors around engine.score()."""
        assert self.engine is not None
        n = len(token_ids)
        with self.tracing.span("rerank.admission") as span:
            admitted = self.pairs.try_take(n)
            if span is not None:
                span.set_attributes(
                    {"rerank.pairs": n, "rerank.pairs_in_flight": self.pairs.in_flight, "rerank.admitted": admitted}
                )
        if not admitted:
            self.metrics.rejected.labels("overloaded").inc()
            raise ServiceError(
                ErrorKind.OVERLOADED,
                f"server busy: {self.pairs.in_flight} pairs in the engine, limit "
                f"{self.settings.max_pairs_in_flight}; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.metrics.pairs_in_flight.inc(n)
        self.metrics.requests_in_flight.inc()
        try:
            with self.tracing.span("rerank.engine") as span:
                async with asyncio.timeout(self.settings.request_timeout):
                    scores = await self.engine.score(token_ids, request_id, priorities)
                if span is not None:
                    span.set_attributes(
                        {
                            "gen_ai.request.model": self.settings.model_name,
                            "rerank.pairs": n,
                            TOKENS: sum(map(len, token_ids)),
                            "gen_ai.usage.cache_read.input_tokens": scores.cached_tokens,
                        }
                    )
                return scores
        except TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
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
        finally:
            self.pairs.give_back(n)
            self.metrics.pairs_in_flight.dec(n)
            self.metrics.requests_in_flight.dec()


def best_windows(scores: list[float], windows: list[list[Window]] | None) -> tuple[list[float], list[Passage | None]]:
    """Each document's score (the highest of its windows') and, for a document of several
    windows, where the best one lies (the first of equal ones)."""
    if windows is None:
        return scores, [None] * len(scores)
    doc_scores: list[float] = []
    passages: list[Passage | None] = []
    first = 0
    for doc_windows in windows:
        window_scores = scores[first : first + len(doc_windows)]
        best = max(range(len(doc_windows)), key=window_scores.__getitem__)
        doc_scores.append(window_scores[best])
        window = doc_windows[best]
        passage = Passage(window.start, window.end, best, len(doc_windows))
        passages.append(passage if len(doc_windows) > 1 else None)
        first += len(doc_windows)
    return doc_scores, passages
