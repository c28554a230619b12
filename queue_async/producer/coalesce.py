"""Concurrent single enqueues of one process travel together.

A web app enqueues one job per request, from many requests at once; one script call per job
makes round trips the limit. Here a call goes out at once when nothing is in flight; the
calls that arrive while one is in flight wait, and go out together as one script call right
after it (no timer: a lone caller waits for nothing). Each caller gets its own reply; a
failed call fails only the callers whose jobs it carried.

Jobs are encoded by their callers before they get here, so an encoding error stays with its
caller. A caller cancelled while its job still waits takes the job out (it is never sent); one
cancelled after its job went out leaves it to land or not with the rest of that call, as a
lone call cut off in flight would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["Coalescer"]

Send = Callable[[bytes], Awaitable[list[int | bytes]]]
"""Sends packed jobs in one script call; one reply per job (see enqueue.lua)."""


class Coalescer:
    """Batches the packed jobs of concurrent callers into script calls of bounded size."""

    def __init__(self, send: Send, *, max_jobs: int, max_bytes: int) -> None:
        self._send = send
        self._max_jobs = max_jobs
        self._max_bytes = max_bytes
        self._waiting: deque[tuple[bytes, asyncio.Future[int | bytes]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def enqueue(self, packed: bytes) -> int | bytes:
        """Send one packed job with whatever else is waiting; its reply from enqueue.lua."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | bytes] = loop.create_future()
        entry = (packed, future)
        self._waiting.append(entry)
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        try:
            return await future
        except asyncio.CancelledError:
            # (Cancelling the caller cancels its future too.) Still waiting: taken out, never
            # sent. Already taken into a call in flight (not in the deque): it lands or not
            # with that call.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            raise

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                if not batch:
                    break
                try:
                    replies = await self._send(b"".join(packed for packed, _ in batch))
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - each caller gets its batch's error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
        finally:
            self._sender = None
            for _, future in self._waiting:
                if not future.done():
                    # The sender itself was cancelled (the loop is closing): nothing was sent.
                    future.cancel()
            self._waiting.clear()

    def _take(self) -> list[tuple[bytes, asyncio.Future[int | bytes]]]:
        """The waiting jobs that fit one call (at least one, at most max_jobs / max_bytes),
        less those whose callers were cancelled meanwhile."""
        batch: list[tuple[bytes, asyncio.Future[int | bytes]]] = []
        size = 0
        waiting = self._waiting
        while waiting and len(batch) < self._max_jobs:
            packed, future = waiting[0]
            if future.done():
                waiting.popleft()
                continue
            if batch and size + len(packed) > self._max_bytes:
                break
            batch.append(waiting.popleft())
            size += len(packed)
        return batch
