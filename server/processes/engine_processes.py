"""vLLM's engine-core and worker processes seen from the process that started them, and ending
everything at once when one of them is lost during start-up (used by server/processes/process.py for one
process and by server/processes/supervisor.py for several)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import NoReturn

logger = logging.getLogger("server")
WATCHDOG_INTERVAL_S = 1.0


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

    running: dict[int, str] = {}
    zombies: dict[int, str] = {}

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
