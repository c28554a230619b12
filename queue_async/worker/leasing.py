"""A worker's lanes: one per queue it serves, with the leases it holds on that queue.

The worker calls each lane for the queue-wide transitions (lease, complete, extend, retire,
release) and picks which lane to lease from next (``lease_order``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from queue_async.broker.scripts import Arg, Scripts
from queue_async.exceptions import BrokerError
from queue_async.options import WorkerSettings, parse_rate, to_ms
from queue_async.worker.executor import LeasedJob, parse_lease

if TYPE_CHECKING:
    from queue_async.producer.queue import Middleware, Queue

logger = logging.getLogger("queue_async.worker")

Strategy = Literal["strict", "weighted"]


@dataclass(eq=False)
class Lane:
    """One queue a worker serves."""

    queue: Queue
    scripts: Scripts
    """The queue's transitions on the worker's own connections."""
    weight: int = 1
    middleware: tuple[Middleware, ...] = ()
    running: dict[str, str] = field(default_factory=dict)
    """Leases held (running, or finished with the completion not yet recorded): id -> token."""
    done: list[Arg] = field(default_factory=list)
    """Completions waiting for the next batched complete call, four fields each."""
    finishing: set[str] = field(default_factory=set)
    """Ids whose completion is in ``done`` or being sent."""

    async def lease(
        self, settings: WorkerSettings, worker_id: str, lease_id: str, free: int, idle_ms: int
    ) -> tuple[int, int, list[LeasedJob]]:
        """Take up to ``free`` jobs (see lease.lua); ``idle_ms`` > 0 offers hand-offs."""
        reply = await self.scripts.lease(
            min(free, settings.lease_batch),
            to_ms(settings.lease),
            lease_id,
            worker_id,
            settings.max_stalls,
            to_ms(settings.dead_max_age),
            settings.dead_max_len,
            idle_ms,
            2 * to_ms(settings.heartbeat),
        )
        return parse_lease(reply, self.queue)

    async def set_task_limits(self) -> None:
        """Store the queue's task limits where every worker's lease.lua reads them (the last
        worker to start wins), and clear limits its tasks no longer have."""
        for task in self.queue.tasks.values():
            opts = task.task_options
            rate = ""
            if opts.rate_limit is not None:
                jobs, period_ms = parse_rate(opts.rate_limit)
                rate = f"{jobs}:{period_ms}"
            limit = "" if opts.max_concurrency is None else str(opts.max_concurrency)
            await self.scripts.set_limits(task.name, limit, rate)

    async def flush(self) -> None:
        """Record the buffered completions in one call; raises BrokerError with them kept
        for the next try."""
        batch, self.done = self.done, []
        try:
            flags = await self.scripts.complete(batch)
        except BaseException:
            self.done[:0] = batch
            raise
        for index, flag in enumerate(flags):
            job_id, token = str(batch[index * 4]), str(batch[index * 4 + 1])
            self.finishing.discard(job_id)
            if self.running.get(job_id) == token:
                del self.running[job_id]
            if flag == 0:
                logger.warning(
                    "job %s finished but its lease was lost (it was recovered and may have "
                    "run again elsewhere); this result was not recorded",
                    job_id,
                )
            elif flag == 2:
                # Deleted while it ran, or an earlier send of this call recorded it with
                # keep_result=0 and its reply was lost: either way nothing is left to record.
                logger.debug(
                    "job %s finished; its record was already gone",
                    job_id,
                )

    async def release_leftovers(self) -> None:
        """Hand back every lease held that no completion is waiting to record: jobs whose
        handlers were abandoned, and jobs cancelled before their first step."""
        pairs: list[Arg] = []
        for job_id, token in list(self.running.items()):
            if job_id not in self.finishing:
                pairs += [job_id, token]
                del self.running[job_id]
        if not pairs:
            return
        try:
            await self.scripts.release(pairs)
        except BrokerError as exc:
            logger.warning(
                "could not hand back %d jobs (%s): they are recovered when their leases expire",
                len(pairs) // 2,
                exc,
            )

    async def retire(self, worker_id: str) -> None:
        """Leave the idle rotation and hand back jobs handed to this worker but not taken."""
        try:
            await self.scripts.retire(worker_id)
        except BrokerError as exc:
            logger.warning(
                "could not retire from the idle rotation of %r (%s): jobs handed to this "
                "worker will be recovered when their leases expire",
                self.queue.name,
                exc,
            )

    async def deregister(self, worker_id: str) -> None:
        keys = self.queue._broker.keys
        try:
            async with self.scripts.client.pipeline(transaction=False) as pipe:
                pipe.delete(keys.worker(worker_id))
                pipe.zrem(keys.workers, worker_id)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - best effort: the heartbeat expires anyway
            logger.debug("could not deregister worker %s: %s", worker_id, exc)


def lease_order(lanes: Sequence[Lane], strategy: Strategy, rng: random.Random) -> list[Lane]:
    """The lanes in the order to try this round: as given (strict), or drawn by weight."""
    if strategy == "strict" or len(lanes) == 1:
        return list(lanes)
    pool = list(lanes)
    order = []
    while pool:
        pick = rng.choices(pool, weights=[lane.weight for lane in pool])[0]
        order.append(pick)
        pool.remove(pick)
    return order
