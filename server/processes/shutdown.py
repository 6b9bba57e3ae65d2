"""Graceful shutdown: uvicorn's server with a readiness drain in front of its own.

On the first SIGTERM (or SIGINT) the service starts draining: /ready answers 503 at once, so that
load balancers and Kubernetes endpoints take the server out, while it keeps accepting and
answering requests for `drain_delay` seconds; every answer meanwhile says `Connection: close`, so
that keep-alive connections move elsewhere. Then uvicorn's own graceful shutdown runs: it stops
accepting, lets in-flight requests finish (at most --drain-timeout seconds) and returns. A second
signal skips the rest of the delay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

logger = logging.getLogger("server")


class DrainingServer(uvicorn.Server):
    def __init__(self, start_draining: Callable[[], None], drain_delay: float, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.start_draining = start_draining  # turns /ready to 503 (ServedModels.start_draining)
        self.drain_delay = drain_delay
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.start_draining()
        if self.drain_until is not None or self.should_exit or self.drain_delay == 0:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # as uvicorn does: re-raised once it has shut down
        self.drain_until = time.monotonic() + self.drain_delay
        logger.info(
            "signal %d: /ready is now 503; still serving for %gs (--drain-delay), then finishing in-flight "
            "requests (at most %ds, --drain-timeout) and exiting",
            sig,
            self.drain_delay,
            self.config.timeout_graceful_shutdown or 0,
        )

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)
