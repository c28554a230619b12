"""``JobHandle``: what enqueue returns; reads a job's state and waits for its result."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from queue_async._redis import translate_errors
from queue_async.exceptions import JobAborted, JobCancelled, JobFailed, JobNotFound, JobTimeout
from queue_async.models import Job, JobStatus

if TYPE_CHECKING:
    from queue_async.queue import Queue

__all__ = ["JobHandle"]

R = TypeVar("R")


class JobHandle(Generic[R]):
    """A job that was enqueued: its id, and ways to read, await and cancel it."""

    __slots__ = ("id", "queue")

    def __init__(self, queue: Queue, job_id: str) -> None:
        self.queue = queue
        self.id = job_id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} on queue {self.queue.name!r}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, JobHandle)
            and other.id == self.id
            and other.queue.keys == self.queue.keys
        )

    def __hash__(self) -> int:
        return hash((self.queue.keys.prefix, self.id))

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
        keys = self.queue.keys
        with translate_errors("reading a job's state"):
            # A fresh job only ever becomes a job hash (atomically): read in that order.
            async with self.queue.client.pipeline(transaction=False) as pipe:
                pipe.hexists(keys.fresh, self.id)
                pipe.hget(keys.job(self.id), "state")
                fresh, raw = await pipe.execute()
        if fresh:
            return JobStatus.READY
        if raw is None:
            return None
        return JobStatus(raw.decode() if isinstance(raw, bytes) else raw)

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

        The finishing worker wakes this call (pub/sub); nothing polls.

        Raises:
            JobFailed: the job went to dead; ``.error`` has the remote error and traceback.
            JobCancelled: the job was cancelled.
            JobTimeout: ``timeout`` passed first (the job keeps going).
            JobNotFound: there is no such job, or its result has expired.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        queue = self.queue
        channel = queue.keys.done_channel(self.id)
        with translate_errors("waiting for a job's result"):
            async with queue.client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                # Flag the job as awaited only once the server confirmed the subscription
                # (subscribe() only sends it), so that the job's end cannot slip by.
                await self._subscribed(pubsub)
                state = await queue.scripts.watch(self.id)
                if state is None:
                    raise JobNotFound(f"job {self.id} does not exist", job_id=self.id)
                if not JobStatus(state).finished:
                    await self._wait_message(pubsub, seconds)
        return await self._final_result()

    @staticmethod
    async def _subscribed(pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "subscribe":
                return

    async def _wait_message(self, pubsub: Any, seconds: float | None) -> None:
        deadline = math.inf if seconds is None else anyio.current_time() + seconds
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise JobTimeout(
                    f"job {self.id} did not finish within {seconds} seconds", job_id=self.id
                )
            message = await pubsub.get_message(
                ignore_subscribe_messages=True,
                timeout=None if remaining == math.inf else remaining,
            )
            if message is not None and message["type"] == "message":
                return

    async def _final_result(self) -> R:
        job = await self.queue.read_job(self.id)
        if job is None:
            # keep_result=0: the job finished and kept nothing.
            return None  # type: ignore[return-value]
        if job.status is JobStatus.DEAD:
            raise JobFailed(
                f"job {self.id} ({job.task}) failed: {job.error}", job_id=self.id, error=job.error
            )
        if job.status is JobStatus.ABORTED:
            raise JobAborted(f"job {self.id} ({job.task}) was aborted", job_id=self.id)
        if job.status is JobStatus.CANCELLED:
            raise JobCancelled(f"job {self.id} ({job.task}) was cancelled", job_id=self.id)
        result: R = job.result
        return result
