"""A worker's lanes: one per queue it serves, each with the lease book of that queue.

The worker calls each lane for the queue-wide transitions (lease, complete, retire, release)
and picks which lane to lease from next (``lease_order``). ``LeaseBook`` alone writes what
the worker holds on a queue.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from queue_async.broker.durability import Unconfirmed
from queue_async.broker.scripts import Arg, Scripts
from queue_async.broker.wire import COMPLETION_FIELDS
from queue_async.exceptions import BrokerError
from queue_async.models import WorkerHeartbeat
from queue_async.options import WorkerSettings, parse_rate, to_ms
from queue_async.worker.jobs import LeasedJob, parse_lease

if TYPE_CHECKING:
    from queue_async.producer.queue import Middleware, Queue

logger = logging.getLogger("queue_async.worker")

Strategy = Literal["strict", "weighted"]


_PER_COMPLETION = len(COMPLETION_FIELDS)


class LeaseBook:
    """What a worker holds on one queue, and what it has finished but not yet recorded.

    Invariants, kept by these methods alone:
    - ``held`` (id -> lease token) has every lease the worker holds: from the moment a lease
      reply is read (``took``) until the job's outcome is recorded or it is handed back.
      The heartbeat extends exactly these.
    - ``finishing`` is a subset of ``held``: jobs whose outcome is being recorded (a
      completion buffered or sent, a fail call in flight). A lease the heartbeat finds lost
      among them is not news, and shutdown does not hand them back.
    - ``done`` holds the completions (``COMPLETION_FIELDS`` each) of finishing jobs until a
      complete call records them; a failed call puts them back, in order.
    """

    __slots__ = ("done", "finishing", "held", "losses")

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.done: list[Arg] = []
        self.finishing: set[str] = set()
        self.losses = 0
        """Leases found lost (by a heartbeat, or when a completion came too late)."""

    def took(self, job: LeasedJob) -> None:
        self.held[job.id] = job.token

    def completed(self, job: LeasedJob, result: bytes, keep_ms: int) -> None:
        """Buffer a completion for the next complete call."""
        self.done.extend((job.id, job.token, result, keep_ms))
        self.finishing.add(job.id)

    @contextlib.contextmanager
    def failing(self, job: LeasedJob) -> Iterator[None]:
        """Around the fail call of a try: finishing while it is in flight, released after."""
        self.finishing.add(job.id)
        try:
            yield
        finally:
            self.finishing.discard(job.id)
            self.released(job)

    def released(self, job: LeasedJob) -> None:
        """The job's lease is no longer ours (handed back, or its failure recorded)."""
        if self.held.get(job.id) == job.token:
            del self.held[job.id]

    def take_done(self) -> list[Arg]:
        batch, self.done = self.done, []
        return batch

    def put_back(self, batch: list[Arg]) -> None:
        """A complete call failed: its completions go first in the next one."""
        self.done[:0] = batch

    def recorded(self, batch: list[Arg], index: int) -> str:
        """The complete call answered for the batch's ``index``-th job; returns its id."""
        at = index * _PER_COMPLETION
        job_id, token = str(batch[at]), str(batch[at + 1])
        self.finishing.discard(job_id)
        if self.held.get(job_id) == token:
            del self.held[job_id]
        return job_id

    def leftovers(self) -> list[Arg]:
        """Take every lease held that no outcome is being recorded for (abandoned handlers,
        jobs cancelled before their first step): id, token pairs to hand back."""
        pairs: list[Arg] = []
        for job_id, token in list(self.held.items()):
            if job_id not in self.finishing:
                pairs += [job_id, token]
                del self.held[job_id]
        return pairs

    def lost(self, job_id: str, token: str | None) -> bool:
        """Whether a lease the heartbeat sent as ``token`` and found lost is news: still held
        with that token, and no outcome on its way."""
        news = self.held.get(job_id) == token and job_id not in self.finishing
        self.losses += news
        return news


def lease_grace_ms(settings: WorkerSettings) -> int:
    """How long an expired lease of this worker's is only suspected before it is recovered
    (see recover_expired in lua/includes/leases.lua): two heartbeats."""
    return 2 * to_ms(settings.heartbeat)


def idle_offer(
    settings: WorkerSettings, worker_id: str, free: int
) -> tuple[str, int, int, int, int]:
    """What a completion call registers a worker as idle with (see ``Scripts.complete``):
    its id, ``free`` slots, lease, lease grace and longest idle wait."""
    return (
        worker_id,
        free,
        to_ms(settings.lease),
        lease_grace_ms(settings),
        to_ms(settings.max_idle_wait),
    )


@dataclass(eq=False)
class Lane:
    """One queue a worker serves."""

    queue: Queue
    scripts: Scripts
    """The queue's transitions on the worker's own connections."""
    weight: int = 1
    middleware: tuple[Middleware, ...] = ()
    book: LeaseBook = field(default_factory=LeaseBook)
    group: int = 0
    """The queue given to the worker that this lane serves (the shards of one queue share
    it): ``lease_order`` orders groups, and takes the lanes of a group in turn."""

    async def lease(
        self,
        settings: WorkerSettings,
        worker_id: str,
        lease_id: str,
        free: int,
        idle_ms: int,
        slots: int | None = None,
    ) -> tuple[int, int, list[LeasedJob]]:
        """Take up to ``free`` jobs (see lease.lua); ``idle_ms`` > 0 offers hand-offs, for
        the worker's free ``slots`` this lease leaves when given."""
        reply = await self.scripts.lease(
            min(free, settings.lease_batch),
            to_ms(settings.lease),
            lease_id,
            worker_id,
            settings.max_stalls,
            to_ms(settings.dead_max_age),
            settings.dead_max_len,
            idle_ms,
            lease_grace_ms(settings),
            slots=slots,
        )
        return parse_lease(reply, self.queue)

    async def extend(self, settings: WorkerSettings, beat: WorkerHeartbeat) -> list[str]:
        """The heartbeat: extend every lease held and publish ``beat``. Logs the leases
        found lost; returns the ids flagged for abort."""
        sent = dict(self.book.held)
        pairs: list[Arg] = [x for item in sent.items() for x in item]
        lost, aborting = await self.scripts.extend(
            to_ms(settings.lease),
            beat.id,
            beat.model_dump_json(exclude_defaults=True).encode(),
            3 * to_ms(settings.heartbeat),
            pairs,
        )
        for job_id in lost:
            # A job recorded done or failed while this call was in flight is not lost.
            if self.book.lost(job_id, sent.get(job_id)):
                logger.warning(
                    "lease of job %s was lost: this worker did not extend it in time (blocked "
                    "or cut off from Redis), so it was recovered and may run again elsewhere",
                    job_id,
                )
        return aborting

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

    async def flush(self, idle: tuple[str, int, int, int, int] | None = None) -> None:
        """Record the buffered completions in one call; raises BrokerError with them kept
        for the next try. ``idle``: register the worker as idle with it (see
        ``Scripts.complete``)."""
        batch = self.book.take_done()
        try:
            flags = await self.scripts.complete(batch, idle=idle)
        except Unconfirmed as short:
            flags = short.reply
            logger.warning(
                "%d job completion(s) were recorded on the master, but %s: a failover now "
                "could lose them (the jobs would run again)",
                len(flags),
                short,
            )
        except BaseException:
            self.book.put_back(batch)
            raise
        for index, flag in enumerate(flags):
            job_id = self.book.recorded(batch, index)
            if flag == 0:
                self.book.losses += 1
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
        pairs = self.book.leftovers()
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


def lane_groups(lanes: Sequence[Lane]) -> list[list[Lane]]:
    """The lanes by the queue given to the worker that each serves (a sharded queue's shards
    together), in the order given."""
    groups: dict[int, list[Lane]] = {}
    for lane in lanes:
        groups.setdefault(lane.group, []).append(lane)
    return list(groups.values())


def lease_order(
    groups: Sequence[list[Lane]], strategy: Strategy, rng: random.Random, turn: int = 0
) -> list[Lane]:
    """The lanes in the order to try this round: their queues as given (strict), or drawn by
    weight; the shards of one queue in turn, starting one further each round, so that no
    shard is always taken first."""
    if len(groups) == 1 and len(groups[0]) == 1:
        return groups[0]
    pool = list(groups)
    if strategy != "strict":
        drawn = []
        while pool:
            pick = rng.choices(pool, weights=[group[0].weight for group in pool])[0]
            drawn.append(pick)
            pool.remove(pick)
        pool = drawn
    order = []
    for group in pool:
        start = turn % len(group)
        order += group[start:] + group[:start]
    return order
