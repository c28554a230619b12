"""Runs one leased job: decode, call the handler under its timeout, record the outcome.

``Executor`` is all a job needs of its worker: the worker's id and state, its settings, its
handler threads, and the lease book of each queue (where outcomes are written). It knows
nothing of the worker's loops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from queue_async.broker.reconnect import Backoff
from queue_async.broker.wire import FAIL_ABORTED, FAIL_DEAD, unpack_headers
from queue_async.codec import decode_payload
from queue_async.context import JobContext
from queue_async.exceptions import BrokerError, Fatal, Retry
from queue_async.options import WorkerSettings, to_ms
from queue_async.worker.jobs import JobSlot, LeasedJob, job_timeout_ms
from queue_async.worker.retry_delays import exponential_full_jitter
from queue_async.worker.threads import HandlerThreads

if TYPE_CHECKING:
    from queue_async.producer.queue import Middleware
    from queue_async.producer.tasks import Task
    from queue_async.worker.leasing import Lane

__all__ = ["Executor", "retry_delay_ms"]

logger = logging.getLogger("queue_async.worker")

_ERROR_TEXT_MAX = 16_384
_ABORTED_KEEP_MS = 3_600_000  # as a cancelled job's record


class Executor:
    """Runs jobs for one worker and records their outcomes in the lanes' lease books."""

    def __init__(
        self,
        *,
        worker_id: str,
        state: dict[str, Any],
        settings: WorkerSettings,
        threads: HandlerThreads,
        lanes: dict[int, Lane],
        completions_waiting: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.state = state
        self.settings = settings
        self.threads = threads
        self._lanes = lanes
        """Lane by ``id()`` of its queue."""
        self._completions_waiting = completions_waiting
        """Called when a completion is buffered: the worker's flush loop sends it."""
        self.failed = 0
        """Tries whose failure was recorded (retried or gone to dead), for the heartbeat."""

    async def run(self, slot: JobSlot) -> None:
        """Run one job to its end and record the outcome; never raises but on cancellation.

        The worker cancels the task when the job's timeout passes (``slot.timed_out``): a
        plain asyncio cancellation, cheaper per job than an anyio cancel scope (see
        benchmarks/NOTES.md).
        """
        job = slot.job
        queue = job.queue
        task = queue.tasks.get(job.task)
        if task is None:
            error = f"task {job.task!r} is not registered with worker {self.worker_id}"
            await self.record_failure(job, error, None)
            return
        if job.malformed is not None:
            await self.record_failure(job, job.malformed, None)
            return
        try:
            args, kwargs = decode_payload(queue.codec, job.payload)
            headers = unpack_headers(job.headers)
        except ValueError as exc:
            await self.record_failure(job, str(exc), None)
            return

        lane = self._lanes[id(queue)]
        ctx = JobContext(
            job_id=job.id,
            task=job.task,
            attempt=job.attempt,
            queue=queue,
            state=self.state,
            worker_id=self.worker_id,
            enqueued_ms=job.enqueued_ms,
            headers=headers,
            token=job.token,
            _checkin=lane.scripts.checkin,
        )
        try:
            middleware = lane.middleware
            if middleware:
                result = await self._through(middleware, task, ctx, args, kwargs)
            else:
                result = await self._invoke(task, ctx, args, kwargs)
        except asyncio.CancelledError as exc:
            await self._cancelled(slot, task, exc)
        except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the worker
            await self.record_failure(job, _error_text(exc), task, exc)
        else:
            keep_ms = job.keep_ms if job.keep_ms is not None else task.keep_ms
            try:
                encoded = queue.codec.encode(result) if keep_ms > 0 else b""
            except Exception as exc:  # noqa: BLE001 - any codec error fails the try, not the worker
                text = f"the result ({type(result).__name__}) cannot be encoded: {exc!r}"
                await self.record_failure(job, text, None)
                return
            lane.book.completed(job, encoded, keep_ms)
            self._completions_waiting()

    async def _cancelled(
        self, slot: JobSlot, task: Task[Any, Any], exc: asyncio.CancelledError
    ) -> None:
        """The handler's task was cancelled: by its timeout, an abort, the worker stopping
        (the job goes back to the queue, and the cancellation goes on), or by the handler."""
        job = slot.job
        current = asyncio.current_task()
        pending = current.cancelling() if current is not None else 0
        if slot.timed_out or slot.aborted:
            pending = current.uncancel() if current is not None else 0
        if pending:
            with anyio.CancelScope(shield=True):
                await self.hand_back(job)
            raise exc
        if slot.aborted:
            await self.record_failure(job, "aborted while running", None, aborted=True)
        elif slot.timed_out:
            # The traceback shows where the handler was; the last line (what logs show) says
            # why.
            seconds = (job_timeout_ms(job.queue, job) or 0) / 1000
            text = f"{_error_text(exc)}JobTimeout: the try timed out after {seconds:g} s"
            await self.record_failure(job, text, task)
        else:  # the handler raised CancelledError of its own
            await self.record_failure(job, _error_text(exc), task)

    def _through(
        self,
        chain: tuple[Middleware, ...],
        task: Task[Any, Any],
        ctx: JobContext,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """The handler's call wrapped in middleware, the first one outermost."""
        call: Callable[[], Awaitable[Any]] = functools.partial(
            self._invoke, task, ctx, args, kwargs
        )
        for middleware in reversed(chain):
            call = functools.partial(middleware, ctx, call)
        return call()

    async def _invoke(
        self, task: Task[Any, Any], ctx: JobContext, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if task.is_async:
            return await task.run(ctx, *args, **kwargs)
        call = (
            functools.partial(task.fn, ctx, *args, **kwargs)
            if task.takes_context
            else (functools.partial(task.fn, *args, **kwargs))
        )
        return await self.threads.run(ctx.job_id, call)

    async def record_failure(
        self,
        job: LeasedJob,
        error: str,
        task: Task[Any, Any] | None,
        exc: BaseException | None = None,
        *,
        aborted: bool = False,
    ) -> None:
        """Record a failed try: the next try is scheduled, or the job goes to dead.

        ``task`` None means the job cannot run at all (unknown task, bad payload): straight
        to dead. ``aborted``: the job ends as aborted, without a retry.
        """
        delay = FAIL_ABORTED if aborted else retry_delay_ms(job, task, exc)
        settings = self.settings
        lane = self._lanes[id(job.queue)]
        backoff = Backoff(settings.reconnect_max.total_seconds())
        outcome = "unrecorded"
        with lane.book.failing(job), anyio.CancelScope(shield=True) as scope:
            # Retried while Redis is away or refuses, up to the lease: past it the job is
            # being recovered anyway.
            scope.deadline = anyio.current_time() + settings.lease.total_seconds()
            while True:
                try:
                    outcome = await lane.scripts.fail(
                        job.id,
                        job.token,
                        error,
                        delay,
                        to_ms(settings.dead_max_age),
                        settings.dead_max_len,
                        _ABORTED_KEEP_MS,
                    )
                    break
                except BrokerError as refused:
                    await backoff.wait(refused)
        if outcome in ("retry", "dead"):
            self.failed += 1
        if outcome == "unrecorded":
            logger.warning(
                "job %s failed but the failure could not be recorded: Redis stayed away longer "
                "than the lease; the job runs again once its lease expires",
                job.id,
            )
        log = logger.warning if outcome in ("retry", "aborted") else logger.error
        log(
            "job %s (%s) try %d failed -> %s: %s",
            job.id,
            job.task,
            job.attempt,
            outcome,
            error.strip().splitlines()[-1] if error.strip() else error,
        )

    async def hand_back(self, job: LeasedJob) -> None:
        """Return a job interrupted by shutdown to the ready queue at once."""
        lane = self._lanes[id(job.queue)]
        try:
            await lane.scripts.release([job.id, job.token])
        except BrokerError as exc:
            logger.warning(
                "could not hand job %s back (%s); it runs again when its lease expires", job.id, exc
            )
        finally:
            lane.book.released(job)


def retry_delay_ms(job: LeasedJob, task: Task[Any, Any] | None, exc: BaseException | None) -> int:
    """Milliseconds until the next try, or FAIL_DEAD if the job goes to dead."""
    if task is None or isinstance(exc, (Fatal, *task.task_options.fatal)):
        return FAIL_DEAD
    retries = job.retries if job.retries is not None else task.task_options.retries
    if job.attempt > retries:
        return FAIL_DEAD
    if isinstance(exc, Retry) and exc.defer_seconds is not None:
        return round(exc.defer_seconds * 1000)
    opts = task.task_options
    seconds = exponential_full_jitter(
        job.attempt, base=opts.backoff_base.total_seconds(), cap=opts.backoff_cap.total_seconds()
    )
    return round(seconds * 1000)


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= _ERROR_TEXT_MAX else "...\n" + text[-_ERROR_TEXT_MAX:]
