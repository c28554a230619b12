"""Runs one leased job: decode, call the handler under its timeout, record the outcome."""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from queue_async.broker.reconnect import Backoff
from queue_async.broker.wire import (
    FAIL_ABORTED,
    FAIL_DEAD,
    LEASED_FIELDS,
    Leased,
    unpack_fields,
    unpack_headers,
)
from queue_async.codec import decode_payload
from queue_async.context import JobContext
from queue_async.exceptions import BrokerError, Fatal, Retry
from queue_async.options import to_ms
from queue_async.worker.retry_delays import exponential_full_jitter

if TYPE_CHECKING:
    from queue_async.producer.queue import Middleware, Queue
    from queue_async.producer.tasks import Task
    from queue_async.worker.worker import Worker

logger = logging.getLogger("queue_async.worker")

_ERROR_TEXT_MAX = 16_384
_ABORTED_KEEP_MS = 3_600_000  # as a cancelled job's record


@dataclass(slots=True)
class LeasedJob:
    """One job as lease.lua hands it out."""

    id: str
    task: str
    payload: bytes
    attempt: int
    enqueued_ms: int
    retries: int | None
    timeout_ms: int | None
    keep_ms: int | None
    token: str
    headers: bytes
    """Packed (see wire.pack_headers); b"" for none."""
    queue: Queue
    """The queue it came from."""


def _optional_int(raw: bytes) -> int | None:
    return int(raw) if raw else None


def _job(f: list[Any], queue: Queue) -> LeasedJob:
    """A job from its lease fields (see lease.lua)."""
    return LeasedJob(
        id=f[Leased.ID].decode(),
        task=f[Leased.TASK].decode(),
        payload=f[Leased.PAYLOAD],
        attempt=int(f[Leased.ATTEMPTS]),
        enqueued_ms=int(f[Leased.ENQUEUED]),
        retries=_optional_int(f[Leased.RETRIES]),
        timeout_ms=_optional_int(f[Leased.TIMEOUT]),
        keep_ms=_optional_int(f[Leased.KEEP]),
        token=f[Leased.TOKEN].decode(),
        headers=f[Leased.HEADERS],
        queue=queue,
    )


def handed_job(packed: bytes, queue: Queue) -> LeasedJob:
    """A job enqueue.lua handed straight to this worker's inbox."""
    return _job(unpack_fields(packed), queue)


def parse_lease(reply: list[Any], queue: Queue) -> tuple[int, int, list[LeasedJob]]:
    """Split lease.lua's reply into (wait_ms, scheduled count, jobs)."""
    handed = int(reply[2])
    jobs = [handed_job(packed, queue) for packed in reply[3 : 3 + handed]]
    step = LEASED_FIELDS
    jobs.extend(_job(reply[b : b + step], queue) for b in range(3 + handed, len(reply), step))
    return int(reply[0]), int(reply[1]), jobs


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= _ERROR_TEXT_MAX else "...\n" + text[-_ERROR_TEXT_MAX:]


@dataclass(slots=True, eq=False)
class JobSlot:
    """A job running in a worker, in an asyncio task of its own."""

    job: LeasedJob
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    tick: int | None = None
    """Cancel the task when the job's timeout passes (see _deadlines.py)."""
    timed_out: bool = False
    aborted: bool = False
    abandon_at: float | None = None
    """Event-loop time past which a handler that ignores cancellation is abandoned."""
    abandoned: bool = False

    def time_out(self) -> None:
        self.timed_out = True
        if self.task is not None:
            self.task.cancel()

    def abort(self) -> None:
        self.aborted = True
        if self.task is not None:
            self.task.cancel()


def job_timeout_ms(queue: Queue, job: LeasedJob) -> int | None:
    """The job's own timeout, else its task's; None for none."""
    if job.timeout_ms is not None:
        return job.timeout_ms
    task = queue.tasks.get(job.task)
    return None if task is None else task.timeout_ms


async def run_job(worker: Worker, slot: JobSlot) -> None:
    """Run one job to its end and record the outcome; never raises except on cancellation.

    The worker cancels the task when the job's timeout passes (``slot.timed_out``): a plain
    asyncio cancellation, which costs a fifth of an anyio cancel scope per job.
    """
    job = slot.job
    queue = job.queue
    task = queue.tasks.get(job.task)
    if task is None:
        await record_failure(
            worker, job, f"task {job.task!r} is not registered with worker {worker.id}", None
        )
        return
    try:
        args, kwargs = decode_payload(queue.codec, job.payload)
    except ValueError as exc:
        await record_failure(worker, job, str(exc), None)
        return

    lane = worker.lane(queue)
    ctx = JobContext(
        job_id=job.id,
        task=job.task,
        attempt=job.attempt,
        queue=queue,
        state=worker.state,
        worker_id=worker.id,
        enqueued_ms=job.enqueued_ms,
        headers=unpack_headers(job.headers),
        token=job.token,
        _checkin=lane.scripts.checkin,
    )
    try:
        middleware = lane.middleware
        if middleware:
            result = await _through(middleware, worker, task, ctx, args, kwargs)
        else:
            result = await _invoke(worker, task, ctx, args, kwargs)
    except asyncio.CancelledError as exc:
        await _cancelled(worker, slot, task, exc)
    except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the worker
        await record_failure(worker, job, _error_text(exc), task, exc)
    else:
        keep_ms = job.keep_ms if job.keep_ms is not None else task.keep_ms
        try:
            encoded = queue.codec.encode(result) if keep_ms > 0 else b""
        except Exception as exc:  # noqa: BLE001 - any codec error fails the try, never the worker
            text = f"the result ({type(result).__name__}) cannot be encoded: {exc!r}"
            await record_failure(worker, job, text, None)
            return
        worker.completed(job, encoded, keep_ms)


async def _cancelled(
    worker: Worker, slot: JobSlot, task: Task[Any, Any], exc: asyncio.CancelledError
) -> None:
    """The handler's task was cancelled: by its timeout, an abort, the worker stopping (the
    job goes back to the queue, and the cancellation goes on), or by the handler itself."""
    job = slot.job
    current = asyncio.current_task()
    pending = current.cancelling() if current is not None else 0
    if slot.timed_out or slot.aborted:
        pending = current.uncancel() if current is not None else 0
    if pending:
        with anyio.CancelScope(shield=True):
            await hand_back(worker, job)
        raise exc
    if slot.aborted:
        await record_failure(worker, job, "aborted while running", None, aborted=True)
    elif slot.timed_out:
        # The traceback shows where the handler was; the last line (what logs show) says why.
        seconds = (job_timeout_ms(job.queue, job) or 0) / 1000
        text = f"{_error_text(exc)}JobTimeout: the try timed out after {seconds:g} s"
        await record_failure(worker, job, text, task)
    else:  # the handler raised CancelledError of its own
        await record_failure(worker, job, _error_text(exc), task)


def _through(
    chain: tuple[Middleware, ...],
    worker: Worker,
    task: Task[Any, Any],
    ctx: JobContext,
    args: list[Any],
    kwargs: dict[str, Any],
) -> Awaitable[Any]:
    """The handler's call wrapped in middleware, the first one outermost."""
    call: Callable[[], Awaitable[Any]] = functools.partial(_invoke, worker, task, ctx, args, kwargs)
    for middleware in reversed(chain):
        call = functools.partial(middleware, ctx, call)
    return call()


async def _invoke(
    worker: Worker, task: Task[Any, Any], ctx: JobContext, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    if task.is_async:
        return await task.run(ctx, *args, **kwargs)
    call = (
        functools.partial(task.fn, ctx, *args, **kwargs)
        if task.takes_context
        else (functools.partial(task.fn, *args, **kwargs))
    )
    return await worker.threads.run(ctx.job_id, call)


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


async def record_failure(
    worker: Worker,
    job: LeasedJob,
    error: str,
    task: Task[Any, Any] | None,
    exc: BaseException | None = None,
    *,
    aborted: bool = False,
) -> None:
    """Record a failed try: the next try is scheduled, or the job goes to dead.

    ``task`` None means the job cannot run at all (unknown task, bad payload): straight to dead.
    ``aborted``: the job ends as aborted, without a retry.
    """
    delay = FAIL_ABORTED if aborted else retry_delay_ms(job, task, exc)
    settings = worker.settings
    lane = worker.lane(job.queue)
    # While the call is in flight the heartbeat still extends the lease, and a "lost" answer
    # for this job is not news (see Worker._heartbeat).
    lane.finishing.add(job.id)
    backoff = Backoff(settings.reconnect_max.total_seconds())
    with anyio.CancelScope(shield=True) as scope:
        # Retried while Redis is away or refuses, up to the lease: past it the job is being
        # recovered anyway.
        scope.deadline = anyio.current_time() + settings.lease.total_seconds()
        outcome = "unrecorded"
        try:
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
        finally:
            lane.finishing.discard(job.id)
            worker.released(job)
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


async def hand_back(worker: Worker, job: LeasedJob) -> None:
    """Return a job interrupted by shutdown to the ready queue at once."""
    try:
        await worker.lane(job.queue).scripts.release([job.id, job.token])
    except BrokerError as exc:
        logger.warning(
            "could not hand job %s back (%s); it runs again when its lease expires", job.id, exc
        )
    finally:
        worker.released(job)
