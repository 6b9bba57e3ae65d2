"""`python -m server` / `rerank-server`: flags onto Settings, then serve until SIGTERM or engine death.

Every Settings field is a flag `--field-name` and an environment variable `RERANK_FIELD_NAME`;
flags win. The HTTP server answers /health at once; the engine loads beside it, scores a warm-up
request, logs `Engine started.` and turns /ready to 200; an engine not ready within
--startup-timeout seconds, or one whose engine-core or worker process goes away while it starts,
ends the process with exit 1. SIGTERM turns /ready to 503 and the
server keeps serving for --drain-delay seconds (answers then close their connection), then stops
accepting, lets in-flight requests finish (at most --drain-timeout seconds) and exits 0 (see
server/shutdown.py). An engine that dies makes the process exit 1 so that a restart policy
brings it back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import types
from typing import TYPE_CHECKING, Any, NoReturn, get_args, get_origin

import uvicorn
from pydantic import ValidationError

from server.settings import Settings

if TYPE_CHECKING:
    from server.engine import EngineClient
    from server.multiprocess import Cluster

logger = logging.getLogger("server")
WATCHDOG_INTERVAL_S = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve Qwen3-Reranker with vLLM behind POST /v1/rerank. "
        "Every flag is also an environment variable RERANK_<FLAG_NAME>.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        help_text = f"{field.description or ''} [env RERANK_{name.upper()}]"
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(annotation) is list:
            parser.add_argument(flag, action="append", default=None, help=help_text)
        else:
            choices = None
            literal = [a for a in get_args(annotation) if not isinstance(a, type | types.NoneType)]
            if get_origin(annotation) is not types.UnionType and literal:
                choices = literal
            parser.add_argument(flag, default=None, choices=choices, help=help_text)
    return parser


def settings_from_args(argv: list[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    return Settings.from_env(**overrides)


def end_process_now(code: int) -> NoReturn:
    """Exit at once, engine processes included: for a start-up that hangs in a thread that
    cannot be cancelled (a normal exit would wait for it)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    logging.shutdown()
    os._exit(code)


def engine_processes() -> tuple[dict[int, str], dict[int, str]]:
    """This process's vLLM engine-core processes (children titled `VLLM::...`) and their workers
    (their children titled `VLLM::...`): (running, exited but not yet reaped by their parent), each
    pid -> title. A process with its parent's title is a fork on the way to running some helper
    program (vLLM's CPU worker starts some), not an engine process: left out."""
    import psutil

    running, zombies = {}, {}

    def visit(proc: psutil.Process, depth: int, parent_title: str) -> None:
        with contextlib.suppress(psutil.Error):
            title = proc.name()
            if not title.startswith("VLLM::") or title == parent_title:
                return
            (zombies if proc.status() == psutil.STATUS_ZOMBIE else running)[proc.pid] = title
            if depth == 1:
                for child in proc.children():
                    visit(child, 2, title)

    for child in psutil.Process().children():
        visit(child, 1, "")
    return running, zombies


def end_if_engine_process_lost(seen: dict[int, str]) -> None:
    """One look during start-up: an engine-core or worker process in `seen` (the ones found so
    far, updated here) that is gone, or one exited and not reaped, ends the process at once."""
    running, zombies = engine_processes()
    gone = {**{pid: t for pid, t in seen.items() if pid not in running}, **zombies}
    for pid, title in gone.items():
        logger.error(
            "vLLM process %s (pid %d) exited while the engine was starting; exiting so that the process can be "
            "restarted (see the vLLM lines above; a process killed without a word is often the kernel's "
            "out-of-memory killer: check dmesg and --kv-cache-gib)",
            title,
            pid,
        )
        end_process_now(1)
    seen.update(running)


async def watch_engine_start() -> None:
    """Until cancelled (the engine is ready): end the process at once if an engine-core or worker
    process dies. vLLM usually notices this itself; where it does not (an engine core left waiting
    for a worker that no longer exists, which it has not reaped) the start would hang until
    --startup-timeout."""
    seen: dict[int, str] = {}
    while True:
        await asyncio.to_thread(end_if_engine_process_lost, seen)
        await asyncio.sleep(WATCHDOG_INTERVAL_S / 4)


async def serve(
    settings: Settings,
    client: EngineClient | None = None,
    sock: socket.socket | None = None,
    cluster: Cluster | None = None,
) -> int:
    """Run the HTTP server and the engine until shutdown; return the process exit code.

    Alone, this process starts the engine and binds --host/--port; as one of several API processes
    (server/multiprocess.py) it is a client of the supervisor's engine core on its shared socket.
    """
    from server.app import create_app
    from server.engine import open_engine
    from server.shutdown import DrainingServer

    app = create_app(settings, cluster)
    service = app.state.service
    server = DrainingServer(
        service,
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
    if not engine_task.done():
        engine_task.cancel()
        try:
            await engine_task
        except asyncio.CancelledError:
            pass
    logger.info("server stopped (exit code %d)", exit_code)
    return exit_code


def main(argv: list[str] | None = None) -> None:
    try:
        settings = settings_from_args(argv)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from server.log import setup_logging

    multiprocessing.current_process().name = "main"  # in every log line; see server/log.py
    setup_logging(settings.log_file, settings.log_level)
    logger.info("settings: %r", settings)  # SecretStr keeps API keys out of the log
    from server.engine import api_processes

    count = api_processes(settings)
    if count > 1:
        from server.multiprocess import run_supervisor

        raise SystemExit(run_supervisor(settings, count))
    # uvicorn re-raises the signal that stopped it once it has drained; handled here, a SIGTERM
    # ends the process with our exit code instead of the default "killed by signal".
    signal.signal(signal.SIGTERM, lambda *_: None)
    raise SystemExit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
