"""Concurrent single calls of one process travel together.

A web app enqueues one job per request, and awaits one result per request, from many
requests at once; one round trip per call makes round trips the limit. Here a call goes out
at once when nothing is in flight; the calls that arrive while one is in flight wait, and go
out together as one server call right after it (no timer: a lone caller waits for nothing).
Each caller gets its own reply; a failed call fails only the callers whose items it carried.

Items are prepared (encoded) by their callers before they get here, so an encoding error
stays with its caller. A caller cancelled while its item still waits takes the item out (it
is never sent); one cancelled after its item went out leaves it to land or not with the rest
of that call, as a lone call cut off in flight would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


def _one(_: object) -> int:
    return 1


class Coalescer(Generic[T, R]):
    """Batches the items of concurrent callers into server calls of bounded size.

    ``send`` takes the items of one call and returns one reply per item, in order. ``size``
    weighs an item against ``max_size`` (by default each item weighs 1).
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_items: int,
        max_size: int | None = None,
        size: Callable[[T], int] = _one,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_size = max_size if max_size is not None else max_items
        self._size = size
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def call(self, item: T) -> R:
        """Send one item with whatever else is waiting; its own reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        entry = (item, future)
        self._waiting.append(entry)
        if self._sender is None or self._sender.get_loop() is not loop:
            # First call, or a Queue reused on a new event loop: what waited on the old one
            # can never be answered there.
            self._waiting = deque(e for e in self._waiting if e[1].get_loop() is loop)
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
                    replies = await self._send([item for item, _ in batch])
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

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        """The waiting items that fit one call (at least one, at most max_items and
        max_size), less those whose callers were cancelled meanwhile."""
        batch: list[tuple[T, asyncio.Future[R]]] = []
        total = 0
        waiting = self._waiting
        while waiting and len(batch) < self._max_items:
            item, future = waiting[0]
            if future.done():
                waiting.popleft()
                continue
            weight = self._size(item)
            if batch and total + weight > self._max_size:
                break
            batch.append(waiting.popleft())
            total += weight
        return batch
