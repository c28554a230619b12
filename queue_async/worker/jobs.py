"""A leased job as the worker holds it: parsed from lease.lua's reply or an inbox entry, and
the slot it runs in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queue_async.broker.wire import LEASED_FIELDS, Leased, unpack_fields

if TYPE_CHECKING:
    from queue_async.producer.queue import Queue

__all__ = ["JobSlot", "LeasedJob", "handed_job", "job_timeout_ms", "parse_lease"]


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
    ready_ms: int
    """Since when it waited ready (epoch ms, server clock): its enqueue, its due time, or
    when it was requeued (a retry, a recovery); for the queue-wait figures."""
    queue: Queue
    """The queue it came from."""
    malformed: str | None = None
    """Why the job's stored options cannot be used (written by a producer that did not follow
    the wire format): the job goes to dead with this reason instead of running."""


def _optional_int(raw: bytes) -> int | None:
    return int(raw) if raw else None


def _job(f: list[Any], queue: Queue) -> LeasedJob:
    """A job from its lease fields (see lease.lua)."""
    malformed = None
    try:
        retries = _optional_int(f[Leased.RETRIES])
        timeout_ms = _optional_int(f[Leased.TIMEOUT])
        keep_ms = _optional_int(f[Leased.KEEP])
    except ValueError:
        retries = timeout_ms = keep_ms = None
        malformed = (
            "the job's options are malformed (retries, timeout and keep must be integers, got "
            f"{f[Leased.RETRIES]!r}, {f[Leased.TIMEOUT]!r}, {f[Leased.KEEP]!r})"
        )
    return LeasedJob(
        id=f[Leased.ID].decode(),
        task=f[Leased.TASK].decode(errors="replace"),
        payload=f[Leased.PAYLOAD],
        attempt=int(f[Leased.ATTEMPTS]),
        enqueued_ms=int(f[Leased.ENQUEUED]),
        retries=retries,
        timeout_ms=timeout_ms,
        keep_ms=keep_ms,
        token=f[Leased.TOKEN].decode(),
        headers=f[Leased.HEADERS],
        ready_ms=int(f[Leased.READY] or 0),
        queue=queue,
        malformed=malformed,
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


@dataclass(slots=True, eq=False)
class JobSlot:
    """A job running in a worker, in an asyncio task of its own."""

    job: LeasedJob
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    tick: int | None = None
    """Cancel the task when the job's timeout passes (see deadlines.py)."""
    timed_out: bool = False
    aborted: bool = False
    abandon_at: float | None = None
    """Event-loop time past which a handler that ignores cancellation is abandoned."""
    abandoned: bool = False
    started_at: float = 0.0
    """When the handler's task was started (``time.time()``, the worker's clock), for the
    heartbeat: a float here, as this is set for every job."""
    planned_delay_ms: int | None = None
    """What follows the handler's failure, decided inside the middleware chain (where it is
    logged): ms to the next try, or FAIL_DEAD / FAIL_ABORTED."""

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
