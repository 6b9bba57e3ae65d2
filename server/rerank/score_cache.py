"""The exact score cache: a pair whose prompt was scored before, by the same weights in the same
dtype, gets the same logit again (bit-identical) without reaching the engine.

- Key: BLAKE2b-128 of the model's identity (its weight files: `model_files.weights_identity`), the
  dtype the engine runs, and the prompt's token ids (instruction, query, the document as cut, or
  one window). Only keys and logits are stored, never text.
- In front: an in-process LRU of `--score-cache-size` entries (0: no cache at all).
- Behind it, with `--score-cache-url`: Redis (or Valkey), shared by every API process and replica.
  One MGET per request for the local misses, one pipelined SET with `--score-cache-ttl` for what
  the engine scored. A Redis that is down, slow or refusing writes costs a short time-out, a
  warning at most once a minute and a count in `rerank_score_cache_errors_total`: the pairs are
  scored by the engine as if uncached.
- Identical pairs in flight at once are scored once: the later ones wait for the first
  (`claim` / `settle`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from server.core.settings import Settings
from server.core.tracing import NO_TRACING, Tracing
from server.engine.model_files import weights_identity

logger = logging.getLogger("server.score_cache")
KEY_PREFIX = b"rerank:score:v1:"
REDIS_TIMEOUT_S = 0.25  # a slow Redis costs a request at most about this, twice (read, write)
WARN_EVERY_S = 60.0
DOUBLE = struct.Struct("<d")


class ScoreCache:
    @classmethod
    def for_model(
        cls, settings: Settings, model: str, computed_by: bytes, on_error: Callable[[], None]
    ) -> ScoreCache | None:
        """The cache of the model whose files are at `model`, keyed on their identity and on
        `computed_by` (what computes with them: vLLM's release, device, dtype, the model's kind);
        None if the files cannot be read to identify them (the server then runs without one)."""
        started = time.perf_counter()
        try:
            weights = weights_identity(model)
        except OSError as exc:
            logger.warning("score cache off: the model's files cannot be read to identify them (%s)", exc)
            return None
        cache = cls.from_settings(settings, weights + computed_by, on_error)
        logger.info("score cache identified in %.2fs", time.perf_counter() - started)
        return cache

    @classmethod
    def from_settings(cls, settings: Settings, identity: bytes, on_error: Callable[[], None]) -> ScoreCache:
        url = settings.score_cache_url
        cache = cls(
            settings.score_cache_size,
            identity,
            url.get_secret_value() if url is not None else None,
            settings.score_cache_ttl,
            on_error=on_error,
        )
        shared = ", shared through Redis" if url is not None else ""
        logger.info("score cache: %d entries in this process%s", settings.score_cache_size, shared)
        return cache

    def __init__(
        self,
        size: int,
        identity: bytes,
        url: str | None = None,
        ttl: int = 86400,
        on_error: Callable[[], None] = lambda: None,
        redis_timeout: float = REDIS_TIMEOUT_S,
    ) -> None:
        self.size = size
        self.identity = identity  # model identity and dtype, hashed into every key
        self.ttl = ttl
        self.on_error = on_error
        self.redis_timeout = redis_timeout
        self._local: OrderedDict[bytes, float] = OrderedDict()
        # pairs in flight: key -> the future its waiters await (made only once a second caller waits)
        self._inflight: dict[bytes, asyncio.Future[float] | None] = {}
        self._last_warning = -WARN_EVERY_S
        self._redis: Any = None
        if url:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(
                url, socket_timeout=redis_timeout, socket_connect_timeout=redis_timeout, retry_on_timeout=False
            )

    @property
    def entries(self) -> int:
        return len(self._local)

    def key(self, token_ids: Sequence[int]) -> bytes:
        digest = hashlib.blake2b(self.identity, digest_size=16)
        digest.update(array("I", token_ids).tobytes())
        return digest.digest()

    # --- lookups ----------------------------------------------------------------------------
    async def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        """Each key's logit, from this process's cache or else from Redis; None where neither has it."""
        found: list[float | None] = []
        for key in keys:
            value = self._local.get(key)
            if value is not None:
                self._local.move_to_end(key)
            found.append(value)
        missing = [i for i, v in enumerate(found) if v is None]
        if self._redis is not None and missing:
            values = await self._redis_call(self._redis.mget, [KEY_PREFIX + keys[i] for i in missing])
            for i, raw in zip(missing, values or [], strict=False):
                if raw is not None and len(raw) == DOUBLE.size:
                    logit: float = DOUBLE.unpack(raw)[0]
                    found[i] = logit
                    self._remember(keys[i], logit)
        return found

    async def put_many(self, items: dict[bytes, float]) -> None:
        """Remember what the engine scored, here and in Redis."""
        for key, value in items.items():
            self._remember(key, value)
        if self._redis is not None and items:

            async def write() -> None:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, value in items.items():
                        pipe.set(KEY_PREFIX + key, DOUBLE.pack(value), ex=self.ttl)
                    await pipe.execute()

            await self._redis_call(write)

    def _remember(self, key: bytes, value: float) -> None:
        self._local[key] = value
        self._local.move_to_end(key)
        while len(self._local) > self.size:
            self._local.popitem(last=False)

    async def _redis_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            async with asyncio.timeout(self.redis_timeout * 2):
                return await fn(*args)
        except Exception as exc:  # down, slow, refusing writes, or anything else: scored as uncached
            self.on_error()
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:
                self._last_warning = now
                logger.warning(
                    "score cache: Redis unavailable (%s: %s); scoring without it (this warning at most once a minute)",
                    type(exc).__name__,
                    exc,
                )
            return None

    # --- pairs in flight --------------------------------------------------------------------
    def claim(self, key: bytes) -> asyncio.Future[float] | None:
        """None if the caller should score the pair (it is now in flight, settle it later); else
        the future of the identical pair already in flight."""
        if key not in self._inflight:
            self._inflight[key] = None
            return None
        future = self._inflight[key]
        if future is None:
            future = self._inflight[key] = asyncio.get_running_loop().create_future()
        return future

    def settle(self, key: bytes, value: float | None) -> None:
        """The pair claimed is scored (value), or was not (None: whoever waits scores it itself)."""
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            if value is None:
                future.cancel()
            else:
                future.set_result(value)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


Scorer = Callable[[list[list[int]], list[int] | None], Awaitable[tuple[list[float], int]]]


class Through(NamedTuple):
    """What `score_through` found: every prompt's logit, and what the engine did for this call."""

    logits: list[float]
    engine_pairs: int  # prompts the engine scored (the rest came from the cache or a pair in flight)
    engine_tokens: int  # their tokens
    prefix_cached_tokens: int  # of those, the tokens vLLM read from its prefix cache


async def score_through(
    cache: ScoreCache,
    prompts: list[list[int]],
    priorities: list[int] | None,
    score: Scorer,
    tracing: Tracing = NO_TRACING,
) -> Through:
    """Every prompt's logit: from the cache, from an identical pair in flight, or from `score`
    (the engine: admission and all) for the rest, each distinct prompt once."""
    with tracing.span("rerank.score_cache.lookup") as span:
        keys = [cache.key(p) for p in prompts]
        logits = await cache.get_many(keys)
        if span is not None:
            hits = sum(v is not None for v in logits)
            span.set_attributes({"rerank.score_cache.hits": hits, "rerank.score_cache.misses": len(keys) - hits})
    mine: dict[bytes, list[int]] = {}  # prompts this call scores: key -> its indices
    theirs: dict[int, asyncio.Future[float]] = {}  # index -> the identical pair another call scores
    for i, value in enumerate(logits):
        if value is not None:
            continue
        if keys[i] in mine:
            mine[keys[i]].append(i)
        elif (future := cache.claim(keys[i])) is None:
            mine[keys[i]] = [i]
        else:
            theirs[i] = future
    pairs, tokens, prefix_cached = await _score_and_store(cache, mine, prompts, priorities, logits, score, tracing)
    retry: list[int] = []
    for i, future in theirs.items():
        await asyncio.wait([future])  # not shield(): a cancelled future must not look like our own cancellation
        if future.cancelled():  # the other call failed or its client hung up: this call scores it
            retry.append(i)
        else:
            logits[i] = future.result()
    if retry:  # through the same mechanism: cached by now, in flight again, or scored here
        retry_priorities = [priorities[i] for i in retry] if priorities is not None else None
        more = await score_through(cache, [prompts[i] for i in retry], retry_priorities, score, tracing)
        for i, value in zip(retry, more.logits, strict=True):
            logits[i] = value
        pairs, tokens, prefix_cached = (
            pairs + more.engine_pairs,
            tokens + more.engine_tokens,
            prefix_cached + more.prefix_cached_tokens,
        )
    return Through([float(v) for v in logits], pairs, tokens, prefix_cached)  # type: ignore[arg-type]


async def _score_and_store(
    cache: ScoreCache,
    mine: dict[bytes, list[int]],
    prompts: list[list[int]],
    priorities: list[int] | None,
    logits: list[float | None],
    score: Scorer,
    tracing: Tracing,
) -> tuple[int, int, int]:
    """Score one prompt of each key in `mine`, give every index its value, settle and store them:
    (pairs scored, their tokens, the engine's prefix-cache tokens among them)."""
    if not mine:
        return 0, 0, 0
    firsts = [indices[0] for indices in mine.values()]
    try:
        values, cached_tokens = await score(
            [prompts[i] for i in firsts], [priorities[i] for i in firsts] if priorities is not None else None
        )
    except BaseException:
        for key in mine:
            cache.settle(key, None)
        raise
    for (key, indices), value in zip(mine.items(), values, strict=True):
        for i in indices:
            logits[i] = value
        cache.settle(key, value)
    with tracing.span("rerank.score_cache.store") as span:
        if span is not None:
            span.set_attribute("rerank.pairs", len(mine))
        await cache.put_many({key: value for key, value in zip(mine, values, strict=True)})
    return len(firsts), sum(len(prompts[i]) for i in firsts), cached_tokens
