"""``Admin``: the operator's view of one queue, and of every queue on its server.

Apart from the ``Queue`` that apps pass around, so that the powers to purge and delete stay
with the operator's tools (the CLI, the dashboard, a script). Every call does bounded work on
the server: listings read a page at a time, and bulk actions go in capped steps, so that the
server never stops for long for the workers and producers it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Literal

from queue_async.admin import crons as _crons
from queue_async.admin import jobs as _jobs
from queue_async.admin import registry as _registry
from queue_async.admin import workers as _workers
from queue_async.codec import Codec
from queue_async.exceptions import ConfigurationError
from queue_async.models import CronInfo, Job, JobPage, QueueStats, WorkerInfo
from queue_async.producer.queue import Queue

__all__ = ["Admin", "ListedState", "Order"]

ListedState = Literal["ready", "scheduled", "active", "dead", "done"]
"""The states ``Admin.jobs`` lists (``"scheduled"`` holds delays and retries alike)."""
Order = Literal["oldest", "newest"]


class Admin:
    """Inspection and repair of one queue's jobs.

    Made from the app's ``Queue``, or without the app: ``Admin.connect(url, name=...)``
    (the queue's tasks are not needed to see or repair its jobs)::

        async with qa.Admin.connect("redis://localhost", name="emails") as admin:
            page = await admin.jobs("dead", task="send", limit=50)
            await admin.retry_dead(task="send", search="timeout", limit=1000)
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._owned = False

    @classmethod
    def connect(
        cls,
        redis_: str | None = None,
        *,
        name: str = "default",
        prefix: str = "qa",
        codec: Codec | None = None,
        shards: int = 1,
    ) -> Admin:
        """An ``Admin`` on its own ``Queue`` (closed with the admin: ``async with``).
        ``redis_`` defaults to ``$REDIS_URL``; ``codec`` is the queue's, if not JSON;
        ``shards`` the queue's, if it is sharded (each shard is also a queue of its own,
        ``<name>.<k>``, listed by ``queues()``)."""
        admin = cls(Queue(redis_, name=name, prefix=prefix, codec=codec, shards=shards))
        admin._owned = True
        return admin

    def for_queue(self, name: str) -> Admin:
        """An ``Admin`` of another queue on the same server and prefix (shares nothing; close
        it with ``async with``)."""
        queue = self.queue
        # The same server, through a pool of its own.
        admin = Admin(Queue(queue.client, name=name, prefix=queue.prefix, codec=queue.codec))
        admin._owned = True
        return admin

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.queue.close()

    # -- reading ----------------------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Counts per state, latency, lifetime counters (see ``QueueStats``)."""
        return await self.queue.stats()

    async def jobs(
        self,
        state: ListedState,
        *,
        task: str | None = None,
        search: str | None = None,
        order: Order = "oldest",
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """A page of the jobs in ``state``, oldest or newest first.

        ``task`` keeps one task's jobs; ``search`` keeps jobs whose id, arguments or error
        contain that text. ``cursor`` (from the previous page) stays valid while jobs move:
        a job that left the state meanwhile is not listed again, and none is skipped.

        Each call looks at a bounded number of jobs; with a filter, a page may come back
        short (even empty) with a cursor: keep calling until ``cursor`` is None.
        """
        shards = self.queue.shards
        if len(shards) == 1:
            return await _jobs.page(
                self.queue, state, task=task, search=search, order=order, cursor=cursor, limit=limit
            )
        # A sharded queue is listed shard after shard: the cursor names the shard and the
        # place in it; each shard's jobs come in ``order``.
        at, inner = _shard_cursor(cursor, len(shards))
        found = await _jobs.page(
            shards[at], state, task=task, search=search, order=order, cursor=inner, limit=limit
        )
        if found.cursor is not None:
            next_cursor: str | None = f"{at}.{found.cursor}"
        else:
            next_cursor = f"{at + 1}." if at + 1 < len(shards) else None
        return found.model_copy(update={"cursor": next_cursor})

    async def job(self, job_id: str) -> Job:
        """One job, whatever its state; ``JobNotFound`` if this queue has no such job."""
        return await self.queue.job(job_id).info()

    async def workers(self) -> list[WorkerInfo]:
        """The live workers of this queue (a worker drops out once its heartbeat lapses)."""
        found = [w for shard in self.queue.shards for w in await _workers.live_workers(shard)]
        if len(self.queue.shards) == 1:
            return found
        return _workers.merged(self.queue.name, found)

    async def crons(self) -> list[CronInfo]:
        """The cron schedules the queue's workers run, with their last and next tick."""
        found = [c for shard in self.queue.shards for c in await _crons.schedules(shard)]
        if len(self.queue.shards) == 1:
            return found
        return _crons.merged(found)

    async def queues(self) -> list[QueueStats]:
        """Every queue of this key prefix on the server, with its stats (from a registry
        that producers and workers keep; no ``KEYS``)."""
        return await _registry.all_stats(self.queue)

    async def forget_queue(self, name: str | None = None) -> bool:
        """Take a queue (this one by default) out of the registry that ``queues()`` reads,
        e.g. one that is gone for good; its keys are untouched, and its next enqueue or
        worker start registers it again. True if it was registered."""
        return await _registry.forget(self.queue, self.queue.name if name is None else name)

    # -- repairing --------------------------------------------------------------------------

    async def retry(self, job_id: str, *, at: datetime | timedelta | None = None) -> bool:
        """Requeue a dead job, or a job waiting out a retry's backoff, **in place**: same id,
        history kept (attempts, last error). It runs now, or at ``at`` (a time, or a delay).
        False if the job is not dead or retrying; ``JobNotFound`` if this queue has no such
        job."""
        return await _jobs.retry(self.queue.shard_for(job_id), job_id, at=at)

    async def retry_dead(
        self,
        *,
        task: str | None = None,
        search: str | None = None,
        limit: int = 1000,
        at: datetime | timedelta | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Retry in place the dead jobs that match (oldest first), at most ``limit``; the
        number retried. It goes in steps (each one atomic script call); ``progress`` is
        called after each with the number retried so far."""
        return await _each_shard(
            self.queue,
            limit,
            progress,
            lambda shard, most, step: _jobs.retry_dead(
                shard, task=task, search=search, limit=most, at=at, progress=step
            ),
        )

    async def promote(self, within: float | timedelta = 0, *, limit: int = 10_000) -> int:
        """Run scheduled jobs early: those due within ``within`` (seconds, or a timedelta)
        from now, delayed jobs and retries alike, become ready now, at most ``limit`` (an
        operator's "run now"; in tests, the clock moved forward: see
        ``queue_async.testing.advance``). The number moved; one atomic step."""
        ahead = within.total_seconds() if isinstance(within, timedelta) else within
        if isinstance(ahead, bool) or not isinstance(ahead, int | float) or not ahead >= 0:
            raise ConfigurationError(f"within must be 0 or more seconds, not {within!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be a positive integer, not {limit!r}")
        moved = 0
        for shard in self.queue.shards:
            if moved < limit:
                moved += await shard._broker.scripts.promote(round(ahead * 1000), limit - moved)
        return moved

    async def delete(self, job_id: str) -> bool:
        """Delete a job that is not running (ready, scheduled, dead, done or cancelled): its
        record and result are gone. False if it is running (stop it with ``abort``);
        ``JobNotFound`` if this queue has no such job."""
        return await _jobs.delete(self.queue.shard_for(job_id), job_id)

    async def purge(
        self,
        state: Literal["ready", "scheduled", "dead", "done"],
        *,
        task: str | None = None,
        search: str | None = None,
        limit: int = 10_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete the jobs in ``state`` that match (oldest first), at most ``limit``; the
        number deleted. Running jobs are never purged (``abort`` them). It goes in steps
        (each one atomic script call); ``progress`` is called after each with the number
        deleted so far."""
        return await _each_shard(
            self.queue,
            limit,
            progress,
            lambda shard, most, step: _jobs.purge(
                shard, state, task=task, search=search, limit=most, progress=step
            ),
        )

    async def cancel(self, job_id: str) -> bool:
        """See ``Queue.cancel``."""
        return await self.queue.cancel(job_id)

    async def abort(self, job_id: str) -> bool:
        """See ``Queue.abort``."""
        return await self.queue.abort(job_id)

    async def pause(self, task: str | None = None) -> None:
        """See ``Queue.pause``."""
        await self.queue.pause(task)

    async def resume(self, task: str | None = None) -> None:
        """See ``Queue.resume``."""
        await self.queue.resume(task)


def _shard_cursor(cursor: str | None, shards: int) -> tuple[int, str | None]:
    """The shard and the place in it that a sharded queue's listing cursor names."""
    if cursor is None or cursor == "":
        return 0, None
    at, _, inner = cursor.partition(".")
    if not at.isdigit() or int(at) >= shards:
        raise ConfigurationError(f"cursor {cursor!r} is not one a listing of this queue returned")
    return int(at), inner or None


async def _each_shard(
    queue: Queue,
    limit: int,
    progress: Callable[[int], None] | None,
    act: Callable[[Queue, int, Callable[[int], None] | None], Awaitable[int]],
) -> int:
    """A bulk action over every shard of a queue, shard after shard, ``limit`` in all;
    ``progress`` counts across shards."""
    shards = queue.shards
    if len(shards) == 1:
        return await act(queue, limit, progress)
    _jobs.check_limit(limit)
    done = 0
    for shard in shards:
        if done >= limit:
            break
        before = done

        def step(count: int, before: int = before) -> None:
            if progress is not None:
                progress(before + count)

        done += await act(shard, limit - done, step)
    return done
