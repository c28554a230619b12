"""Runs one leased job: decode, call the handler under its timeout, record the outcome.

``Executor`` is all a job needs of its worker: the worker's id and state, its settings, its
handler threads, and the lease book of each queue (where outcomes are written). It knows
nothing of the worker's loops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from queue_async.broker.durability import Unconfirmed
from queue_async.broker.reconnect import Backoff
from queue_async.broker.wire import FAIL_ABORTED, FAIL_DEAD, as_text, unpack_headers
from queue_async.codec import Codec, TypedCall, decode_payload
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

__all__ = ["Executor", "JobObserver", "job_extra", "retry_delay_ms"]

logger = logging.getLogger("queue_async.worker")
job_log = logging.getLogger("queue_async.jobs")
"""Every job's start and end, at DEBUG (off unless asked for: at thousands of jobs a
second, a line per job would cost more than the jobs)."""


class JobObserver(Protocol):
    """Told of every try a worker runs (``Worker(observers=[...])``): what metrics build on.
    Both are called on the worker's event loop, for every job: keep them cheap."""

    def job_started(self, ctx: JobContext, waited: float) -> None:
        """A try starts; ``waited``: seconds since the job became ready (its enqueue, due
        time, or requeue), by the worker's clock against the server's."""

    def job_ended(self, ctx: JobContext, outcome: str, duration: float, timed_out: bool) -> None:
        """A try ended: ``outcome`` is "succeeded", "retry", "dead", "aborted", or "lost" /
        "unrecorded" (its failure could not be recorded); ``duration`` in seconds."""


def job_extra(job: LeasedJob, worker_id: str) -> dict[str, Any]:
    """The fields every log record about a job carries (``extra``), for structured logs."""
    return {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue.name,
        "attempt": job.attempt,
        "worker_id": worker_id,
    }


def _last_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.strip().splitlines()[-1] if text.strip() else text


def _fatal(task: Task[Any, Any], exc: BaseException | None) -> bool:
    return isinstance(exc, (Fatal, *task.task_options.fatal))


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
        self.observers: tuple[JobObserver, ...] = ()

    async def run(self, slot: JobSlot) -> None:
        """Run one job to its end and record the outcome; never raises but on cancellation.

        The worker cancels the task when the job's timeout passes (``slot.timed_out``): a
        plain asyncio cancellation, cheaper per job than an anyio cancel scope (see
        benchmarks/NOTES.md).
        """
        job = slot.job
        queue = job.queue
        lane = self._lanes[id(queue)]
        ctx, why = self._start(slot, lane)
        task = queue.tasks.get(job.task)
        if task is None:
            why = f"task {job.task!r} is not registered with worker {self.worker_id}"
        elif why is None:
            try:
                args, kwargs = _arguments(job, task)
            except ValueError as exc:
                why = str(exc)
        if why is not None or task is None:
            await self.record_failure(job, why or "", None, ctx=ctx, slot=slot)
            return
        try:
            middleware = lane.middleware
            if middleware:
                result = await self._through(middleware, slot, task, ctx, args, kwargs)
            else:
                result = await self._watched(slot, task, ctx, args, kwargs)
        except asyncio.CancelledError as exc:
            await self._cancelled(slot, task, ctx, exc)
        except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the worker
            await self.record_failure(job, _error_text(exc), task, exc, ctx=ctx, slot=slot)
        else:
            keep_ms = job.keep_ms if job.keep_ms is not None else task.keep_ms
            try:
                encoded = _encoded(queue.codec, task.typed, result) if keep_ms > 0 else b""
            except Exception as exc:  # noqa: BLE001 - any codec error fails the try, not the worker
                text = f"the result ({type(result).__name__}) cannot be encoded: {_last_line(exc)}"
                await self.record_failure(job, text, None, ctx=ctx, slot=slot)
                return
            lane.book.completed(job, encoded, keep_ms)
            self._completions_waiting()
            if self.observers or job_log.isEnabledFor(logging.DEBUG):
                self._ended(ctx, slot, "succeeded")

    def _start(self, slot: JobSlot, lane: Lane) -> tuple[JobContext, str | None]:
        """The try's context, with the observers and the debug log told; and why the job
        cannot run, if its stored record says so already (malformed options or headers)."""
        job = slot.job
        why = job.malformed
        try:
            headers = unpack_headers(job.headers)
        except ValueError as exc:
            headers, why = {}, why or str(exc)
        ctx = JobContext(
            job_id=job.id,
            task=job.task,
            attempt=job.attempt,
            queue=job.queue.sharded_as,  # a job of a shard belongs to the sharded queue
            state=self.state,
            worker_id=self.worker_id,
            enqueued_ms=job.enqueued_ms,
            headers=headers,
            token=job.token,
            _checkin=lane.scripts.checkin,
        )
        if self.observers:
            waited = max(0.0, slot.started_at - job.ready_ms / 1000)
            for observer in self.observers:
                observer.job_started(ctx, waited)
        if job_log.isEnabledFor(logging.DEBUG):
            job_log.debug(
                "job %s (%s) try %d started",
                job.id,
                job.task,
                job.attempt,
                extra=job_extra(job, self.worker_id),
            )
        return ctx, why

    def _ended(self, ctx: JobContext, slot: JobSlot, outcome: str) -> None:
        """Tell the observers (and the debug log) how a try ended."""
        seconds = max(0.0, time.time() - slot.started_at)
        for observer in self.observers:
            observer.job_ended(ctx, outcome, seconds, slot.timed_out)
        if job_log.isEnabledFor(logging.DEBUG):
            extra = job_extra(slot.job, self.worker_id)
            extra["outcome"], extra["duration"] = outcome, seconds
            job_log.debug(
                "job %s (%s) try %d %s in %.3f s",
                ctx.job_id,
                ctx.task,
                ctx.attempt,
                outcome,
                seconds,
                extra=extra,
            )

    async def _watched(
        self,
        slot: JobSlot,
        task: Task[Any, Any],
        ctx: JobContext,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """The handler's call, innermost in the middleware chain: a failure is decided (retry
        or dead) and logged here, so that the middleware around it sees ``ctx.will_retry``
        and its context variables reach the log record."""
        try:
            return await self._invoke(task, ctx, args, kwargs)
        except asyncio.CancelledError as exc:
            if slot.aborted:
                self._decide(slot, task, ctx, exc, FAIL_ABORTED, "was aborted while running")
            elif slot.timed_out:
                seconds = (job_timeout_ms(slot.job.queue, slot.job) or 0) / 1000
                delay = retry_delay_ms(slot.job, task, exc)
                self._decide(slot, task, ctx, exc, delay, f"timed out after {seconds:g} s")
            raise
        except BaseException as exc:
            self._decide(slot, task, ctx, exc, retry_delay_ms(slot.job, task, exc), None)
            raise

    def _decide(
        self,
        slot: JobSlot,
        task: Task[Any, Any] | None,
        ctx: JobContext,
        exc: BaseException | None,
        delay: int,
        what: str | None,
    ) -> None:
        """Settle what follows a failed try and log it: a retry at WARNING on one line, an
        end at ERROR with the traceback."""
        slot.planned_delay_ms = delay
        ctx.will_retry = delay >= 0
        ctx.retry_in = delay / 1000 if delay >= 0 else None
        job = slot.job
        extra = job_extra(job, self.worker_id)
        if what is None:
            what = "failed: " + _last_line(exc)
        if delay >= 0:
            extra["outcome"] = "retry"
            logger.warning(
                "job %s (%s) try %d %s; retry in %.3g s",
                job.id,
                job.task,
                job.attempt,
                what,
                delay / 1000,
                extra=extra,
            )
        elif delay == FAIL_ABORTED:
            extra["outcome"] = "aborted"
            logger.warning("job %s (%s) %s", job.id, job.task, what, extra=extra)
        else:
            extra["outcome"] = "dead"
            ending = "no tries left" if task is not None and not _fatal(task, exc) else "fatal"
            logger.error(
                "job %s (%s) try %d %s; %s, it goes to dead",
                job.id,
                job.task,
                job.attempt,
                what,
                ending if task is not None else "it cannot run",
                exc_info=exc
                if exc is not None and not isinstance(exc, asyncio.CancelledError)
                else None,
                extra=extra,
            )

    async def _cancelled(
        self, slot: JobSlot, task: Task[Any, Any], ctx: JobContext, exc: asyncio.CancelledError
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
            await self.record_failure(
                job, "aborted while running", None, aborted=True, ctx=ctx, slot=slot
            )
        elif slot.timed_out:
            # The traceback shows where the handler was; the last line (what logs show) says
            # why.
            seconds = (job_timeout_ms(job.queue, job) or 0) / 1000
            text = f"{_error_text(exc)}JobTimeout: the try timed out after {seconds:g} s"
            await self.record_failure(job, text, task, exc, ctx=ctx, slot=slot)
        else:  # the handler raised CancelledError of its own
            await self.record_failure(job, _error_text(exc), task, exc, ctx=ctx, slot=slot)

    def _through(
        self,
        chain: tuple[Middleware, ...],
        slot: JobSlot,
        task: Task[Any, Any],
        ctx: JobContext,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """The handler's call wrapped in middleware, the first one outermost."""
        call: Callable[[], Awaitable[Any]] = functools.partial(
            self._watched, slot, task, ctx, args, kwargs
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
        ctx: JobContext | None = None,
        slot: JobSlot | None = None,
    ) -> None:
        """Record a failed try: the next try is scheduled, or the job goes to dead.

        ``task`` None means the job cannot run at all (unknown task, bad payload): straight
        to dead. ``aborted``: the job ends as aborted, without a retry. What follows was
        decided (and logged) inside the middleware chain when the handler failed there
        (``slot.planned_delay_ms``); otherwise it is decided and logged here.
        """
        planned = slot.planned_delay_ms if slot is not None else None
        if planned is not None:
            delay = planned
        else:
            delay = FAIL_ABORTED if aborted else retry_delay_ms(job, task, exc)
            if slot is not None and ctx is not None:
                self._decide(
                    slot,
                    task,
                    ctx,
                    exc,
                    delay,
                    None
                    if task is not None
                    else "cannot run: " + (error.strip().splitlines() or [""])[-1],
                )
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
                except Unconfirmed as short:
                    outcome = as_text(short.reply)
                    logger.warning(
                        "job %s: its failed try was recorded on the master, but %s: a "
                        "failover now could lose that record (the try would run again)",
                        job.id,
                        short,
                        extra=job_extra(job, self.worker_id),
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
                extra=job_extra(job, self.worker_id),
            )
        elif outcome == "lost":
            logger.warning(
                "job %s failed, but its lease was lost meanwhile (it was recovered and may run "
                "again elsewhere): this failure was not recorded",
                job.id,
                extra=job_extra(job, self.worker_id),
            )
        if (
            ctx is not None
            and slot is not None
            and (self.observers or job_log.isEnabledFor(logging.DEBUG))
        ):
            self._ended(ctx, slot, outcome)

    async def hand_back(self, job: LeasedJob) -> None:
        """Return a job interrupted by shutdown to the ready queue at once."""
        lane = self._lanes[id(job.queue)]
        extra = job_extra(job, self.worker_id)
        try:
            await lane.scripts.release([job.id, job.token])
        except BrokerError as exc:
            logger.warning(
                "could not hand job %s back (%s); it runs again when its lease expires",
                job.id,
                exc,
                extra=extra,
            )
        else:
            logger.info(
                "job %s (%s) try %d was stopped by the shutdown and handed back to the queue",
                job.id,
                job.task,
                job.attempt,
                extra=extra,
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


def _arguments(job: LeasedJob, task: Task[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The job's arguments decoded and fitted to its handler's signature; ``ValueError`` says
    why they cannot be (every try would fail alike, so the job goes to dead at once)."""
    args, kwargs = decode_payload(job.queue.codec, job.payload)
    typed = task.typed
    if typed.as_is(args, kwargs):
        return args, kwargs
    try:
        return typed.load_args(args, kwargs)
    except (TypeError, ValueError) as exc:  # TypeError: Python's own, of binding
        raise ValueError(f"its arguments do not fit {job.task}{typed.signature}: {exc}") from exc


def _encoded(codec: Codec, typed: TypedCall, result: Any) -> bytes:
    """A handler's result for the job record, by its return annotation if it has one."""
    return codec.encode(result if typed.result_type is None else typed.dump_result(result))


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= _ERROR_TEXT_MAX else "...\n" + text[-_ERROR_TEXT_MAX:]
