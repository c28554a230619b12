"""Finds a handler that blocks the event loop, and names it, before its lease can expire.

An ``async def`` handler that calls ``time.sleep`` or heavy CPU work stops the whole worker:
no heartbeat goes out, leases expire, and the job runs again elsewhere while this worker is
stuck. Nothing in the loop can see that (it is the loop that is stuck), so a thread watches a
timestamp that the loop refreshes a few times a second, and logs which job was running when
the loop stopped refreshing it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("queue_async.worker")

_TICK = 0.1
"""How often the loop refreshes its timestamp (seconds)."""


class LoopMonitor:
    """Warns when the event loop has not run for ``threshold`` seconds.

    ``describe`` is called from the monitor's thread with the task the loop was running
    (or None); it names the job, e.g. ``"job abc (myapp.resize)"``.
    """

    def __init__(
        self, threshold: float, describe: Callable[[asyncio.Task[object] | None], str]
    ) -> None:
        self.threshold = threshold
        self.describe = describe
        self.blocked = 0
        """How many times the loop was found blocked."""
        self._last = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last = time.monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="queue_async loop monitor")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.threshold:
            logger.warning("the event loop ran again after %.1f s blocked", now - self._last)
        self._last = now
        assert self._loop is not None
        self._handle = self._loop.call_later(_TICK, self._tick)

    def _watch(self) -> None:
        reported_at: float | None = None  # the loop's timestamp when its block was reported
        while not self._stop.wait(min(0.25, self.threshold / 4)):
            last = self._last
            stalled = time.monotonic() - last
            if stalled < self.threshold:
                continue
            if reported_at == last:
                continue  # this block is reported already
            reported_at = last
            self.blocked += 1
            loop = self._loop
            # Read from another thread: the loop is stuck inside this task, so it holds still.
            task = asyncio.current_task(loop) if loop is not None else None
            logger.error(
                "the event loop was blocked for %.1f s while running %s: its leases cannot "
                "be extended while it is. Blocking calls (time.sleep, CPU-heavy work, "
                "synchronous I/O) belong in a sync handler (def, run in a thread) or in "
                "anyio.to_thread.run_sync",
                stalled,
                self.describe(task),
            )
