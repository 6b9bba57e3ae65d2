"""One serving process's lifetime: the HTTP server, the engine's lifetime, the start-up deadline
and the start-up watchdog. The single-process server (server/cli.py) and each API process of a
supervisor (server/processes/supervisor.py) run `serve` alike.

The HTTP server answers /health at once; the engine loads beside it, scores a warm-up request,
logs `Engine started.` and turns /ready to 200. An engine not ready within --startup-timeout
seconds, or one whose engine-core or worker process goes away while it starts, ends the process
with exit 1. SIGTERM drains (server/processes/shutdown.py) and the process exits 0; an engine that dies
makes it exit 1 so that a restart policy brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any

import uvicorn

from server.core.cluster import Cluster
from server.core.log import engine_started
from server.core.settings import Settings
from server.engine.engine_args import Deployment
from server.engine.model_kind import model_info
from server.engine.vllm_engine import EngineClient, VllmEngine, open_engine
from server.http.app import create_app
from server.processes.engine_processes import WATCHDOG_INTERVAL_S, end_process_now, watch_engine_start
from server.processes.shutdown import DrainingServer
from server.rerank.served_models import ServedModels
from server.rerank.serving import RerankService

logger = logging.getLogger("server")
LISTEN_BACKLOG = 2048


def bind_socket(settings: Settings) -> socket.socket:
    """The HTTP listening socket, bound before anything else starts, so that a taken port fails in
    a second rather than after the model has loaded. Raises OSError (e.g. address in use).

    Its protocol is named (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only on connections whose
    socket says TCP. Without it Nagle's algorithm holds a response's body until the client acks its
    headers, and a client on a kept-alive connection delays that ack by 40 ms: every response after
    a connection's first took 40 ms longer (what `vllm bench serve`'s aiohttp client measured)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it (Linux)
        sock.bind((settings.host, settings.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """`main` (`serve`) on uvloop's event loop, as uvicorn's own runner and vLLM's server run theirs;
    its result, the exit code. With round 6's two other cuts it took the API process's CPU per
    one-document request from 3.2 to 2.0-2.6 ms (docs/performance.md, "Curves")."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def serve(
    settings: Settings,
    client: EngineClient | None = None,
    sock: socket.socket | None = None,
    cluster: Cluster | None = None,
    deployment: Deployment | None = None,
) -> int:
    """Run the HTTP server and the engine until shutdown; return the process exit code.

    Alone, this process starts the engine (and binds --host/--port unless given `sock`); as one of
    several API processes it is a client of the supervisor's engine core on its shared socket.
    """
    app = create_app(settings, cluster, deployment)
    models: ServedModels = app.state.models
    server = DrainingServer(
        models.start_draining,
        settings.drain_delay,
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=settings.drain_timeout,
            timeout_keep_alive=30,
        ),
    )
    engine_task = asyncio.create_task(run_engines(settings, client, models))
    engine_task.add_done_callback(lambda _: setattr(server, "should_exit", True))  # an engine that ended stops it
    await server.serve(sockets=[sock] if sock is not None else None)
    exit_code = 1 if engine_task.done() and not engine_task.cancelled() else 0  # the engine ended it: restart
    await models.close()
    await asyncio.to_thread(app.state.tracing.shutdown)  # the last spans (bounded, if a collector is gone)
    if not engine_task.done():
        engine_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine_task
    logger.info("server stopped (exit code %d)", exit_code)
    return exit_code


async def run_engines(settings: Settings, client: EngineClient | None, models: ServedModels) -> None:
    """Start each model's engine in turn (on a GPU each one measures the memory the ones before
    left), hand it to its service, then watch them all. Returns once one has died or failed (the
    process must then exit 1); cancelled at shutdown, it closes the engines."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            engines: list[VllmEngine] = []
            for service in models.services:
                engines.append(await start_engine(settings, client, service, stack))
            if client is None:  # with --api-processes the supervisor says it, once every process is ready
                logger.info(engine_started(models.names))
            while not any(engine.is_dead for engine in engines):
                await asyncio.sleep(WATCHDOG_INTERVAL_S)
            for service, engine in zip(models.services, engines, strict=True):
                if engine.is_dead:
                    service.mark_dead()
                    logger.error("the vLLM engine died (model %s); exiting so that it can be restarted", service.name)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("the vLLM engine failed")
        for service in models.services:
            service.mark_dead()


async def start_engine(
    settings: Settings, client: EngineClient | None, service: RerankService, stack: contextlib.AsyncExitStack
) -> VllmEngine:
    """The engine open (closed with `stack`) and warmed up within --startup-timeout, a watchdog on its
    processes meanwhile; past the deadline the process ends at once (a hung load cannot be cancelled)."""
    watch = asyncio.create_task(watch_engine_start())
    try:
        async with asyncio.timeout(settings.startup_timeout):
            info = await asyncio.to_thread(model_info, service.served)  # once, for the engine and the prompts
            engine = await stack.enter_async_context(open_engine(settings, service.served, client, info))
            await service.start(engine, model=info)
            return engine
    except TimeoutError:
        logger.error(
            "the engine was not ready within --startup-timeout=%gs (model download, load or warm-up "
            "hung or is too slow; see the vLLM lines above); exiting so that the process can be restarted",
            settings.startup_timeout,
        )
        end_process_now(1)
    finally:
        watch.cancel()
