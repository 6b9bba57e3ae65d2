"""One serving process's lifetime: the HTTP server, the engine's lifetime, the start-up deadline
and the start-up watchdog. The single-process server (server/cli.py) and each API process of a
supervisor (server/supervisor.py) run `serve` alike.

The HTTP server answers /health at once; the engine loads beside it, scores a warm-up request,
logs `Engine started.` and turns /ready to 200. An engine not ready within --startup-timeout
seconds, or one whose engine-core or worker process goes away while it starts, ends the process
with exit 1. SIGTERM drains (server/shutdown.py) and the process exits 0; an engine that dies
makes it exit 1 so that a restart policy brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from server.app import create_app
from server.cluster import Cluster
from server.engine import EngineClient, open_engine
from server.engine_processes import WATCHDOG_INTERVAL_S, end_process_now, watch_engine_start
from server.settings import Settings
from server.shutdown import DrainingServer

logger = logging.getLogger("server")
LISTEN_BACKLOG = 2048


def bind_socket(settings: Settings) -> socket.socket:
    """The HTTP listening socket, bound before anything else starts, so that a taken port fails in
    a second rather than after the model has loaded. Raises OSError (e.g. address in use)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(
    settings: Settings,
    client: EngineClient | None = None,
    sock: socket.socket | None = None,
    cluster: Cluster | None = None,
) -> int:
    """Run the HTTP server and the engine until shutdown; return the process exit code.

    Alone, this process starts the engine (and binds --host/--port unless given `sock`); as one of
    several API processes it is a client of the supervisor's engine core on its shared socket.
    """
    app = create_app(settings, cluster)
    service = app.state.service
    server = DrainingServer(
        service.start_draining,
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
    exit_code = 0

    async def engine_lifetime() -> None:
        nonlocal exit_code
        try:
            async with contextlib.AsyncExitStack() as stack:
                watch = asyncio.create_task(watch_engine_start())
                try:
                    async with asyncio.timeout(settings.startup_timeout):
                        engine = await stack.enter_async_context(open_engine(settings, client))
                        await service.start(engine)
                except TimeoutError:
                    logger.error(
                        "the engine was not ready within --startup-timeout=%gs (model download, load or warm-up "
                        "hung or is too slow; see the vLLM lines above); exiting so that the process can be restarted",
                        settings.startup_timeout,
                    )
                    end_process_now(1)
                finally:
                    watch.cancel()
                while not engine.is_dead:
                    await asyncio.sleep(WATCHDOG_INTERVAL_S)
                service.mark_dead()
                logger.error("the vLLM engine died; exiting so that the process can be restarted")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the vLLM engine failed")
            service.mark_dead()
        exit_code = 1
        server.should_exit = True

    engine_task = asyncio.create_task(engine_lifetime())
    await server.serve(sockets=[sock] if sock is not None else None)
    await service.close()
    await asyncio.to_thread(app.state.tracing.shutdown)  # the last spans (bounded, if a collector is gone)
    if not engine_task.done():
        engine_task.cancel()
        try:
            await engine_task
        except asyncio.CancelledError:
            pass
    logger.info("server stopped (exit code %d)", exit_code)
    return exit_code
