"""Several API processes on one engine (`--api-processes N`), with vLLM's own machinery.

The supervisor (this process) binds the HTTP socket and vLLM's engine ZMQ listeners, starts the
engine core once (`launch_core_engines`) and N API processes (`APIServerProcessManager`); each
API process builds the whole app around an `AsyncLLM` client of that engine core and serves on
the shared socket, where the kernel hands each connection to one of them.

The supervisor:
- logs `Engine started.` once, when the engine is up and every API process has scored its
  warm-up (each process's /ready is 200 only from then on);
- forwards SIGTERM/SIGINT to every API process (each drains as a single server does), then
  stops the engine and exits 0;
- ends everything and exits 1 when an API process or the engine core exits on its own (a
  restart policy brings the server back whole; no half-working server is left).

Shared between the processes (server/core/cluster.py): each process's state (starting, warmed up, ready),
one counter of pairs in the engine (so --max-pairs-in-flight holds for the server as a whole); and
prometheus-client's multiprocess directory (one /metrics scrape, on any process, shows them all).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from server.core.cluster import Cluster
from server.core.log import engine_started, setup_logging
from server.core.settings import Settings
from server.engine.engine_args import engine_args, set_cpu_threads_bind
from server.engine.model_kind import model_info
from server.engine.vllm_engine import EngineClient
from server.processes.engine_processes import end_if_engine_process_lost, end_process_now
from server.processes.process import run_on_uvloop, serve

logger = logging.getLogger("server")
POLL_S = 0.5


@dataclass
class ApiProcessArgs:
    """What each API process gets besides vLLM's client addresses."""

    settings: Settings
    cluster: Cluster


def set_process_title(title: str) -> None:
    """`ps` shows `rerank::api-0` etc.; vLLM titles its own processes `VLLM::...`."""
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(f"rerank::{title}")


def api_process_main(listen_address: str, sock: socket.socket, args: ApiProcessArgs, client_config: dict) -> None:
    """One API process (vLLM's APIServerProcessManager starts it): the whole app on the shared
    socket, around an AsyncLLM client of the supervisor's engine core."""
    config = dict(client_config)
    index, count = config.pop("client_index"), config.pop("client_count")
    multiprocessing.current_process().name = f"api-{index}"
    set_process_title(f"api-{index}")
    setup_logging(args.settings.log_file, args.settings.log_level, args.settings.log_format)
    args.cluster.index = index
    logger.info("API process %d of %d serving on %s (pid %d)", index, count, listen_address, os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: None)  # as in main(): uvicorn's handler takes over
    code = run_on_uvloop(
        serve(args.settings, client=EngineClient(index, count, config), sock=sock, cluster=args.cluster)
    )
    raise SystemExit(code)


class Supervisor:
    """Starts the engine core and the API processes, watches them, and ends them together."""

    def __init__(self, settings: Settings, count: int, sock: socket.socket) -> None:
        self.settings = settings
        self.count = count
        self.sock = sock  # the HTTP socket, bound by server/cli.py before anything started
        self.cluster = Cluster(count)
        self.signals: list[int] = []
        self.starting = True
        self.api: list[Any] = []
        self.engine_manager: Any = None
        self.coordinator: Any = None

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        for proc in self.api:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(proc.pid, sig)  # each API process drains as a single server does
        if self.starting:
            logger.info("signal %d during start-up: stopping", sig)
            raise SystemExit(0)
        if len(self.signals) == 1:
            logger.info("signal %d: draining %d API processes, then stopping the engine", sig, self.count)

    def watch_start(self) -> None:
        """Until every API process is ready: a lost engine-core or worker process, or a start past
        --startup-timeout, ends the whole server with exit 1 at once (server/processes/process.py does the
        same for one process)."""
        deadline = time.monotonic() + self.settings.startup_timeout
        seen: dict[int, str] = {}
        while not self.cluster.all_warmed_up() and not self.signals:
            end_if_engine_process_lost(seen)
            if time.monotonic() > deadline:
                logger.error(
                    "the server was not ready within --startup-timeout=%gs (see the lines above); exiting",
                    self.settings.startup_timeout,
                )
                end_process_now(1)
            time.sleep(POLL_S / 2)

    def run(self) -> int:
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
        from vllm.v1.executor import Executor
        from vllm.v1.utils import APIServerProcessManager

        settings = self.settings
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        metrics_dir = tempfile.TemporaryDirectory(prefix="rerank-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name  # inherited by the API processes
        sock = self.sock
        listen_address = f"http://{settings.host}:{settings.port}"
        set_cpu_threads_bind(settings)
        [served] = settings.served_models()  # several models run one API process (engine_args.check_several_models)
        args = engine_args(settings, served, model_info(served))
        args._api_process_count, args._api_process_rank = self.count, -1
        vllm_config = args.create_engine_config(UsageContext.OPENAI_API_SERVER)
        listeners = bind_engine_zmq_listeners(vllm_config, self.count)
        threading.Thread(target=self.watch_start, name="start-watchdog", daemon=True).start()
        logger.info("starting the vLLM engine core and %d API processes on %s", self.count, listen_address)
        manager = None
        try:
            with launch_core_engines(
                vllm_config, Executor.get_class(vllm_config), not args.disable_log_stats, listeners.addresses
            ) as launch:
                self.engine_manager, self.coordinator = launch.engine_manager, launch.coordinator
                manager = APIServerProcessManager(
                    listen_address=listen_address,
                    sock=sock,
                    args=ApiProcessArgs(settings, self.cluster),  # type: ignore[arg-type]  # vLLM only hands it on
                    num_servers=self.count,
                    input_listeners=listeners.inputs,
                    output_listeners=listeners.outputs,
                    target_server_fn=api_process_main,
                    stats_update_address=self.coordinator.get_stats_publish_address() if self.coordinator else None,
                    tensor_queue=launch.tensor_queue,
                )
                self.api = manager.processes
                sock.close()  # the API processes hold it now: once all of them close it, the port closes
                launch.watched_frontend_processes = manager.processes
            self.starting = False
            return self.watch()
        except SystemExit as exc:
            return int(exc.code or 0)
        except Exception:
            logger.exception("the server failed to start")
            return 1
        finally:
            self.starting = False
            if manager is not None:
                manager.shutdown(timeout=5)
            if self.engine_manager is not None:
                self.engine_manager.shutdown()
            if self.coordinator is not None:
                self.coordinator.shutdown()
            metrics_dir.cleanup()
            logger.info("server stopped")

    def watch(self) -> int:
        """Until the server stops: the exit code."""
        engine = list(self.engine_manager.processes)
        announced = False
        drain_bound = self.settings.drain_delay + self.settings.drain_timeout + 30
        stop_by: float | None = None
        while True:
            live = [p.sentinel for p in self.api if p.exitcode is None]
            wait(live + [p.sentinel for p in engine], timeout=POLL_S)
            if dead_engine := [p for p in engine if p.exitcode is not None]:
                logger.error(
                    "the vLLM engine core %s exited (code %s); ending the server so that it can be restarted",
                    dead_engine[0].name,
                    dead_engine[0].exitcode,
                )
                return 1
            exited = [(i, p) for i, p in enumerate(self.api) if p.exitcode is not None]
            if exited and not self.signals:
                index, proc = exited[0]
                logger.error(
                    "API process api-%d (pid %d) exited (code %s); ending the server so that it can be restarted whole",
                    index,
                    proc.pid,
                    proc.exitcode,
                )
                return 1
            if self.signals:
                stop_by = stop_by or time.monotonic() + drain_bound
                if len(exited) == len(self.api):
                    codes = [p.exitcode for p in self.api]
                    return 0 if all(c == 0 for c in codes) else 1
                if time.monotonic() > stop_by:
                    logger.error("API processes still running %gs after the signal; stopping them", drain_bound)
                    return 1
            if not announced and self.cluster.all_warmed_up():
                announced = True
                logger.info(engine_started(self.settings.served_model_name, self.count))
                self.cluster.mark_all_ready()  # /ready turns 200 after the line, as with one process


def run_supervisor(settings: Settings, count: int, sock: socket.socket) -> int:
    multiprocessing.current_process().name = "supervisor"
    return Supervisor(settings, count, sock).run()
