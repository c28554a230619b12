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

The callers of one call are answered in two halves, with the next call sent between them.
Answered all at once, they would all come back before the next call forms, and so would all
go out in it: one cohort, whose client work (encoding, answering) and server work never
overlap. The first half's new items go out while the second half is answered, so the server
works on one half while the client works on the other.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

# A call of fewer items answers them all at once: the halves would gain too little to pay
# for the task that sends the next call.
_SPLIT_AT = 32


def _one(_: object) -> int:
    return 1


class Coalescer(Generic[T, R]):
    """Batches the items of concurrent callers into server calls of bounded size.

    ``send`` takes the items of one call and returns one reply per item, in order; a reply
    that is an exception is raised to its caller alone. ``size`` weighs an item against
    ``max_size`` (by default each item weighs 1).
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
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

    def submit(self, item: T) -> asyncio.Future[R]:
        """Send one item with whatever else is waiting: a future of its own reply.

        Cancelling the future (as cancelling the task that awaits it does) takes the item
        out while it still waits; one already sent lands or not with its call.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not loop:
            # First call, a sender cancelled before it ran (its cleanup never ran either), or
            # a Queue reused on a new event loop: what waited on the old one can never be
            # answered there.
            self._waiting = deque(e for e in self._waiting if e[1].get_loop() is loop)
            self._sender = loop.create_task(self._send_all())
        return future

    async def call(self, item: T) -> R:
        """``submit`` and await the reply."""
        return await self.submit(item)

    async def _send_all(self) -> None:
        handed_over = False
        try:
            while True:
                batch = self._take()
                if not batch:
                    return
                replies = await self._send_batch(batch)
                if len(batch) < _SPLIT_AT:
                    _answer(batch, replies, 0, len(batch))
                    continue
                half = len(batch) // 2
                _answer(batch, replies, 0, half)
                # The next call starts after the first half's callers have run (the loop
                # runs callbacks in order), with what they sent; the second half is answered
                # while it is on its way.
                self._sender = asyncio.get_running_loop().create_task(self._send_all())
                handed_over = True
                _answer(batch, replies, half, len(batch))
                return
        finally:
            if not handed_over:
                self._sender = None
                for _, future in self._waiting:
                    if not future.done():
                        # The sender itself was cancelled (the loop is closing): nothing was
                        # sent.
                        future.cancel()
                self._waiting.clear()

    async def _send_batch(
        self, batch: list[tuple[T, asyncio.Future[R]]]
    ) -> Sequence[R | BaseException]:
        """One reply per item of the batch: each caller of a failed call gets its error."""
        try:
            replies = await self._send([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets its batch's error
            return [exc] * len(batch)
        if len(replies) != len(batch):
            error = RuntimeError(f"{len(replies)} replies came for {len(batch)} calls")
            return [error] * len(batch)
        return replies

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


def _answer(
    batch: Sequence[tuple[object, asyncio.Future[R]]],
    replies: Sequence[R | BaseException],
    start: int,
    stop: int,
) -> None:
    for index in range(start, stop):
        future = batch[index][1]
        if future.done():  # its caller was cancelled while the call was in flight
            continue
        reply = replies[index]
        if isinstance(reply, BaseException):
            future.set_exception(reply)
        else:
            future.set_result(reply)
