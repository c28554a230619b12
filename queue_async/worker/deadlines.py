"""Job timeouts in a worker: one event-loop timer per tenth of a second, not one per job.

A worker starts tens of thousands of jobs a second, nearly all under the default timeout of
five minutes and nearly all done long before it. A timer per job costs a heap entry made and
cancelled per job (see benchmarks/NOTES.md for what it cost). Jobs whose deadline falls in the
same tick share one timer instead; their timeouts fire up to one tick late, which only
matters for short timeouts, and those keep a timer of their own.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

TICK_S = 0.1
"""Deadlines are rounded up to the next multiple of this (event-loop time)."""

SHARED_FROM_S = 2.0
"""Timeouts at least this long share their tick's timer (at most 5 % late); shorter ones
get a timer of their own."""


class Timed(Protocol):
    """What a deadline needs of a running job."""

    timer: asyncio.TimerHandle | None
    tick: int | None

    def time_out(self) -> None: ...


class Deadlines:
    """The timeouts of the jobs running in one worker."""

    def __init__(self, tick_s: float = TICK_S, shared_from_s: float = SHARED_FROM_S) -> None:
        self.tick_s = tick_s
        self.shared_from_s = shared_from_s
        self._ticks: dict[int, set[Timed]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, job: Timed, timeout_s: float) -> float:
        """Call ``job.time_out()`` once ``timeout_s`` has passed; returns the deadline."""
        due = loop.time() + timeout_s
        if timeout_s < self.shared_from_s:
            job.timer = loop.call_at(due, job.time_out)
            return due
        tick = math.ceil(due / self.tick_s)
        jobs = self._ticks.get(tick)
        if jobs is None:
            jobs = self._ticks[tick] = set()
            loop.call_at(tick * self.tick_s, self._fire, tick)
        jobs.add(job)
        job.tick = tick
        return tick * self.tick_s

    def remove(self, job: Timed) -> None:
        """The job ended: its timeout no longer applies."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        elif job.tick is not None:
            jobs = self._ticks.get(job.tick)
            if jobs is not None:
                jobs.discard(job)
            job.tick = None

    def _fire(self, tick: int) -> None:
        for job in self._ticks.pop(tick, ()):
            job.tick = None
            job.time_out()

    def __len__(self) -> int:
        """How many jobs wait for a shared tick (for tests)."""
        return sum(len(jobs) for jobs in self._ticks.values())
