"""One pub/sub subscription per ``Queue`` that wakes every ``result()`` waiter of the process.

A job that someone awaits is flagged by watch.lua; the script that finishes it announces it
on the queue's ``ended`` channel: one message per script call, with every awaited job it
finished and, for a job done with a short result, the result itself (see
lua/includes/final.lua), so that most waiters need no read. This module keeps one connection
subscribed to that channel, in a background task started by the first waiter, and wakes the
waiters of each job it hears of. A thousand waiters cost one server connection, not a
thousand.

A message published while the subscription was down is lost, so after every (re)subscription
(ours, or one redis-py makes by itself after a dropped connection) each waiter reads its
job's state again (``Waiter.wait`` returns ``False``): no end slips by.
A waiter also reads its job again after ``RECHECK_AFTER`` seconds without news: workers of an
earlier version (in a rolling upgrade) finish jobs without announcing them here.
A connection that stops answering is found by a PING every few seconds of silence.

Once this process waits for results, the jobs it enqueues are flagged as awaited by the
enqueue call itself (``flag``): a ``result()`` on such a handle then needs no watch call of
its own, because every end announced since that enqueue reached this subscription. An end
heard before anyone awaits its job is kept for a while (``_EARLY_FOR``, ``_EARLY_MAX``), for
the ``result()`` that usually follows. This holds only while the subscription that was up
when the enqueue went out still is: when it drops, the flags are forgotten, and each wait
watches its job as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from queue_async.broker.broker import Outcome
from queue_async.broker.errors import CONNECTION_ERRORS
from queue_async.broker.wire import ENDED_FIELDS, as_text, unpack_fields
from queue_async.exceptions import BrokerConnectionError, JobTimeout, QueueAsyncError
from queue_async.models import FINAL_STATES

if TYPE_CHECKING:
    from queue_async.broker.connections import Client, Connections

logger = logging.getLogger("queue_async.results")

# Seconds of silence on the subscription before a PING checks that it is alive; a PING not
# answered within as long again counts as a dead connection.
_PING_AFTER = 5.0
_RECONNECT_MAX = 2.0
# Seconds a waiter waits for an announcement before it reads its job's state again anyway:
# the end of a job that workers of an earlier version finish (during a rolling upgrade) is
# not announced on ``ended``, and no end must wait longer than this to be seen.
RECHECK_AFTER = 10.0
_ENDED_WIDTH = len(ENDED_FIELDS)
# Seconds after the last result() call during which new jobs are still flagged as awaited at
# enqueue: a process that stopped waiting for results stops paying for the announcements.
_PREWATCH_FOR = 60.0
# Bounds on the jobs flagged at enqueue and not yet awaited, and on the ends heard before
# their result() call: past them, waits watch their jobs as before.
_PREWATCH_MAX = 100_000
_EARLY_MAX = 10_000
# Seconds an end heard before its result() call is kept for it.
_EARLY_FOR = 60.0
_ABSENT: Any = object()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    """One ``result()`` call waiting for its job's end.

    A bare future per wait and a timer of the loop's for its deadline: this runs once per
    ``result()`` call, where an ``asyncio.Event`` and ``asyncio.timeout_at`` were measured
    costlier."""

    __slots__ = ("_future", "_woken", "done", "job_id", "outcome")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.done = False
        self.outcome: Outcome | None = None
        """The job's outcome, when the announcement carried it."""
        self._woken = False
        self._future: asyncio.Future[None] | None = None

    def wake(self, *, done: bool, outcome: Outcome | None = None) -> None:
        self.done = self.done or done
        self.outcome = self.outcome or outcome
        self._woken = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, deadline: float | None = None) -> bool:
        """Until woken, or until ``deadline`` (the loop's time) passes: True if the job's end
        was announced, False if its state must be read again (the subscription was renewed,
        or time is up)."""
        if not self._woken:
            loop = asyncio.get_running_loop()
            future = self._future = loop.create_future()
            timer = None if deadline is None else loop.call_at(deadline, _expire, future)
            try:
                await future
            finally:
                self._future = None
                if timer is not None:
                    timer.cancel()
        self._woken = False
        return self.done


class ResultWaiters:
    """The shared subscription of one queue and the waiters it serves."""

    def __init__(self, connections: Connections, channels: str | list[str]) -> None:
        """``channels``: the ``ended`` channel of the queue, or of each shard of a sharded
        queue (one subscription hears them all)."""
        self._connections = connections
        names = [channels] if isinstance(channels, str) else channels
        self._channels = [name.encode() for name in names]
        self._waiting: dict[str, set[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None
        self._failures = 0
        self._news = asyncio.Event()
        """Set (and replaced) whenever the subscription is made or an attempt fails."""
        self._last_wait = -_PREWATCH_FOR
        self._prewatched: dict[str, None] = {}
        """Jobs of this process flagged as awaited at enqueue, while the subscription that was
        up then still is, and not yet awaited nor heard of."""
        self._early: dict[str, tuple[float, Outcome | None]] = {}
        """Ends heard of jobs in ``_prewatched`` before anyone awaited them (when, and the
        outcome if carried), oldest first."""

    @property
    def waiting(self) -> int:
        """How many ``result()`` calls wait now."""
        return sum(len(waiters) for waiters in self._waiting.values())

    def flag(self, job_ids: list[str]) -> bool:
        """Before an enqueue of these ids (made by the producer, so never enqueued before)
        is sent: True if it should flag its new jobs as awaited (then they are counted as
        flagged here until ``unflag``, their end or a drop of the subscription). Counted
        before the call goes out: an end can be heard before the call's reply is read."""
        if not self._ready.is_set() or len(self._prewatched) >= _PREWATCH_MAX:
            return False
        loop = asyncio.get_running_loop()
        if self._loop is not loop or loop.time() - self._last_wait > _PREWATCH_FOR:
            return False
        self._prewatched.update(dict.fromkeys(job_ids))
        return True

    def unflag(self, job_ids: list[str]) -> None:
        """Jobs of a flagging enqueue that it did not add (their ids existed, or the call
        failed): their waits watch them."""
        for job_id in job_ids:
            self._prewatched.pop(job_id, None)

    async def wait_finished(
        self,
        watch: Callable[[str], Awaitable[str | None]],
        job_id: str,
        seconds: float | None,
        *,
        flagged: bool = False,
    ) -> tuple[bool, Outcome | None]:
        """Wait for the job's end: (True, its outcome if the announcement carried it, else
        None) once it is in a final state; (False, None) if there is no such job (or it
        ended and was not kept). ``JobTimeout`` once ``seconds`` pass.

        ``watch`` flags the job as awaited and returns its state (watch.lua). ``flagged``:
        the handle came from an enqueue of this process that flagged its job (see ``flag``);
        only such a handle takes an end heard early, or skips the watch call: the end of a
        job id is that job's only while nobody enqueued the id again."""
        loop = asyncio.get_running_loop()
        now = self._last_wait = loop.time()
        deadline = None if seconds is None else now + seconds
        if flagged:
            early = self._early.pop(job_id, None)
            if early is not None and now - early[0] < _EARLY_FOR:
                return True, early[1]
            # Still flagged under the subscription that is up: its end, whenever it comes,
            # reaches this waiter.
            flagged = self._prewatched.pop(job_id, _ABSENT) is not _ABSENT and self._loop is loop
        # Registered before the subscription is confirmed, and the job flagged as awaited
        # (watch) only after, so that an end announced from then on cannot be missed.
        waiter = Waiter(job_id)
        waiters = self._waiting.get(job_id)
        if waiters is None:
            waiters = self._waiting[job_id] = set()
        waiters.add(waiter)
        try:
            state: str | None
            if flagged:
                state = "ready"  # not read: the announcement tells of its end
            else:
                if not (self._loop is loop and self._ready.is_set()):
                    await self._subscribed()
                state = await watch(job_id)
            read = not flagged
            while state is not None and state not in FINAL_STATES:
                if deadline is not None and loop.time() >= deadline:
                    if not read:  # out of time before any word: the state, read once
                        read = True
                        state = await watch(job_id)
                        continue
                    raise JobTimeout(
                        f"job {job_id} did not finish within {seconds} seconds", job_id=job_id
                    )
                recheck = loop.time() + RECHECK_AFTER
                if await waiter.wait(recheck if deadline is None else min(deadline, recheck)):
                    return True, waiter.outcome
                # The subscription was renewed (an end may have been missed), or time is up.
                state = await watch(job_id)
                read = True
            return state is not None, None
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiting.get(job_id) is waiters:
                del self._waiting[job_id]

    async def _subscribed(self) -> None:
        loop = asyncio.get_running_loop()
        if self._ready.is_set() and self._loop is loop:
            return
        if self._task is None or self._task.done() or self._loop is not loop:
            # First use, or a Queue reused on a new event loop (e.g. one per test).
            self._loop = loop
            self._ready = asyncio.Event()
            self._news = asyncio.Event()
            self._failure = None
            self._task = loop.create_task(
                self._run(), name=f"queue_async results {self._channels[0]!r}"
            )
        # Wait for the subscription, unless the next attempt to make it fails.
        failures = self._failures
        bound = self._connections.limits.connect_timeout + self._connections.limits.command_timeout
        with anyio.move_on_after(bound):
            while not self._ready.is_set() and self._failures == failures:
                await self._news.wait()
        if self._ready.is_set():
            return
        raise BrokerConnectionError(
            "cannot reach Redis while starting to wait for a job's result: "
            f"{self._failure or f'no subscription within {bound:g} s'}. Check that the server "
            "is up and the URL is right"
        )

    def _tell(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:  # the loop it ran on is gone or elsewhere: nothing to wait for here
                task.cancel()

    def _dispatch(self, message: bytes) -> None:
        """Wake the waiters of the jobs one message announces (wire.ENDED_FIELDS each)."""
        fields = unpack_fields(message)
        waiting, prewatched = self._waiting, self._prewatched
        for i in range(0, len(fields) - _ENDED_WIDTH + 1, _ENDED_WIDTH):
            job_id = fields[i].decode(errors="replace")
            waiters = waiting.get(job_id)
            flagged = prewatched.pop(job_id, _ABSENT) is not _ABSENT
            if not waiters and not flagged:
                continue  # awaited by another process
            task = fields[i + 1]
            outcome = Outcome("done", as_text(task), fields[i + 2], None) if task else None
            if not waiters:
                self._heard_early(job_id, outcome)
                continue
            # (A flagged job's own handle, if it waits later, watches: its end is heard.)
            for waiter in waiters:
                waiter.wake(done=True, outcome=outcome)

    def _heard_early(self, job_id: str, outcome: Outcome | None) -> None:
        early = self._early
        if len(early) >= _EARLY_MAX:
            del early[next(iter(early))]
        early[job_id] = (asyncio.get_running_loop().time(), outcome)

    def _renewed(self) -> None:
        for waiters in self._waiting.values():
            for waiter in waiters:
                waiter.wake(done=False)

    async def _run(self) -> None:
        delay = 0.05
        first = True
        while True:
            client = self._connections.make_client(1, blocking_reads=True)
            try:
                await self._listen(client, renewed=not first)
            except (*CONNECTION_ERRORS, QueueAsyncError) as exc:
                self._failed(exc)
                logger.warning("the subscription for job results was lost (%s); reconnecting", exc)
            except Exception as exc:
                self._failed(exc)
                logger.exception("the subscription for job results failed; reconnecting")
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await client.aclose()
            first = False
            await anyio.sleep(delay)
            delay = min(_RECONNECT_MAX, delay * 2)

    def _failed(self, exc: BaseException) -> None:
        self._ready.clear()
        self._failure = exc
        self._failures += 1
        self._tell()

    async def _listen(self, client: Client, *, renewed: bool) -> None:
        limits = self._connections.limits
        pubsub: Any = client.redis.pubsub()
        try:
            with anyio.fail_after(limits.connect_timeout + limits.command_timeout):
                await pubsub.subscribe(*self._channels)
                confirmed = 0
                while confirmed < len(self._channels):
                    message = await pubsub.get_message(timeout=limits.command_timeout)
                    if message is not None and message["type"] == "subscribe":
                        confirmed += 1
            self._ready.set()
            self._tell()
            if renewed:
                logger.info("the subscription for job results is back")
                self._renewed()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=_PING_AFTER)
                if message is None:
                    if pinged:
                        raise BrokerConnectionError(
                            f"no answer to a PING on the results subscription in {_PING_AFTER} s"
                        )
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                if message["type"] == "message":
                    self._dispatch(message["data"])
                elif message["type"] == "subscribe":
                    # redis-py lost the connection, made it again and subscribed anew by
                    # itself: what was announced meanwhile is lost.
                    logger.info("the subscription for job results was made again")
                    self._prewatched.clear()
                    self._renewed()
        finally:
            self._ready.clear()
            # Ends announced from now on may be lost: the flags set at enqueue say nothing.
            self._prewatched.clear()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()
