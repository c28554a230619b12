"""Capped exponential waits between tries to reach Redis again."""

from __future__ import annotations

import logging

import anyio

from queue_async.exceptions import BrokerConnectionError

logger = logging.getLogger("queue_async.worker")

_outages = 0


def outages() -> int:
    """How many times this process lost Redis (or was refused) and began backing off."""
    return _outages


class Backoff:
    """Waits 50 ms, 100 ms, 200 ms... up to ``cap`` seconds; logs the outage once."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.05
        self.failing = False

    def reset(self) -> None:
        if self.failing:
            logger.info("Redis is reachable again")
        self.delay = 0.05
        self.failing = False

    async def wait(self, exc: BaseException) -> None:
        global _outages  # noqa: PLW0603 - one count per process, read by the metrics
        if not self.failing:
            _outages += 1
            # A refusal's message already says what Redis refused and what to do.
            what = "unreachable" if isinstance(exc, BrokerConnectionError) else "refused a call"
            logger.warning("Redis %s (%s); retrying with backoff up to %ss", what, exc, self.cap)
        self.failing = True
        await anyio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)
