"""``Worker``: leases jobs from one queue and runs them.

The worker's own loops (lease, flush, heartbeat, watchdog, signals) run in one anyio task
group. Each job runs in a plain asyncio task of its own: spawning one costs a fifth of an
anyio ``start_soon`` (the largest per-job cost we measured), and a job outside the task group
can be abandoned when its handler ignores cancellation, instead of holding the worker hostage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from queue_async._encode import encode_job
from queue_async._redis import translate_errors
from queue_async._runner import (
    JobSlot,
    LeasedJob,
    handed_job,
    job_timeout_ms,
    parse_lease,
    record_failure,
    run_job,
)
from queue_async._scripts import Arg
from queue_async.cron import CronSchedule, tick_ms
from queue_async.exceptions import BrokerConnectionError
from queue_async.models import WorkerHeartbeat
from queue_async.options import WorkerSettings, parse_rate, to_ms
from queue_async.queue import Hook, Middleware, Queue

__all__ = ["Worker"]

logger = logging.getLogger("queue_async.worker")


class Worker:
    """Runs the jobs of one queue.

    ``await worker.run()`` until SIGTERM/SIGINT (or cancellation); ``await
    worker.run(burst=True)`` until nothing is ready or scheduled; ``async with Worker(queue)``
    runs it in the background (e.g. in a FastAPI lifespan) and stops it gracefully on exit.

    Args:
        queue: the queue whose jobs to run; its registered tasks are the handlers.
        concurrency: jobs running at once (shortcut for ``settings.concurrency``).
        settings: every other knob; see ``WorkerSettings``. Keyword overrides win.
        on_startup / on_shutdown: ``async def hook(state)`` run before the first job and after
            the last, besides the queue's own hooks; ``state`` is shared with every job's
            ``ctx.state``.
        middleware: ``async def mw(ctx, call_next)`` around every job, after the queue's own
            (see ``Queue.middleware``).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int | None = None,
        settings: WorkerSettings | None = None,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        middleware: Iterable[Middleware] = (),
        **overrides: Any,
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"Worker() takes a Queue, not {type(queue).__name__}")
        if concurrency is not None:
            overrides["concurrency"] = concurrency
        base = settings.model_dump() if settings else {}
        self.settings = WorkerSettings.model_validate({**base, **overrides})
        self.queue = queue
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state: dict[str, Any] = {}
        self.limiter = anyio.CapacityLimiter(self.settings.concurrency)
        self._startup_hooks = [*queue.startup_hooks, *on_startup]
        self._shutdown_hooks = [*queue.shutdown_hooks, *on_shutdown]
        self.middleware: tuple[Middleware, ...] = (*queue.middlewares, *middleware)
        self._running: dict[
            str, str
        ] = {}  # leases held (running or awaiting completion): id -> token
        self._busy = 0  # slots taken: jobs running, not counting abandoned ones
        self._jobs: dict[asyncio.Task[None], JobSlot] = {}
        self.abandoned = 0
        """Handlers abandoned because they ignored cancellation (they may still be running)."""
        self._processed = 0
        self._done: list[Arg] = []
        self._finishing: set[str] = set()  # ids whose completion is buffered or being sent
        self._done_ready = anyio.Event()
        self._flush_lock = anyio.Lock()
        self._changed = anyio.Event()
        self._stopping = False
        self._lease_scope: anyio.CancelScope | None = None
        self._grace_scope: anyio.CancelScope | None = None
        self._started_at = datetime.now(UTC)
        self._lease_seq = 0
        self._ran = False
        self._background: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.id} on {self.queue!r}>"

    # -- public control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: lease nothing more, let running jobs finish within the grace period,
        then cancel the rest and hand them back to the queue."""
        self._stopping = True
        if self._lease_scope is not None:
            self._lease_scope.cancel()

    def kill(self) -> None:
        """Stop now: cancel running jobs and hand them back to the queue at once."""
        self.stop()
        if self._grace_scope is not None:
            self._grace_scope.cancel()
        for task in self._jobs:
            task.cancel()

    async def __aenter__(self) -> Worker:
        self._background = anyio.create_task_group()
        await self._background.__aenter__()
        self._background.start_soon(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._background is not None
        self.stop()
        return await self._background.__aexit__(exc_type, exc, tb)

    async def run(self, *, burst: bool = False, handle_signals: bool | None = None) -> None:
        """Run until stopped; with ``burst=True``, until nothing is ready or scheduled.

        Args:
            burst: return once the queue has nothing ready or scheduled and no job runs.
            handle_signals: stop gracefully on SIGTERM/SIGINT (a second signal: at once).
                Default: only when running in the main thread and not under ``async with``.
        """
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new one")
        self._ran = True
        if handle_signals is None:
            handle_signals = (
                self._background is None and threading.current_thread() is threading.main_thread()
            )
        for hook in self._startup_hooks:
            await hook(self.state)
        try:
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._flush_loop)
                loops.start_soon(self._heartbeat_loop)
                loops.start_soon(self._watchdog_loop)
                if self.queue.crons and not burst:
                    loops.start_soon(self._cron_loop)
                if handle_signals:
                    loops.start_soon(self._signal_loop)
                await self._work(burst)
                # Completions still buffered or in flight are recorded before we go; past the
                # lease length there is no point: the jobs are being recovered anyway.
                with anyio.CancelScope(shield=True) as final:
                    final.deadline = anyio.current_time() + self.settings.lease.total_seconds()
                    await self._flush_now()
                    await self._deregister()
                loops.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for hook in self._shutdown_hooks:
                    await hook(self.state)
        logger.info("worker %s stopped after %d jobs", self.id, self._processed)

    # -- the loop -----------------------------------------------------------------------------

    async def _work(self, burst: bool) -> None:
        logger.info(
            "worker %s serving queue %r (concurrency %d, tasks: %s)",
            self.id,
            self.queue.name,
            self.settings.concurrency,
            ", ".join(self.queue.tasks),
        )
        try:
            with anyio.CancelScope() as self._lease_scope:
                if not self._stopping:
                    await self._lease_loop(burst)
        finally:
            with anyio.CancelScope(shield=True):
                await self._retire()
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
        await self._release_leftovers()

    async def _release_leftovers(self) -> None:
        """Hand back every lease we hold that no completion is waiting to record: jobs whose
        handlers were abandoned, and jobs cancelled before their first step."""
        pairs: list[Arg] = []
        for job_id, token in list(self._running.items()):
            if job_id not in self._finishing:
                pairs += [job_id, token]
                del self._running[job_id]
        if not pairs:
            return
        try:
            await self.queue.scripts.release(pairs)
        except BrokerConnectionError as exc:
            logger.warning(
                "could not hand back %d jobs (%s): they are recovered when their leases expire",
                len(pairs) // 2,
                exc,
            )

    async def _lease_loop(self, burst: bool) -> None:
        """Lease, start, repeat; block on Redis when there is nothing to do."""
        backoff = _Backoff(self.settings.reconnect_max.total_seconds())
        while True:
            try:
                await self._set_task_limits()
                break
            except BrokerConnectionError as exc:
                await backoff.wait(exc)
        while True:
            free = self.settings.concurrency - self._busy
            if free <= 0:
                await self._changed.wait()
                continue
            try:
                wait_ms, scheduled, leased = await self._lease(free, burst)
            except BrokerConnectionError as exc:
                await backoff.wait(exc)
                continue
            backoff.reset()
            for job in leased:
                self._start(job)
            if leased:
                # Let the new jobs start before this task spends time sending the next command.
                await anyio.lowlevel.checkpoint()
            if wait_ms == 0:
                continue  # more jobs are ready than we had room for
            if burst and not leased and not self._busy and scheduled == 0:
                return
            timeout = self.settings.max_idle_wait.total_seconds()
            if wait_ms > 0:
                timeout = min(timeout, wait_ms / 1000)
            try:
                handed = await self._idle_wait(timeout, burst=burst)
            except BrokerConnectionError as exc:
                await backoff.wait(exc)
                continue
            if handed is not None:
                self._start(handed)
                await anyio.lowlevel.checkpoint()

    async def _set_task_limits(self) -> None:
        """Store this worker's task limits where every worker's lease.lua reads them (the last
        worker to start wins), and clear limits its tasks no longer have."""
        for task in self.queue.tasks.values():
            opts = task.task_options
            rate = ""
            if opts.rate_limit is not None:
                jobs, period_ms = parse_rate(opts.rate_limit)
                rate = f"{jobs}:{period_ms}"
            limit = "" if opts.max_concurrency is None else str(opts.max_concurrency)
            await self.queue.scripts.set_limits(task.name, limit, rate)

    async def _lease(self, free: int, burst: bool) -> tuple[int, int, list[LeasedJob]]:
        s = self.settings
        self._lease_seq += 1
        reply = await self.queue.scripts.lease(
            min(free, s.lease_batch),
            to_ms(s.lease),
            f"{self.id}:{self._lease_seq}",
            self.id,
            s.max_stalls,
            to_ms(s.dead_max_age),
            s.dead_max_len,
            # Burst workers are not handed jobs: they leave as soon as the queue is empty.
            0 if burst else to_ms(s.max_idle_wait),
        )
        return parse_lease(reply)

    def _start(self, job: LeasedJob) -> None:
        self._running[job.id] = job.token
        self._busy += 1
        loop = asyncio.get_running_loop()
        slot = JobSlot(job)
        slot.task = task = loop.create_task(run_job(self, slot))
        timeout_ms = job_timeout_ms(self.queue, job)
        if timeout_ms is not None:
            due = loop.time() + timeout_ms / 1000
            slot.timer = loop.call_at(due, slot.time_out)
            slot.abandon_at = due + self.settings.cancel_grace.total_seconds()
        self._jobs[task] = slot
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        slot = self._jobs.pop(task)
        if slot.timer is not None:
            slot.timer.cancel()
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("job %s: the worker failed running it", slot.job.id, exc_info=exc)
        if not slot.abandoned:
            self._free_slot()

    def _free_slot(self) -> None:
        self._busy -= 1
        self._processed += 1
        self._changed.set()
        self._changed = anyio.Event()

    def _give_up(self, slot: JobSlot) -> None:
        """Stop waiting for a handler that ignored cancellation: free its slot."""
        slot.abandoned = True
        self.abandoned += 1
        self._free_slot()
        logger.error(
            "job %s (%s) ignored cancellation for %ss: abandoned; its handler may still be "
            "running in this process",
            slot.job.id,
            slot.job.task,
            self.settings.cancel_grace.total_seconds(),
        )

    async def _cron_loop(self) -> None:
        """Fire every cron tick (cron.lua lets the first worker's through, once)."""
        schedules = list(self.queue.crons.values())
        now = datetime.now(UTC)
        for schedule in schedules:
            if schedule.run_missed:
                await self._fire(schedule, schedule.last_tick(now))
        due = {s.name: s.next_tick(now) for s in schedules}
        while True:
            name, tick = min(due.items(), key=lambda item: item[1])
            await anyio.sleep(max(0.0, (tick - datetime.now(UTC)).total_seconds()))
            schedule = self.queue.crons[name]
            due[name] = schedule.next_tick(tick)
            await self._fire(schedule, tick, give_up_at=due[name])

    async def _fire(
        self, schedule: CronSchedule, tick: datetime, give_up_at: datetime | None = None
    ) -> None:
        """Enqueue one tick's job; while Redis is away, retry until the next tick is due."""
        spec = schedule.task.options(job_id=schedule.job_id(tick)).call(
            *schedule.args, **schedule.kwargs
        )
        job_id, task, payload, options = encode_job(
            self.queue.codec, self.queue.max_payload_bytes, spec
        )
        assert isinstance(payload, bytes)
        assert isinstance(options, bytes)
        backoff = _Backoff(self.settings.reconnect_max.total_seconds())
        while True:
            try:
                added = await self.queue.scripts.cron_tick(
                    schedule.name,
                    tick_ms(tick),
                    str(job_id),
                    str(task),
                    payload,
                    options,
                )
            except BrokerConnectionError as exc:
                if give_up_at is not None and datetime.now(UTC) >= give_up_at:
                    logger.error(  # noqa: TRY400 - a lost connection's traceback says nothing
                        "cron %s: tick %s lost, Redis unreachable", schedule.name, tick
                    )
                    return
                await backoff.wait(exc)
                continue
            if added:
                logger.info("cron %s: enqueued tick %s as job %s", schedule.name, tick, job_id)
            return

    async def _watchdog_loop(self) -> None:
        interval = min(1.0, self.settings.cancel_grace.total_seconds() / 2)
        while True:
            await anyio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for slot in list(self._jobs.values()):
                if slot.abandon_at is not None and now > slot.abandon_at and not slot.abandoned:
                    self._give_up(slot)
                    error = (
                        f"timed out and ignored cancellation for "
                        f"{self.settings.cancel_grace.total_seconds()}s: abandoned"
                    )
                    with anyio.CancelScope(shield=True):
                        await record_failure(
                            self, slot.job, error, self.queue.tasks.get(slot.job.task)
                        )

    async def _idle_wait(self, seconds: float, *, burst: bool) -> LeasedJob | None:
        """Block on Redis (never a sleep loop) for at most ``seconds``.

        A worker blocks on its inbox, where enqueue.lua hands it new jobs already leased to
        it (returned here, to start at once), and on the queue's wake list (a marker: more
        jobs are ready, or the next due time moved). A burst worker has no inbox, and also
        wakes when one of its jobs ends, to see whether it is done.
        """
        keys = self.queue.keys
        if not burst:
            with translate_errors("waiting for jobs"):
                popped = await self.queue.client.blpop(
                    [keys.inbox(self.id), keys.wake], timeout=max(seconds, 0.001)
                )
            if popped is not None and popped[0] != keys.wake.encode():
                packed = popped[1]
                return handed_job(packed if isinstance(packed, bytes) else packed.encode())
            return None
        changed = self._changed
        async with anyio.create_task_group() as race:

            async def job_ended() -> None:
                await changed.wait()
                race.cancel_scope.cancel()

            if self._busy:
                race.start_soon(job_ended)
            with translate_errors("waiting for jobs"):
                await self.queue.client.blpop([keys.wake], timeout=max(seconds, 0.001))
            race.cancel_scope.cancel()
        return None

    # -- outcomes, called by the runner ------------------------------------------------------

    def completed(self, job: LeasedJob, result: bytes, keep_ms: int) -> None:
        """Queue a completion for the next batched ``complete`` call."""
        self._done.extend((job.id, job.token, result, keep_ms))
        self._finishing.add(job.id)
        self._done_ready.set()

    def released(self, job: LeasedJob) -> None:
        """The job's lease is no longer ours (failed, handed back, or completed)."""
        if self._running.get(job.id) == job.token:
            del self._running[job.id]

    async def _flush_loop(self) -> None:
        while True:
            await self._done_ready.wait()
            self._done_ready = anyio.Event()
            # Shielded so that stopping never cuts a completion call in half; bounded so that
            # a Redis outage cannot hold the worker past the point where leases expire.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.settings.lease.total_seconds()
                await self._flush_now()
            if self._done:
                # Redis stayed away past the bound: keep trying, while the heartbeat keeps
                # the leases of these finished jobs alive.
                self._done_ready.set()

    async def _flush_now(self) -> None:
        """Record every buffered completion in one call, retrying while Redis is away.

        Under a lock, so that the final flush at shutdown waits for one in flight.
        """
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        backoff = _Backoff(self.settings.reconnect_max.total_seconds())
        while self._done:
            batch, self._done = self._done, []
            try:
                flags = await self.queue.scripts.complete(batch)
            except BrokerConnectionError as exc:
                self._done[:0] = batch
                await backoff.wait(exc)
                continue
            except BaseException:
                self._done[:0] = batch  # cancelled mid-call: try again at the next flush
                raise
            for index, ok in enumerate(flags):
                job_id, token = str(batch[index * 4]), str(batch[index * 4 + 1])
                self._finishing.discard(job_id)
                if self._running.get(job_id) == token:
                    del self._running[job_id]
                if not ok:
                    logger.warning(
                        "job %s finished but its lease was lost (it was recovered and may have "
                        "run again elsewhere); this result was not recorded",
                        job_id,
                    )

    # -- heartbeats, signals ------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat.total_seconds()
        while True:
            try:
                await self._heartbeat()
            except BrokerConnectionError as exc:
                logger.warning("heartbeat failed, leases not extended: %s", exc)
            await anyio.sleep(interval)

    async def _heartbeat(self) -> None:
        beat = WorkerHeartbeat(
            id=self.id,
            queue=self.queue.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            concurrency=self.settings.concurrency,
            running=list(self._running),
            processed=self._processed,
        )
        pairs: list[Arg] = [x for item in self._running.items() for x in item]
        lost, aborting = await self.queue.scripts.extend(
            to_ms(self.settings.lease),
            self.id,
            beat.model_dump_json().encode(),
            3 * to_ms(self.settings.heartbeat),
            pairs,
        )
        for job_id in lost:
            logger.warning("lease of job %s was lost (recovered after a stall)", job_id)
        if aborting:
            wanted = set(aborting)
            for slot in self._jobs.values():
                if slot.job.id in wanted and not slot.aborted and not slot.abandoned:
                    logger.info("job %s (%s): aborting, as asked", slot.job.id, slot.job.task)
                    slot.abort()

    async def _retire(self) -> None:
        """Leave the idle rotation and hand back jobs handed to us but not taken."""
        try:
            with anyio.fail_after(self.settings.lease.total_seconds()):
                await self.queue.scripts.retire(self.id)
        except (BrokerConnectionError, TimeoutError) as exc:
            logger.warning(
                "could not retire from the idle rotation (%s): jobs handed to this "
                "worker will be recovered when their leases expire",
                exc,
            )

    async def _deregister(self) -> None:
        try:
            async with self.queue.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.queue.keys.worker(self.id))
                pipe.zrem(self.queue.keys.workers, self.id)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - best effort: the heartbeat expires anyway
            logger.debug("could not deregister worker %s: %s", self.id, exc)

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


class _Backoff:
    """Capped exponential waits between tries to reach Redis again."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.05
        self.failing = False

    def reset(self) -> None:
        if self.failing:
            logger.info("Redis is reachable again")
        self.delay = 0.05
        self.failing = False

    async def wait(self, exc: BaseException) -> None:
        if not self.failing:
            logger.warning("Redis unreachable (%s); retrying with backoff up to %ss", exc, self.cap)
        self.failing = True
        await anyio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)
