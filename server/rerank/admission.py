"""Admission: a request's pairs into the engine, or a 429.

The pairs count against --max-pairs-in-flight (a bulk request's against what the interactive
reserve leaves, server/core/cluster.py) while the engine has them; admitted, they pass the lanes' gate
(server/rerank/lanes.py: bulk waits while interactive pairs are scored) and enter the engine's queue in
their lane's order, under --request-timeout (504); an engine that died turns the model unready (503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.core.cluster import Cluster, PairBudget
from server.core.errors import ErrorKind, ServiceError
from server.core.metrics import ModelMetrics, RejectReason
from server.core.rerank_job import Lane, lane_of
from server.core.settings import Settings
from server.core.tracing import Tracing
from server.engine.engine_args import max_batch_tokens
from server.engine.vllm_engine import Engine, Scores
from server.rerank.lanes import EngineLanes

TOKENS = "gen_ai.usage.input_tokens"  # OpenTelemetry's name for a span's prompt tokens


@dataclass(frozen=True)
class Pairs:
    """A request's prompts and what the engine needs besides them: where they queue and a
    cross-encoder's token types."""

    token_ids: list[list[int]]
    priority: int  # the request's (lower first)
    windows: list[int] | None  # each prompt's window number in its document (None: each a document's first)
    second_segment: int | None  # a cross-encoder's: where token type 1 starts in every prompt

    def engine_priorities(self, now: float, delay: float) -> list[int]:
        """vLLM's priority of each pair (lower first): its arrival plus `delay` seconds for each
        priority point and each window after a document's first, in microseconds. The engine thus
        serves the earliest deadline first: an interactive pair overtakes bulk pairs that arrived up to
        priority x delay before it, and bulk that waited longer goes first (it ages, never starves)."""
        windows = self.windows or [0] * len(self.token_ids)
        return [round((now + (self.priority + k) * delay) * 1_000_000) for k in windows]


class Admission:
    """One served model's way into its engine: the pair budget, the lanes' gate and the time-out."""

    def __init__(
        self, settings: Settings, metrics: ModelMetrics, cluster: Cluster | None, tracing: Tracing, name: str
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracing = tracing
        self.name = name  # the served model's, for spans
        self.budget = PairBudget(
            settings.max_pairs_in_flight,
            settings.interactive_reserve_pairs or 0,
            cluster.pairs if cluster else None,
            cluster.bulk_pairs if cluster else None,
        )
        self.lanes = EngineLanes(max_batch_tokens(settings))  # bulk waits while interactive is scored

    async def score(self, engine: Engine, pairs: Pairs, request_id: str, on_dead: Callable[[], None]) -> Scores:
        """The pairs' scores, once admitted; a ServiceError if they are not (429), take too long (504)
        or the engine died (503, after `on_dead`)."""
        n, lane = len(pairs.token_ids), lane_of(pairs.priority)
        bulk = lane is Lane.BULK
        with self.tracing.span("rerank.admission") as span:
            admitted = self.budget.try_take(n, bulk)
            if span is not None:
                span.set_attributes(
                    {
                        "rerank.pairs": n,
                        "rerank.pairs_in_flight": self.budget.in_flight,
                        "rerank.admitted": admitted,
                        "rerank.priority": pairs.priority,
                    }
                )
        if not admitted:
            self.metrics.reject(RejectReason.OVERLOADED, lane)
            limit = f"limit {self.budget.bulk_limit} for bulk requests" if bulk else f"limit {self.budget.limit}"
            raise ServiceError(
                ErrorKind.OVERLOADED,
                f"server busy: {self.budget.in_flight} pairs in the engine, {limit}; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.metrics.pairs_in_flight.inc(n)
        self.metrics.lane_pairs_in_flight[lane].inc(n)
        try:
            delay = self.settings.priority_delay_ms / 1000
            if bulk:  # it ages at the gate for its deferral, at most a quarter of its time-out
                max_wait = min(pairs.priority * delay, self.settings.request_timeout / 4)
                gate = self.lanes.bulk(sum(map(len, pairs.token_ids)), max_wait)
            else:
                gate = self.lanes.interactive(n)
            priorities = pairs.engine_priorities(time.time(), delay)
            async with gate:
                return await self._in_engine(engine, pairs, request_id, priorities, lane, on_dead)
        finally:
            self.budget.give_back(n, bulk)
            self.metrics.pairs_in_flight.dec(n)
            self.metrics.lane_pairs_in_flight[lane].dec(n)

    async def _in_engine(
        self,
        engine: Engine,
        pairs: Pairs,
        request_id: str,
        priorities: list[int],
        lane: Lane,
        on_dead: Callable[[], None],
    ) -> Scores:
        """engine.score() under --request-timeout, in a span; an engine that died calls `on_dead`."""
        try:
            with self.tracing.span("rerank.engine") as span:
                async with asyncio.timeout(self.settings.request_timeout):
                    scores = await engine.score(pairs.token_ids, request_id, priorities, pairs.second_segment)
                if span is not None:
                    span.set_attributes(
                        {
                            "gen_ai.request.model": self.name,
                            "rerank.pairs": len(pairs.token_ids),
                            TOKENS: sum(map(len, pairs.token_ids)),
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
            if engine.is_dead:
                on_dead()
                raise ServiceError(
                    ErrorKind.SERVICE_UNAVAILABLE, "the engine has stopped; the server is restarting"
                ) from exc
            raise
