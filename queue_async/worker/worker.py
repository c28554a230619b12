"""``Worker``: leases jobs from one or more queues and runs them.

The worker's own loops (lease, flush, heartbeat, watchdog, cron, signals) run in one anyio
task group. Each job runs in a plain asyncio task of its own: far cheaper to spawn than an
anyio ``start_soon`` (benchmarks/NOTES.md), and a job outside the task group can be abandoned
when its handler ignores cancellation, instead of holding the worker hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel

from queue_async.broker.connections import Client
from queue_async.broker.reconnect import Backoff, outages
from queue_async.broker.scripts import Scripts
from queue_async.exceptions import BrokerError, ConfigurationError
from queue_async.models import RunningJob, WorkerHeartbeat
from queue_async.options import WorkerSettings, to_ms
from queue_async.producer.queue import Hook, Middleware, Queue
from queue_async.worker.crons import record_crons, run_crons
from queue_async.worker.deadlines import Deadlines
from queue_async.worker.executor import Executor, JobObserver
from queue_async.worker.jobs import JobSlot, LeasedJob, job_timeout_ms
from queue_async.worker.leasing import Lane, Strategy, idle_offer, lane_groups, lease_order
from queue_async.worker.loop_monitor import LoopMonitor
from queue_async.worker.threads import HandlerThreads
from queue_async.worker.waits import IdleWaits

__all__ = ["Worker"]

logger = logging.getLogger("queue_async.worker")


class Worker:
    """Runs the jobs of one queue, or of several.

    ``await worker.run()`` until SIGTERM/SIGINT (or cancellation); ``await
    worker.run(burst=True)`` until nothing is ready or scheduled; ``async with Worker(queue)``
    runs it in the background (e.g. in a FastAPI lifespan) and stops it gracefully on exit.

    Args:
        queue: the queue whose jobs to run (its registered tasks are the handlers), or a list
            of queues sharing this worker's concurrency.
        strategy: with several queues, ``"strict"`` (default) always takes from the first
            queue that has work, in the order given; ``"weighted"`` picks the queue of each
            lease at random by ``weights`` (e.g. 10 and 1: about ten jobs of the first per job
            of the second while both have work; an empty queue is skipped).
        weights: one positive integer per queue, for ``"weighted"`` (default: all 1).
        concurrency: jobs running at once (shortcut for ``settings.concurrency``).
        settings: every other knob; see ``WorkerSettings``. Keyword overrides win.
        on_startup / on_shutdown: ``async def hook(state)`` run before the first job and after
            the last, besides the queues' own hooks; ``state`` is shared with every job's
            ``ctx.state``.
        middleware: ``async def mw(ctx, call_next)`` around every job, after the queue's own
            (see ``Queue.middleware``).
    """

    _offering = False
    """While the lease loop offers hand-offs (one queue, not burst), a completion call
    registers the worker as idle: it blocks on its inbox whenever it has room (see
    complete.lua)."""

    def __init__(
        self,
        queue: Queue | Sequence[Queue],
        *,
        strategy: Strategy = "strict",
        weights: Sequence[int] | None = None,
        concurrency: int | None = None,
        settings: WorkerSettings | None = None,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        middleware: Iterable[Middleware] = (),
        observers: Iterable[JobObserver] = (),
        **overrides: Any,
    ) -> None:
        queues = _check_queues(queue)
        if strategy not in ("strict", "weighted"):
            raise ConfigurationError(f"strategy is 'strict' or 'weighted', not {strategy!r}")
        served, weights, groups = _served(queues, weights)
        if concurrency is not None:
            overrides["concurrency"] = concurrency
        base = settings.model_dump() if settings else {}
        self.settings = WorkerSettings.model_validate({**base, **overrides})
        self.queue = queues[0]
        self.queues = served
        """The queues whose jobs this worker runs: those given, a sharded one as its shards."""
        self.strategy: Strategy = strategy
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state: dict[str, Any] = {}
        self.threads = HandlerThreads(self.settings.concurrency)
        """The threads of sync handlers (see ``threads.py``)."""
        self._clients: list[Client] = []
        self._lanes = self._make_lanes(self.queues, weights, groups, tuple(middleware))
        self._waits = IdleWaits(self._lanes, self._clients)
        self._lane_of = {id(lane.queue): lane for lane in self._lanes}
        self._groups = lane_groups(self._lanes)
        self._rounds = 0
        self._startup_hooks = _unique([*(h for q in queues for h in q.startup_hooks), *on_startup])
        self._shutdown_hooks = _unique(
            [*(h for q in queues for h in q.shutdown_hooks), *on_shutdown]
        )
        self._random = random.Random()
        self._busy = 0  # slots taken: jobs running, not counting abandoned ones
        self._jobs: dict[asyncio.Task[None], JobSlot] = {}
        self._deadlines = Deadlines()
        self._waiting: deque[LeasedJob] = deque()  # leased ahead (prefetch), not started
        self._ended: deque[float] = deque(maxlen=self.settings.lease_batch)  # loop times
        self._abandoned = 0  # async handlers given up on, see _give_up
        self._processed = 0
        self._done_ready = anyio.Event()
        # The offer lock is held by a lease call and by a completion call that registers the
        # worker as idle: the free slots such a call offers are counted with no lease in
        # flight.
        self._flush_lock, self._offer_lock = anyio.Lock(), asyncio.Lock()
        self._executor = Executor(
            worker_id=self.id,
            state=self.state,
            settings=self.settings,
            threads=self.threads,
            lanes=self._lane_of,
            completions_waiting=self._completions_waiting,
        )
        self._executor.observers = tuple(observers)
        # Replaced at every job's end: a plain asyncio.Event, as anyio.Event() looks up the
        # running async library each time it is made.
        self._changed = asyncio.Event()
        self._stopping = False
        self._running = False
        self.error: BaseException | None = None
        """What stopped a worker that ended with an error (it is also raised)."""
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cron_scope: anyio.CancelScope | None = None
        self._lease_scope: anyio.CancelScope | None = None
        self._grace_scope: anyio.CancelScope | None = None
        self._started_at = datetime.now(UTC)
        self._lease_seq = 0
        self._ran = False
        self._runs_crons = False

    def _make_lanes(
        self,
        queues: list[Queue],
        weights: list[int],
        groups: list[int],
        middleware: tuple[Middleware, ...],
    ) -> list[Lane]:
        """A lane per queue (per shard). The worker's calls go on connections of its own,
        apart from the producers' pools, so that no number of enqueues or result waiters can
        starve them; the shards of a queue share them."""
        lanes = []
        clients: dict[int, Client] = {}
        for q, weight, group in zip(queues, weights, groups, strict=True):
            connections = q._broker.connections
            client = clients.get(id(connections))
            if client is None:
                client = clients[id(connections)] = connections.worker_client()
                self._clients.append(client)
            scripts = Scripts(client.redis, q._broker.keys, q.durability)
            lanes.append(Lane(q, scripts, weight, (*q.middlewares, *middleware), group=group))
        return lanes

    def __repr__(self) -> str:
        names = ", ".join(repr(q.name) for q in self.queues)
        return f"<Worker {self.id} on {names}>"

    # -- public control ---------------------------------------------------------------------

    @property
    def abandoned(self) -> int:
        """Handlers left running after their try ended: async ones that ignored cancellation
        for ``cancel_grace``, and sync ones whose thread outlived their try (Python cannot
        stop a thread)."""
        return self._abandoned + self.threads.abandoned

    @property
    def busy(self) -> int:
        """Jobs whose handlers run now."""
        return self._busy

    @property
    def prefetched(self) -> int:
        """Jobs leased ahead, waiting for a free slot."""
        return len(self._waiting)

    @property
    def processed(self) -> int:
        """Tries this worker finished (done, retried or dead) since it started."""
        return self._processed

    @property
    def lease_losses(self) -> int:
        """Leases this worker found lost (its jobs recovered elsewhere) since it started."""
        return sum(lane.book.losses for lane in self._lanes)

    @property
    def observers(self) -> tuple[JobObserver, ...]:
        return self._executor.observers

    @staticmethod
    def redis_outages() -> int:
        """Times this process lost Redis (or was refused) and began backing off."""
        return outages()

    def observe(self, observer: JobObserver) -> None:
        """Tell ``observer`` of every try from now on (see ``JobObserver``)."""
        self._executor.observers = (*self._executor.observers, observer)

    @property
    def running(self) -> bool:
        """True from the end of the startup hooks until the worker stops (for health checks:
        under ``async with``, False means the worker died; ``error`` says why)."""
        return self._running

    def stop(self) -> None:
        """Stop gracefully: lease nothing more, let running jobs finish within the grace period,
        then cancel the rest and hand them back to the queue. Cron ticks stop at once."""
        self._stopping = True
        if self._lease_scope is not None:
            self._lease_scope.cancel()
        if self._cron_scope is not None:
            self._cron_scope.cancel()

    def kill(self) -> None:
        """Stop now: cancel running jobs and hand them back to the queue at once."""
        self.stop()
        if self._grace_scope is not None:
            self._grace_scope.cancel()
        for task in self._jobs:
            task.cancel()

    async def __aenter__(self) -> Worker:
        """Start the worker in the background; return once its startup hooks have run.

        A startup hook that raises makes this raise the hook's own exception.
        """
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new one")
        loop = asyncio.get_running_loop()
        self._task = task = loop.create_task(self.run(handle_signals=False))
        task.add_done_callback(self._background_done)
        started = loop.create_task(self._started.wait())
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            started.cancel()
            self.kill()
            await asyncio.wait({task})
            raise
        started.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop gracefully and wait for the worker; raise the error it died of, if any (an
        exception raised in the ``async with`` body goes on as itself)."""
        task = self._task
        assert task is not None, "__aexit__ without __aenter__"
        self.stop()
        try:
            await asyncio.wait({task})
        except BaseException:
            # Cancelled while stopping: stop at once, still handing the jobs back.
            self.kill()
            await asyncio.shield(asyncio.wait({task}))
            raise
        if exc is None and self.error is not None:
            raise self.error

    def _background_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and self._started.is_set():
            logger.error("worker %s died: %s", self.id, error, exc_info=error)

    async def run(self, *, burst: bool = False, handle_signals: bool | None = None) -> None:
        """Run until stopped; with ``burst=True``, until nothing is ready or scheduled.

        Args:
            burst: return once the queues have nothing ready or scheduled and no job runs.
            handle_signals: stop gracefully on SIGTERM/SIGINT (a second signal: at once).
                Default: only when running in the main thread and not under ``async with``.

        Raises the exception of a startup hook that failed (the shutdown hooks still run),
        and any error that stopped the worker, as itself.
        """
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new one")
        self._ran = True
        if handle_signals is None:
            handle_signals = (
                self._task is None and threading.current_thread() is threading.main_thread()
            )
        try:
            await self._run(burst, handle_signals)
        except BaseExceptionGroup as group:
            self.error = _first_error(group)
            raise self.error from None
        except Exception as exc:
            self.error = exc
            raise
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                for client in self._clients:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def _run(self, burst: bool, handle_signals: bool) -> None:
        started = False
        try:
            for hook in self._startup_hooks:
                await hook(self.state)
            started = True
            self._running = True
            self._started.set()
            monitor = self._loop_monitor()
            if monitor is not None:
                monitor.start()
            try:
                await self._loops(burst, handle_signals)
            finally:
                if monitor is not None:
                    monitor.stop()
        finally:
            with anyio.CancelScope(shield=True):
                for hook in self._shutdown_hooks:
                    try:
                        await hook(self.state)
                    except Exception:
                        if started:
                            raise
                        # A startup hook failed: its error is the one to raise.
                        logger.exception("shutdown hook %r failed after a failed startup", hook)
        logger.info("worker %s stopped after %d jobs", self.id, self._processed)

    async def _loops(self, burst: bool, handle_signals: bool) -> None:
        async with anyio.create_task_group() as loops:
            loops.start_soon(self._flush_loop)
            loops.start_soon(self._heartbeat_loop)
            loops.start_soon(self._watchdog_loop)
            self._runs_crons = not burst and any(q.crons for q in self.queues)
            if self._runs_crons:
                loops.start_soon(self._cron_loop)
            if handle_signals:
                loops.start_soon(self._signal_loop)
            try:
                await self._work(burst)
            finally:
                # However the worker stops (even cancelled), completions still buffered
                # or in flight are recorded before it goes; past the lease length there
                # is no point: the jobs are being recovered anyway.
                with anyio.CancelScope(shield=True) as final:
                    final.deadline = anyio.current_time() + self.settings.lease.total_seconds()
                    await self._flush_now()
                    for lane in self._lanes:
                        await lane.deregister(self.id)
            loops.cancel_scope.cancel()

    def _loop_monitor(self) -> LoopMonitor | None:
        threshold = self.settings.blocked_loop_warning
        if threshold is None:
            return None

        def describe(task: asyncio.Task[object] | None) -> str:
            slot = self._jobs.get(task) if task is not None else None  # type: ignore[arg-type]
            if slot is None:
                running = ", ".join(
                    f"{s.job.id} ({s.job.task})" for s in list(self._jobs.values())[:5]
                )
                return f"no job's own task (running: {running or 'none'})"
            return f"job {slot.job.id} (task {slot.job.task})"

        return LoopMonitor(threshold.total_seconds(), describe)

    async def _cron_loop(self) -> None:
        with anyio.CancelScope() as self._cron_scope:
            if not self._stopping:
                scripts = [lane.scripts for lane in self._lanes]
                await run_crons(self.queues, scripts, self.settings.reconnect_max.total_seconds())

    # -- the loop -----------------------------------------------------------------------------

    async def _work(self, burst: bool) -> None:
        for lane in self._lanes:
            logger.info(
                "worker %s serving queue %r (concurrency %d, tasks: %s)",
                self.id,
                lane.queue.name,
                self.settings.concurrency,
                ", ".join(lane.queue.tasks),
            )
        try:
            with anyio.CancelScope() as self._lease_scope:
                if not self._stopping:
                    self._offering = not burst and len(self._lanes) == 1
                    await self._lease_loop(burst)
        finally:
            self._offering = False
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.settings.lease.total_seconds()):
                    # After any completion call in flight: none registers the worker again.
                    async with self._offer_lock:
                        for lane in self._lanes:
                            await lane.retire(self.id)
                with anyio.CancelScope() as self._grace_scope:
                    if self._stopping:  # else run() itself was cancelled: no grace
                        self._grace_scope.deadline = (
                            anyio.current_time() + self.settings.shutdown_grace.total_seconds()
                        )
                        await self._until_idle()
                await self._cancel_jobs()

    async def _until_idle(self) -> None:
        while self._busy:
            await self._changed.wait()

    async def _cancel_jobs(self) -> None:
        """Cancel running jobs, which hand their jobs back; abandon those that ignore it."""
        for task in self._jobs:
            task.cancel()
        with anyio.move_on_after(self.settings.cancel_grace.total_seconds()):
            await self._until_idle()
        for slot in list(self._jobs.values()):
            if not slot.abandoned:
                self._give_up(slot)
        for lane in self._lanes:
            await lane.release_leftovers()

    async def _lease_loop(self, burst: bool) -> None:
        """Lease, start, repeat; block on Redis when there is nothing to do."""
        backoff = Backoff(self.settings.reconnect_max.total_seconds())
        await self._prepare_lanes(backoff)
        loop = asyncio.get_running_loop()
        # After jobs came by hand-off, the worker waits again without a lease call until the
        # end of the wait the last lease asked for (its completions register it as idle
        # again, see complete.lua); a wake-up, an alarm, the end of the wait or a time
        # without room (jobs may have gone to ready meanwhile) leases.
        wait_until: float | None = None
        due = False
        settled = False  # burst: nothing found by a lease sent after every completion applied
        while True:
            if self._room() <= 0:
                wait_until = None
                await self._changed.wait()
                continue
            if wait_until is None:
                try:
                    wait_ms, scheduled, leased = await self._lease_round(burst)
                except BrokerError as exc:
                    await backoff.wait(exc)
                    continue
                backoff.reset()
                settled = settled and not leased
                if wait_ms == 0:
                    continue  # more jobs are ready than we had room for
                if burst and not leased and not self._busy and scheduled == 0:
                    if not settled:
                        # Completions buffered, or sent but not yet applied when this lease
                        # went out, may let go jobs that a gate holds: record them all, then
                        # look once more.
                        await self._flush_now()
                        settled = True
                        continue
                    return
                timeout = self.settings.max_idle_wait.total_seconds()
                due = 0 < wait_ms / 1000 < timeout
                if due:
                    timeout = wait_ms / 1000
                wait_until = loop.time() + timeout
            timeout = wait_until - loop.time()
            if timeout <= 0:
                wait_until = None
                continue
            try:
                handed = await self._waits.wait(
                    timeout,
                    worker_id=self.id,
                    inbox=not burst and len(self._lanes) == 1,
                    due=due,
                    also=self._changed.wait() if burst and self._busy else None,
                    room=max(1, self._room()),
                )
            except BrokerError as exc:
                wait_until = None
                await backoff.wait(exc)
                continue
            if not (handed and self._offering):
                wait_until = None
            await self._start_handed(handed)

    async def _prepare_lanes(self, backoff: Backoff) -> None:
        """Check each queue's server and publish what workers share, retrying while Redis is
        away."""
        for lane in self._lanes:
            while True:
                try:
                    await lane.queue.check_server()
                    await lane.set_task_limits()
                    await lane.scripts.publish_entry()
                    if self._runs_crons:
                        await record_crons(lane.queue, lane.scripts)
                    break
                except BrokerError as exc:
                    await backoff.wait(exc)

    async def _start_handed(self, handed: list[LeasedJob]) -> None:
        """Start the jobs an idle wait brought, and let them start before the next lease."""
        if handed:
            for job in handed:
                self._start(job)
            await anyio.lowlevel.checkpoint()

    async def _lease_round(self, burst: bool) -> tuple[int, int, bool]:
        """Lease from the first lane (in strategy order) that has jobs to give.

        Returns the shortest wait any lane asked for (0: jobs are left to take now), how many
        jobs all lanes have scheduled, and whether anything was leased.
        """
        # Hand-offs would let every queue fill the same free slots: only for one queue.
        idle_ms = 0 if burst or len(self._lanes) > 1 else to_ms(self.settings.max_idle_wait)
        wait = -1
        scheduled = 0
        self._rounds += 1
        for lane in lease_order(self._groups, self.strategy, self._random, self._rounds):
            free = self._room()
            self._lease_seq += 1
            # Shielded: a stop that cut the reply off would leave the jobs it leased active,
            # unseen, until their leases expire. Jobs that come in while stopping are handed
            # back with the rest.
            with anyio.CancelScope(shield=True):
                async with self._offer_lock:
                    lane_wait, lane_scheduled, leased = await lane.lease(
                        self.settings,
                        self.id,
                        f"{self.id}:{self._lease_seq}",
                        free,
                        idle_ms,
                        self._slots() if self._offering else None,
                    )
            scheduled += lane_scheduled
            for job in leased:
                self._start(job)
            if leased:
                # Let the new jobs start before this task spends time sending the next command.
                await anyio.lowlevel.checkpoint()
                # With several queues, look at the others before blocking: the wake-up that
                # brought us here may have been meant for one of them.
                return (lane_wait if len(self._lanes) == 1 else 0), scheduled, True
            if lane_wait >= 0 and (wait < 0 or lane_wait < wait):
                wait = lane_wait
        return wait, scheduled, False

    def _room(self) -> int:
        """How many jobs to lease now: free slots, plus the prefetch allowance (see
        ``WorkerSettings.prefetch``) less the jobs already waiting for a slot."""
        room = self._slots()
        if self.settings.prefetch and self._ended:
            since = asyncio.get_running_loop().time() - _PREFETCH_WINDOW
            recent = 0
            for at in reversed(self._ended):
                if at < since:
                    break
                recent += 1
            room += recent
        return room

    def _start(self, job: LeasedJob) -> None:
        """Run a leased job now, or once a slot frees up."""
        self._lane_of[id(job.queue)].book.took(job)
        if self._busy < self.settings.concurrency and not self._stopping:
            self._launch(job)
        else:
            self._waiting.append(job)

    def _launch(self, job: LeasedJob) -> None:
        self._busy += 1
        loop = asyncio.get_running_loop()
        slot = JobSlot(job, started_at=time.time())
        slot.task = task = loop.create_task(self._executor.run(slot))
        timeout_ms = job_timeout_ms(job.queue, job)
        if timeout_ms is not None:
            due = self._deadlines.add(loop, slot, timeout_ms / 1000)
            slot.abandon_at = due + self.settings.cancel_grace.total_seconds()
        self._jobs[task] = slot
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        slot = self._jobs.pop(task)
        self._deadlines.remove(slot)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("job %s: the worker failed running it", slot.job.id, exc_info=exc)
        if not slot.abandoned:
            self._free_slot()

    def _free_slot(self) -> None:
        self._busy -= 1
        self._processed += 1
        self._ended.append(asyncio.get_running_loop().time())
        if self._waiting and not self._stopping:
            self._launch(self._waiting.popleft())
        self._changed.set()
        self._changed = asyncio.Event()

    def _give_up(self, slot: JobSlot) -> None:
        """Stop waiting for a handler that ignored cancellation: free its slot."""
        slot.abandoned = True
        self._abandoned += 1
        self._free_slot()
        logger.error(
            "job %s (%s) ignored cancellation for %ss: abandoned; its handler may still be "
            "running in this process",
            slot.job.id,
            slot.job.task,
            self.settings.cancel_grace.total_seconds(),
        )

    async def _watchdog_loop(self) -> None:
        grace = self.settings.cancel_grace.total_seconds()
        while True:
            await anyio.sleep(min(1.0, grace / 2))
            now = asyncio.get_running_loop().time()
            for slot in list(self._jobs.values()):
                if slot.abandon_at is not None and now > slot.abandon_at and not slot.abandoned:
                    self._give_up(slot)
                    error = f"timed out and ignored cancellation for {grace}s: abandoned"
                    task = slot.job.queue.tasks.get(slot.job.task)
                    with anyio.CancelScope(shield=True):
                        await self._executor.record_failure(slot.job, error, task)

    # -- recording completions ------------------------------------------------------------

    def _completions_waiting(self) -> None:
        self._done_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._done_ready.wait()
            self._done_ready = anyio.Event()
            # Shielded so that stopping never cuts a completion call in half; bounded so that
            # a Redis outage cannot hold the worker past the point where leases expire.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.settings.lease.total_seconds()
                await self._flush_now()
            if any(lane.book.done for lane in self._lanes):
                # Redis stayed away past the bound: keep trying, while the heartbeat keeps
                # the leases of these finished jobs alive.
                self._done_ready.set()

    async def _flush_now(self) -> None:
        """Record every buffered completion, one call per queue, retrying while Redis is away.

        Under a lock, so that the final flush at shutdown waits for one in flight.
        """
        async with self._flush_lock:
            backoff = Backoff(self.settings.reconnect_max.total_seconds())
            for lane in self._lanes:
                while lane.book.done:
                    try:
                        await self._flush_lane(lane)
                    except BrokerError as exc:
                        await backoff.wait(exc)

    async def _flush_lane(self, lane: Lane) -> None:
        """One completion call; while offering, and unless a lease call is in flight (whose
        jobs are not counted yet), it registers the worker as idle for its free slots."""
        if not self._offering or self._offer_lock.locked():
            await lane.flush()
            return
        async with self._offer_lock:
            await lane.flush(self._idle_offer())

    def _slots(self) -> int:
        """Free slots: no job running in them or leased ahead for them."""
        return self.settings.concurrency - self._busy - len(self._waiting)

    def _idle_offer(self) -> tuple[str, int, int, int, int] | None:
        """The idle registration a completion call makes, while slots are free."""
        # At most a lease's worth, as a lease takes: a worker offered every free slot takes
        # all the jobs of its clients in one go, and they then wait for each other.
        free = min(self._slots(), self.settings.lease_batch)
        if free <= 0 or self._stopping:
            return None
        return idle_offer(self.settings, self.id, free)

    # -- heartbeats, signals ------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat.total_seconds()
        failing = False
        while True:
            for lane in self._lanes:
                try:
                    await self._heartbeat(lane)
                except BrokerError as exc:
                    # Once per outage: the lease loop's backoff logs the outage itself.
                    log = logger.debug if failing else logger.warning
                    log("heartbeat failed, leases not extended: %s", exc)
                    failing = True
                else:
                    failing = False
            await anyio.sleep(interval)

    async def _heartbeat(self, lane: Lane) -> None:
        queue = lane.queue
        jobs = [
            RunningJob(
                id=slot.job.id,
                task=slot.job.task,
                started_at=datetime.fromtimestamp(slot.started_at, UTC),
            )
            for slot in self._jobs.values()
            if slot.job.queue is queue and not slot.abandoned
        ]
        beat = WorkerHeartbeat(
            id=self.id,
            queue=queue.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            concurrency=self.settings.concurrency,
            active=len(jobs),
            prefetched=sum(1 for job in self._waiting if job.queue is queue),
            processed=self._processed,
            failed=self._executor.failed,
            crons=sorted(queue.crons) if self._runs_crons else [],
            jobs=jobs,
        )
        aborting = await lane.extend(self.settings, beat)
        if aborting:
            wanted = set(aborting)
            for slot in self._jobs.values():
                job = slot.job
                if job.queue is lane.queue and job.id in wanted and not slot.aborted:
                    logger.info("job %s (%s): aborting, as asked", job.id, job.task)
                    slot.abort()

    async def _signal_loop(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stopping:
                    logger.warning("second signal (%s): stopping now", signal.Signals(signum).name)
                    self.kill()
                else:
                    logger.info(
                        "%s: finishing running jobs (grace %ss), then stopping",
                        signal.Signals(signum).name,
                        self.settings.shutdown_grace.total_seconds(),
                    )
                    self.stop()


_PREFETCH_WINDOW = 0.1
"""Seconds of finished jobs that the prefetch allowance counts (see ``Worker._room``)."""


def _check_queues(queue: Queue | Sequence[Queue]) -> list[Queue]:
    queues = [queue] if isinstance(queue, Queue) else list(queue)
    if not queues:
        raise ConfigurationError("Worker() needs at least one queue")
    for q in queues:
        if not isinstance(q, Queue):
            raise TypeError(f"Worker() takes a Queue or a list of them, not {type(q).__name__}")
    prefixes = [shard._broker.keys.prefix for q in queues for shard in q.shards]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigurationError(f"Worker() was given the same queue twice: {prefixes}")
    return queues


def _served(
    queues: list[Queue], weights: Sequence[int] | None
) -> tuple[list[Queue], list[int], list[int]]:
    """The queues a worker serves, a sharded one as its shards (one lane each, taken from in
    turn), with their weights and the index of the queue given that each stands for."""
    weights = list(weights) if weights is not None else [1] * len(queues)
    if len(weights) != len(queues) or not all(
        isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in weights
    ):
        raise ConfigurationError(
            f"weights must be one positive integer per queue ({len(queues)}), not {weights!r}"
        )
    groups = [i for i, q in enumerate(queues) for _ in q.shards]
    served = [shard for q in queues for shard in q.shards]
    return served, [weights[i] for i in groups], groups


def _unique(hooks: list[Hook]) -> list[Hook]:
    """Hooks in order, each once (several queues may share one)."""
    seen: set[int] = set()
    kept = []
    for hook in hooks:
        if id(hook) not in seen:
            seen.add(id(hook))
            kept.append(hook)
    return kept


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to raise for a task group's: the first that is not a cancellation."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    for leaf in leaves:
        if not isinstance(leaf, asyncio.CancelledError):
            return leaf
    return leaves[0] if leaves else group
