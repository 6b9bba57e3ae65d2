"""What the API processes of one server share (the bottom floor: imports nothing of server/).

With `--api-processes N` the supervisor (server/processes/supervisor.py) makes one `Cluster` before it
starts the processes; its shared memory travels to each of them as a process argument. With one
process there is no Cluster and `PairBudget` counts locally.
"""

from __future__ import annotations

import multiprocessing
from enum import IntEnum
from typing import Any


class ProcessState(IntEnum):
    """Where one API process stands (LitServe's worker status, for our processes)."""

    STARTING = 0  # loading, or warming up
    WARMED_UP = 1  # scored its warm-up; waits for the others and the supervisor's `Engine started.`
    READY = 2  # the supervisor logged `Engine started.`: /ready answers 200


class Cluster:
    """Each API process's state and the server-wide count of pairs in the engine."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.index = -1  # this API process's number, set in each of them
        self._states = ctx.RawArray("b", count)  # a ProcessState per process
        self.pairs = ctx.Value("q", 0)  # pairs in the engine, all processes together
        self.bulk_pairs = ctx.Value("q", 0, lock=False)  # of those, bulk requests' (guarded by pairs' lock)

    def state(self, index: int) -> ProcessState:
        return ProcessState(self._states[index])

    def mark_warmed_up(self) -> None:
        """This API process has scored its warm-up."""
        self._states[self.index] = ProcessState.WARMED_UP

    def all_warmed_up(self) -> bool:
        return all(state >= ProcessState.WARMED_UP for state in self._states)

    def mark_all_ready(self) -> None:
        """The supervisor, once every process has warmed up and `Engine started.` is in the log."""
        for i in range(len(self._states)):
            self._states[i] = ProcessState.READY

    def all_ready(self) -> bool:
        """What each process's /ready waits for: every process READY."""
        return all(state == ProcessState.READY for state in self._states)


class PairBudget:
    """--max-pairs-in-flight for the whole server: pairs in the engine, counted here, or with
    several API processes in counters in shared memory that all of them take from.

    Two lanes share it: bulk requests (priority above 0) take at most `limit - reserve` pairs, so
    the last `reserve` pairs are always there for interactive ones, however bulk floods; an
    interactive request takes from the whole budget."""

    def __init__(self, limit: int, reserve: int = 0, shared: Any = None, shared_bulk: Any = None) -> None:
        self.limit = limit
        self.bulk_limit = limit - reserve
        self._shared = shared  # Cluster.pairs (a multiprocessing Value("q")), or None
        self._shared_bulk = shared_bulk  # Cluster.bulk_pairs, updated under Cluster.pairs' lock
        self._local = 0
        self._local_bulk = 0

    @property
    def in_flight(self) -> int:
        return self._shared.value if self._shared is not None else self._local

    @property
    def bulk_in_flight(self) -> int:
        return self._shared_bulk.value if self._shared_bulk is not None else self._local_bulk

    def try_take(self, n: int, bulk: bool = False) -> bool:
        if self._shared is None:
            if not self._fits(self._local, self._local_bulk, n, bulk):
                return False
            self._local += n
            self._local_bulk += n if bulk else 0
            return True
        with self._shared.get_lock():
            if not self._fits(self._shared.value, self._shared_bulk.value, n, bulk):
                return False
            self._shared.value += n
            if bulk:
                self._shared_bulk.value += n
            return True

    def _fits(self, in_flight: int, bulk_in_flight: int, n: int, bulk: bool) -> bool:
        return in_flight + n <= self.limit and (not bulk or bulk_in_flight + n <= self.bulk_limit)

    def give_back(self, n: int, bulk: bool = False) -> None:
        if self._shared is None:
            self._local -= n
            self._local_bulk -= n if bulk else 0
            return
        with self._shared.get_lock():
            self._shared.value -= n
            if bulk:
                self._shared_bulk.value -= n
