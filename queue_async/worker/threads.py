"""The threads that run a worker's sync (``def``) handlers.

Python cannot stop a thread. When a sync handler's try times out, or the worker stops, the
try ends at once (its slot is freed, the failure recorded or the job handed back) and the
thread is abandoned: it runs on until the handler returns. So that abandoned threads cannot
pile up or overlap:

- at most ``limit`` handler threads run tries at once, and at most ``limit`` more run on
  abandoned: an abandoned thread gives its place to the next sync job while fewer than
  ``limit`` are abandoned, else it keeps it until it ends (a sync job waits for a place,
  and its timeout counts the wait);
- a job never runs twice at once in one worker: a new try of a job whose abandoned thread
  still runs waits for that thread to end;
- the threads are daemon threads, so a process that is stopping does not wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("queue_async.worker")


class HandlerThreads:
    """Runs sync handlers in threads of their own; see the module docstring."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = asyncio.Semaphore(limit)
        self._adrift = 0
        """Abandoned threads that gave their place back (at most ``limit``)."""
        self._live: dict[str, asyncio.Future[None]] = {}
        """Job id -> done when its thread ends."""
        self.abandoned = 0
        """Threads whose try ended while they kept running."""

    @property
    def live(self) -> int:
        """Handler threads running now, abandoned ones included."""
        return len(self._live)

    async def run(self, job_id: str, call: Callable[[], Any]) -> Any:
        """Run ``call`` in a thread and return its result; cancelling this abandons it."""
        previous = self._live.get(job_id)
        if previous is not None:
            await asyncio.shield(previous)  # a timed-out try of this job still runs here
        await self._free.acquire()
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()
        self._live[job_id] = ended
        adrift = [False]  # set once the thread gave its place back

        def target() -> None:
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (call(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._ended, job_id, result, ended, outcome, adrift)

        thread = threading.Thread(target=target, name=f"queue_async job {job_id}", daemon=True)
        thread.start()
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            if not ended.done():
                self.abandoned += 1
                if self._adrift < self._limit:
                    self._adrift += 1
                    adrift[0] = True
                    self._free.release()
                logger.warning(
                    "job %s: its sync handler's thread keeps running after the try ended "
                    "(Python cannot stop a thread); its next try in this worker waits for it",
                    job_id,
                )
            raise

    def _ended(
        self,
        job_id: str,
        result: asyncio.Future[Any],
        ended: asyncio.Future[None],
        outcome: tuple[Any, BaseException | None],
        adrift: list[bool],
    ) -> None:
        value, error = outcome
        if not result.done():
            if error is None:
                result.set_result(value)
            else:
                result.set_exception(error)
        elif error is not None:
            logger.debug("job %s: an abandoned handler thread ended with %r", job_id, error)
        ended.set_result(None)
        if self._live.get(job_id) is ended:
            del self._live[job_id]
        if adrift[0]:
            self._adrift -= 1
        else:
            self._free.release()
