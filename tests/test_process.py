"""The server as a process, started the way the Docker image starts it (`python -m server ...`).

Covers what only a whole process shows: /health before the engine is up, the `Engine started.`
line in vllm.log, SIGTERM draining in-flight work and exiting 0, and an engine that dies making
the process exit non-zero (so Docker's restart policy brings it back).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import wait_until
from .helpers import GOOD, LONG_DOCS, ServerProcess

pytestmark = pytest.mark.engine


@pytest.fixture
def server_process(tiny_model: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tiny_model, tmp_path)
    yield process
    process.stop()


def test_entrypoint_serves_logs_engine_started_and_drains_on_sigterm(server_process):
    p = server_process
    # Liveness comes before readiness: /health answers while the engine is still loading.
    assert wait_until(lambda: p.get("/health") == 200, 180, 0.2)
    assert p.get("/ready") == 503 and "Engine started." not in p.log
    p.wait_ready()
    lines = p.log.splitlines()
    warm = [i for i, line in enumerate(lines) if "warm-up rerank scored" in line]
    started = [i for i, line in enumerate(lines) if "Engine started." in line]
    assert len(warm) == 1 and len(started) == 1 and started[0] > warm[0], "`Engine started.` once, after the warm-up"
    assert "vllm[" in p.log, "vLLM's own log lines (engine core process included) go to vllm.log too"
    assert "vllm:" not in httpx.get(p.url + "/metrics", timeout=10).text, "vLLM's metrics only with --vllm-metrics"

    # A load balancer's keep-alive connection, open before SIGTERM.
    keep_alive = httpx.Client(base_url=p.url, timeout=120)
    assert keep_alive.post("/v1/rerank", json=GOOD).status_code == 200

    # A long request is in flight when SIGTERM arrives: it completes, then the process exits 0.
    result: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        result["r"] = httpx.post(p.url + "/v1/rerank", json={"query": "q", "documents": LONG_DOCS}, timeout=120)

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert wait_until(lambda: p.metric("rerank_pairs_in_flight") > 0, 60, 0.02), "the request never reached the engine"
    p.proc.send_signal(signal.SIGTERM)
    # At once not ready, yet still serving during --drain-delay: a request on the open keep-alive
    # connection is answered, and told to close the connection.
    assert wait_until(lambda: p.get("/ready") == 503, 30, 0.05) and p.proc.poll() is None
    during = keep_alive.post("/v1/rerank", json=GOOD)
    assert during.status_code == 200 and len(during.json()["results"]) == 2
    assert during.headers["connection"] == "close"
    keep_alive.close()
    thread.join(120)
    assert result["r"].status_code == 200 and len(result["r"].json()["results"]) == len(LONG_DOCS)
    assert p.proc.wait(120) == 0
    assert "/ready is now 503" in p.log and "server stopped (exit code 0)" in p.log


def test_startup_deadline_ends_a_server_whose_engine_is_not_ready(tiny_model: Path, tmp_path: Path):
    """An engine not ready within --startup-timeout ends the process non-zero (no server that
    answers /health forever while never becoming ready)."""
    p = ServerProcess(tiny_model, tmp_path, ("--startup-timeout", "1"))
    try:
        assert p.proc.wait(180) == 1
        assert "not ready within --startup-timeout=1s" in p.log
    finally:
        p.stop()


def test_engine_death_turns_ready_503_and_exits_non_zero(server_process):
    p = server_process
    p.wait_ready()
    [engine_core] = [
        c for c in psutil.Process(p.proc.pid).children(recursive=True) if "EngineCore" in " ".join(c.cmdline())
    ] or [None]
    assert engine_core is not None, [c.cmdline() for c in psutil.Process(p.proc.pid).children(recursive=True)]
    engine_core.kill()
    # Within seconds: not ready any more, and the process ends with a failure code.
    assert wait_until(lambda: p.get("/ready") in (503, 0), 60, 0.1)
    assert p.proc.wait(30) != 0
    assert "engine died" in p.log or "engine failed" in p.log


def test_a_worker_lost_during_start_up_ends_the_process_at_once(tiny_model: Path, tmp_path: Path):
    """The hang an operator saw: an engine core waiting for a worker process that no longer exists.
    Simulated by freezing the engine core (so that vLLM cannot notice) and killing its worker: the
    server must exit 1 at once, not at --startup-timeout."""
    p = ServerProcess(tiny_model, tmp_path, ("--startup-timeout", "1500"))
    try:
        found: dict[str, psutil.Process] = {}

        def worker_started() -> bool:
            worker = next(iter(p.children_titled("VLLM::Worker")), None)
            if worker is not None:
                found["core"], found["worker"] = psutil.Process(worker.ppid()), worker
            return worker is not None or p.proc.poll() is not None

        assert wait_until(worker_started, 300, 0.01) and found, (tmp_path / "stdout.txt").read_text()[-3000:]
        found["core"].suspend()
        assert p.get("/ready") == 503  # still starting: this is the start-up path
        found["worker"].kill()
        assert p.proc.wait(120) == 1
        assert "exited while the engine was starting" in p.log
    finally:
        p.stop()


def test_every_accepted_connection_has_nagle_off() -> None:
    """asyncio turns Nagle's algorithm off only on a connection whose socket names TCP as its
    protocol. With it on, a response's body waited for the client's ack of its headers, which a
    client on a kept-alive connection delays by 40 ms: 3x the latency of a small request. Checked
    on the listening socket as this process serves it and as an API process gets it (from its fd)."""
    import asyncio

    from server.core.settings import Settings
    from server.processes.process import bind_socket

    listener = bind_socket(Settings(host="127.0.0.1", port=0))
    inherited = socket.socket(fileno=os.dup(listener.fileno()))  # how a spawned API process rebuilds it

    async def nodelay_of_accepted(sock: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 60)
        finally:
            writer.close()
            server.close()

    try:
        assert asyncio.run(nodelay_of_accepted(listener)) != 0
        assert asyncio.run(nodelay_of_accepted(inherited)) != 0
    finally:
        listener.close()
        inherited.close()
