"""The fast tier's engine and app: the service's own behaviour (admission, time-outs, a dead engine,
lanes, routing, errors) tested in process in milliseconds, without vLLM or model weights.

`FakeEngine` honours `server.engine.vllm_engine.Engine`: a made-up logit per prompt (from its token ids, so
repeatable), every call recorded, and switches to hold requests at a gate, fail them or die. It is
the same `EngineWrapper` the engine tests put around the real engine, around made-up logits.
`FakeServer` is the app as `create_app` builds it, its models started on one `FakeEngine` with the
real Qwen3 tokenizer (tests/fixtures/qwen3-tokenizer), talked to over httpx's ASGI transport.
Scores here mean nothing: whatever needs real ones runs on the real engine (`engine` marker).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.engine.vllm_engine import Scores
from server.rerank.serving import WARMUP_REQUEST_ID

TOKENIZER_DIR = Path(__file__).resolve().parent / "fixtures" / "qwen3-tokenizer"
API_KEY = "test-key"


@dataclass(frozen=True)
class Call:
    """One call of FakeEngine.score, as the service made it."""

    prompts: list[list[int]]
    request_id: str
    priorities: list[int] | None
    second_segment: int | None


class EngineWrapper:
    """An engine behind a test's hooks, honouring the `Engine` protocol: every call recorded and its
    pairs counted, every field forwarded (a cross-encoder keeps its token types, the queue its
    priorities), and for every request but the warm-up (told by its constant, WARMUP_REQUEST_ID)
    `before` run first, then `failure` raised if set (a bug's error: its message must never reach a
    client). Around the real engine in the engine tests; around made-up logits as `FakeEngine`."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[Call] = []
        self.pairs = 0
        self.failure: BaseException | None = None

    @property
    def is_dead(self) -> bool:
        return bool(self.real.is_dead)

    @property
    def dtype(self) -> str | None:
        return getattr(self.real, "dtype", None)

    async def before(self, prompts: Sequence[list[int]], request_id: str) -> None:
        """A request's hook (a subclass holds or counts it here)."""

    async def score(
        self,
        prompts: Sequence[list[int]],
        request_id: str,
        priorities: Sequence[int] | None = None,
        second_segment: int | None = None,
    ) -> Scores:
        self.calls.append(
            Call([list(p) for p in prompts], request_id, list(priorities) if priorities else None, second_segment)
        )
        if request_id != WARMUP_REQUEST_ID:
            await self.before(prompts, request_id)
            if self.failure is not None:
                raise self.failure
        self.pairs += len(prompts)
        return await self.real.score(prompts, request_id, priorities, second_segment)

    def requests(self) -> list[Call]:
        """The calls of requests (the warm-up's left out)."""
        return [c for c in self.calls if c.request_id != WARMUP_REQUEST_ID]


class MadeUpLogits:
    """The engine without vLLM: a repeatable logit per prompt, from its token ids."""

    is_dead = False

    async def score(self, prompts: Sequence[list[int]], *_: Any) -> Scores:  # EngineWrapper passes every field
        return Scores([logit(p) for p in prompts], 0)


class FakeEngine(EngineWrapper):
    """The fast tier's engine: made-up logits at once, or when its gate opens; `dead` kills it."""

    def __init__(self) -> None:
        super().__init__(MadeUpLogits())
        self.gate: asyncio.Event | None = None  # set: requests but the warm-up wait until it opens
        self.dead = False
        self.waiting = 0  # requests held at the gate now

    @property
    def is_dead(self) -> bool:
        return self.dead

    def hold(self) -> asyncio.Event:
        """From now on requests wait at a gate until it is set (call from the app's loop)."""
        self.gate = asyncio.Event()
        return self.gate

    async def before(self, prompts: Sequence[list[int]], request_id: str) -> None:
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1


class GatedEngine(EngineWrapper):
    """Holds every request at a gate before the real engine scores it; `open` from any thread."""

    def __init__(self, real: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(real)
        self.loop = loop
        self.gate = asyncio.Event()
        self.waiting = 0

    def open(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    async def before(self, prompts: Sequence[list[int]], request_id: str) -> None:
        self.waiting += 1
        await self.gate.wait()


def logit(prompt: Sequence[int]) -> float:
    """A repeatable stand-in for a model's logit, spread over about (-4, 4)."""
    return (sum(t * (i + 1) for i, t in enumerate(prompt)) % 8001) / 1000 - 4


@dataclass
class FakeServer:
    app: Any
    engine: FakeEngine
    client: httpx.AsyncClient

    @property
    def models(self) -> Any:
        return self.app.state.models


def settings(**overrides: Any) -> Any:
    from server.core.settings import Settings

    defaults: dict[str, Any] = dict(
        model=str(TOKENIZER_DIR),
        served_model_name="qwen3-reranker-test",
        max_model_len=512,
        log_file=None,
        score_cache_size=0,
        api_key=[API_KEY],
    )
    return Settings(**{**defaults, **overrides})


@asynccontextmanager
async def fake_server(client_key: str | None = API_KEY, **overrides: Any) -> AsyncIterator[FakeServer]:
    """The app with `overrides` of the test settings, every model started (warmed up) on one FakeEngine;
    its client sends `client_key` (None: no key)."""
    from server.engine.model_kind import QWEN3_RERANKER
    from server.http.app import create_app

    app = create_app(settings(**overrides))
    engine = FakeEngine()
    tokenizer = _tokenizer()
    for service in app.state.models.services:
        await service.start(engine, tokenizer, QWEN3_RERANKER)
    headers = {"Authorization": f"Bearer {client_key}"} if client_key else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake", headers=headers, timeout=30) as client:
        yield FakeServer(app, engine, client)
    await app.state.models.close()


@functools.cache
def _tokenizer() -> Any:
    """The Qwen3 tokenizer, loaded once per test session (a second)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


async def until(predicate: Any, timeout: float = 30) -> None:
    """Yield to the loop until `predicate()` holds (a generous bound: only a hang fails it)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)
