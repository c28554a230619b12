"""How an idle worker waits: blocking calls on Redis, never a sleep loop.

A worker blocks on its inbox, where enqueue.lua hands it new jobs already leased to it, and on
each queue's wake list (a marker: more jobs are ready, or the next due time moved), once per
server, on a connection of its own without a socket read timeout. On a cluster a blocking call
may name the keys of one hash slot only, so there the worker waits once per queue (each on the
master of its queue's slot), all at once. A server ends a blocking
call's timeout only at its next cron tick (up to 100 ms late at the default hz 10), so for a
job that falls due the worker rings its own alarm key at the due time, and the call's timeout
is a fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions

from queue_async.broker.wire import as_bytes
from queue_async.worker.jobs import LeasedJob, handed_job

if TYPE_CHECKING:
    from queue_async.broker.connections import Client
    from queue_async.broker.scripts import Scripts
    from queue_async.worker.leasing import Lane

__all__ = ["IdleWaits"]

logger = logging.getLogger("queue_async.worker")

_ALARM_SLACK = 0.25
"""Seconds past a due time that a blocking wait ends by itself if its alarm did not ring."""


class IdleWaits:
    """One blocking wait per server the worker's queues live on (per queue on a cluster)."""

    def __init__(self, lanes: Sequence[Lane], clients: list[Client]) -> None:
        """``clients``: the worker's list of clients to close, to which these are added."""
        self._first = lanes[0]
        by_server: dict[tuple[Any, ...], list[Lane]] = {}
        for lane in lanes:
            broker = lane.queue._broker
            server = broker.connections.server
            if broker.connections.cluster is not None:
                server = (*server, broker.keys.prefix)  # one slot per blocking call
            by_server.setdefault(server, []).append(lane)
        self._waits: list[tuple[Client, list[Lane]]] = []
        self._many = True
        """False once the server refused BLMPOP (an ACL): one job per wait, as on Redis 6."""
        for served in by_server.values():
            client = served[0].queue._broker.connections.make_client(1, blocking_reads=True)
            clients.append(client)
            self._waits.append((client, served))

    async def wait(
        self,
        seconds: float,
        *,
        worker_id: str,
        inbox: bool,
        due: bool,
        also: Awaitable[Any] | None = None,
        room: int = 1,
    ) -> list[LeasedJob]:
        """Block for at most ``seconds``; return the jobs handed to the inbox, if any came.

        ``inbox``: also wait on this worker's inbox (a worker of one queue, not in burst
        mode), and take up to ``room`` of its jobs at once where the server can (BLMPOP,
        Redis 7+: the jobs of one enqueue call in one round trip, not one and then a lease
        call for the rest). ``due``: a job falls due in ``seconds`` (ring the alarm then).
        ``also``: another wait that ends this one (a burst worker wakes when one of its jobs
        ends).
        """
        seconds = max(seconds, 0.001)
        inbox_key = self._first.queue._broker.keys.inbox(worker_id) if inbox else None
        waits: list[Awaitable[Any]] = []
        alarms: list[tuple[Scripts, str]] = []
        for client, lanes in self._waits:
            keys = [lane.queue._broker.keys.wake for lane in lanes]
            if inbox_key:
                keys.insert(0, inbox_key)
            if due:
                alarm = lanes[0].queue._broker.keys.alarm(worker_id)
                alarms.append((lanes[0].scripts, alarm))
                keys.append(alarm)
            count = room if inbox_key and lanes[0].scripts.functions else 1
            waits.append(self._pop(client, keys, seconds + _ALARM_SLACK if due else seconds, count))
        if also is not None:
            waits.append(also)
        ring = asyncio.ensure_future(_ring(alarms, seconds)) if alarms else None
        try:
            popped = await waits[0] if len(waits) == 1 else await _first_of(waits)
        finally:
            if ring is not None:
                ring.cancel()
        if (
            inbox_key is not None
            and isinstance(popped, list | tuple)
            and popped[0] == inbox_key.encode()
        ):
            queue = self._first.queue
            return [handed_job(as_bytes(packed), queue) for packed in popped[1]]
        return []

    async def _pop(self, client: Client, keys: list[str], seconds: float, count: int) -> Any:
        """What the first of ``keys`` with anything in it had: its name and a list of up to
        ``count`` of its entries (BLMPOP; BLPOP for one, or where an ACL denies BLMPOP), or
        None when ``seconds`` passed."""

        async def pop() -> Any:
            if count > 1 and self._many:
                try:
                    return await client.redis.blmpop(
                        seconds, len(keys), *keys, direction="LEFT", count=count
                    )
                except redis.exceptions.NoPermissionError:
                    logger.info("BLMPOP is not allowed to this user: waiting with BLPOP")
                    self._many = False
            popped = await client.redis.blpop(keys, timeout=seconds)
            return None if popped is None else (popped[0], [popped[1]])

        return await client.blocking(seconds, pop, "waiting for jobs")


async def _ring(alarms: list[tuple[Scripts, str]], seconds: float) -> None:
    """Wake this worker's own blocking wait in ``seconds``."""
    await asyncio.sleep(seconds)
    for scripts, key in alarms:
        try:
            async with scripts.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, "1")
                pipe.pexpire(key, 1000)  # a ring the wait did not take must not linger
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the wait's own timeout still ends it
            logger.debug("could not ring the alarm %s: %s", key, exc)


async def _first_of(waits: Sequence[Awaitable[Any]]) -> Any:
    """Await several waits at once: the result of the first to end (its error, if it
    failed); the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(task for task in tasks if task in done)
    return first.result()
