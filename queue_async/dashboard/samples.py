"""Throughput over the last hour, from samples the dashboard process keeps in memory.

The server keeps lifetime counters only (``QueueStats.processed``, ``failed``, ``retried``),
so a chart needs their values over time. They are sampled when a page or a live update reads
the queues (at most once per ``every`` seconds per queue), never in the background: nothing
runs while nobody looks, and minutes nobody watched show as gaps. Memory is bounded:
``keep / every`` samples per queue, for at most ``max_queues`` queues.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import queue_async as qa

__all__ = ["Minute", "Samples"]


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    processed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Minute:
    """One bar of the chart: jobs completed and tries failed in one minute, if watched."""

    start: float
    processed: int = 0
    failed: int = 0
    known: bool = False


class Samples:
    """A ring of (time, processed, failed tries) per queue."""

    def __init__(
        self,
        *,
        every: float = 10.0,
        keep: float = 3600.0,
        max_queues: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.every = every
        self.keep = keep
        self.max_queues = max_queues
        self.clock = clock
        self._rings: OrderedDict[str, deque[_Sample]] = OrderedDict()

    def record(self, stats: Iterable[qa.QueueStats]) -> None:
        now = self.clock()
        for one in stats:
            ring = self._rings.get(one.queue)
            if ring is None:
                ring = self._rings[one.queue] = deque(maxlen=int(self.keep / self.every) + 2)
                while len(self._rings) > self.max_queues:
                    self._rings.popitem(last=False)
            self._rings.move_to_end(one.queue)
            if ring and now - ring[-1].at < self.every:
                continue
            ring.append(_Sample(now, one.processed, one.failed + one.retried))

    def minutes(self, queue: str | None = None, *, count: int = 60) -> list[Minute]:
        """The last ``count`` minutes, oldest first, of one queue or of all of them."""
        now = self.clock()
        first = (now // 60 - count + 1) * 60
        processed = [0] * count
        failed = [0] * count
        known = [False] * count
        if queue is None:
            rings = list(self._rings.values())
        else:
            rings = [self._rings[queue]] if queue in self._rings else []
        for ring in rings:
            previous: _Sample | None = None
            for sample in ring:
                # A pair further apart than two minutes says little about either minute.
                if previous is not None and sample.at - previous.at <= 120:
                    slot = int((sample.at - first) // 60)
                    if 0 <= slot < count:
                        # A counter that went down (the queue's keys were deleted) is a restart.
                        processed[slot] += max(0, sample.processed - previous.processed)
                        failed[slot] += max(0, sample.failed - previous.failed)
                        known[slot] = True
                previous = sample
        return [Minute(first + 60 * i, processed[i], failed[i], known[i]) for i in range(count)]
