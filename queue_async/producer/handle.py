"""``JobHandle``: what enqueue returns; reads a job's state and waits for its result."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

from queue_async.exceptions import JobAborted, JobCancelled, JobFailed, JobNotFound
from queue_async.models import FINAL_STATES, Job, JobStatus

if TYPE_CHECKING:
    from queue_async.broker.broker import Outcome
    from queue_async.producer.queue import Queue

__all__ = ["JobHandle"]

R = TypeVar("R")


class JobHandle(Generic[R]):
    """A job that was enqueued: its id, and ways to read, await and cancel it."""

    __slots__ = ("_flagged", "existing", "id", "queue")

    def __init__(self, queue: Queue, job_id: str, *, existing: bool = False) -> None:
        self.queue = queue
        self.id = job_id
        # Set by the enqueue that made the handle when it flagged the job as awaited (see
        # producer/waiters.py).
        self._flagged = False
        self.existing = existing
        """True when the enqueue that returned this handle added no job: a job with its
        ``job_id`` existed (in any state, finished too, unless ``replace`` applied), or its
        unique key was held (the handle names the holder). False for a new job, and for
        handles made by ``queue.job(id)``."""

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} on queue {self.queue.name!r}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, JobHandle)
            and other.id == self.id
            and other.queue.key_prefix == self.queue.key_prefix
        )

    def __hash__(self) -> int:
        return hash((self.queue.key_prefix, self.id))

    async def info(self) -> Job:
        """A snapshot of the job. Raises ``JobNotFound`` if it does not exist (any more)."""
        job = await self.queue.read_job(self.id)
        if job is None:
            raise JobNotFound(
                f"job {self.id} does not exist (or its result expired)", job_id=self.id
            )
        return job

    async def status(self) -> JobStatus | None:
        """The job's status, or ``None`` if it does not exist (any more)."""
        return await self.queue.job_status(self.id)

    async def cancel(self) -> bool:
        """Cancel the job if it has not started: it will never run. Returns True if it was
        cancelled by this call; False if it already started, finished or does not exist."""
        return await self.queue.cancel(self.id)

    async def abort(self) -> bool:
        """Stop the job whether or not it started: a job not started is cancelled; a running
        one is cancelled by its worker at the worker's next heartbeat and ends as aborted,
        without a retry. Returns False if it already finished or does not exist."""
        return await self.queue.abort(self.id)

    async def result(self, timeout: float | timedelta | None = None) -> R:
        """Wait for the job to finish and return its result.

        The finishing worker wakes this call through the queue's one shared subscription
        (pub/sub); nothing polls, and any number of concurrent waiters in a process share
        one connection.

        Raises:
            JobFailed: the job went to dead; ``.error`` has the remote error and traceback.
            JobCancelled: the job was cancelled (``JobAborted``: stopped while running).
            JobTimeout: ``timeout`` passed first (the job keeps going).
            JobNotFound: there is no such job, or it finished and its result is not kept
                (any more): with ``keep_result=0``, always once the job has finished.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        deadline = None if seconds is None else time.monotonic() + seconds
        flagged = self._flagged
        while True:
            found, outcome = await self.queue.wait_finished(self.id, seconds, flagged=flagged)
            flagged = False
            if not found:
                raise JobNotFound(
                    f"job {self.id} does not exist (or it finished and its result is not kept)",
                    job_id=self.id,
                )
            if outcome is None:  # not carried by the announcement: read it
                outcome = await self.queue.read_outcome(self.id)
            if outcome is None:
                raise JobNotFound(
                    f"job {self.id} finished and its result is not kept "
                    "(keep_result=0, or it expired)",
                    job_id=self.id,
                )
            if outcome.state in FINAL_STATES:
                return self._result_of(outcome)
            # Requeued between its end and this read (an operator's retry): wait again.
            if deadline is not None:
                seconds = max(0.0, deadline - time.monotonic())

    def _result_of(self, outcome: Outcome) -> R:
        state, task = outcome.state, outcome.task
        if state == "done":
            if outcome.result is None:
                return None  # type: ignore[return-value]  # a result not stored (e.g. by a foreign worker)
            try:
                result: R = self.queue.codec.decode(outcome.result)
            except Exception:  # noqa: BLE001 - shown as text, as info() does
                return outcome.result.decode(errors="replace")  # type: ignore[return-value]
            # Back as its task's return annotation says, wherever this handle came from
            # (task.enqueue, by name, queue.job(id)), when the task is registered here.
            known = self.queue.tasks.get(task)
            if known is not None and known.typed.result_type is not None:
                try:
                    typed: R = known.typed.load_result(result)
                except ValueError:  # stored by a worker with another annotation: as it came
                    return result
                return typed
            return result
        if state == "dead":
            error = None if outcome.error is None else outcome.error.decode(errors="replace")
            raise JobFailed(f"job {self.id} ({task}) failed: {error}", job_id=self.id, error=error)
        if state == "aborted":
            raise JobAborted(f"job {self.id} ({task}) was aborted", job_id=self.id)
        raise JobCancelled(f"job {self.id} ({task}) was cancelled", job_id=self.id)
