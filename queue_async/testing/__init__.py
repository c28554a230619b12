"""Helpers for testing an app's jobs: run them, look at what was enqueued, move time on.

Uses the public API only (``queue_async`` and its ``Admin``); the pytest fixtures built on
these live in ``queue_async.testing.plugin``, which pytest loads by itself once
``queue-async`` is installed (see "Testing your app" in the README)::

    from queue_async.testing import advance, assert_enqueued, drain, job_context

    async def test_signup_sends_a_welcome_email(qa_queue):
        await signup("a@b.c")
        assert_enqueued(await enqueued(qa_queue, task=send_email, kwargs={"to": "a@b.c"}))
        await drain(qa_queue)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import anyio

import queue_async as qa

__all__ = [
    "advance",
    "assert_enqueued",
    "drain",
    "enqueued",
    "fresh_queue",
    "job_context",
    "refute_enqueued",
]

# Worker settings for tests: real leases and heartbeats, short enough that a test that stops
# a worker does not wait long.
_WORKER: dict[str, Any] = {"lease": 5.0, "heartbeat": 1.0, "shutdown_grace": 5.0}
_POLL = 0.005


def fresh_queue(url: str, app: qa.Queue | None = None, *, name: str | None = None) -> qa.Queue:
    """A queue with a name of its own on ``url``, carrying ``app``'s tasks (same names and
    options), hooks and middleware, so that a worker of it runs the app's handlers."""
    prefix = app.prefix if app is not None else "qa"
    queue = qa.Queue(
        url,
        name=name or f"test-{uuid.uuid4().hex[:12]}",
        prefix=prefix,
        codec=app.codec if app is not None else None,
        strict=app.strict if app is not None else False,
    )
    if app is not None:
        for task in app.tasks.values():
            options: dict[str, Any] = task.task_options.model_dump()
            queue.task(name=task.name, **options)(task.fn)
        for hook in app.startup_hooks:
            queue.on_startup(hook)
        for hook in app.shutdown_hooks:
            queue.on_shutdown(hook)
        for middleware in app.middlewares:
            queue.middleware(middleware)
    return queue


async def drain(
    queue: qa.Queue,
    *,
    within: float | timedelta = 0,
    timeout: float = 30.0,
    **worker_settings: Any,
) -> qa.QueueStats:
    """Run every ready job of ``queue`` (and the jobs they enqueue), then return its stats.

    ``within``: also run the scheduled jobs (delays and retries) due within that many
    seconds, as if that time had passed; a retry that falls due within it meanwhile runs
    too, so ``drain(queue, within=3600)`` takes a failing job through its tries. Jobs due
    later stay scheduled. ``TimeoutError`` if the queue is not idle after ``timeout`` seconds
    (a job that enqueues itself forever). ``worker_settings`` go to the ``Worker``.
    """
    admin = qa.Admin(queue)
    worker = qa.Worker(queue, **{**_WORKER, **worker_settings})
    with anyio.fail_after(timeout):
        async with worker:
            while True:
                await admin.promote(within)
                stats = await queue.stats()
                if stats.ready == 0 and stats.leased == 0 and stats.active == 0:
                    break
                await anyio.sleep(_POLL)
    return await queue.stats()


async def advance(queue: qa.Queue, seconds: float | timedelta) -> int:
    """Move the queue's clock forward: the scheduled jobs (delays and retries) due within
    ``seconds`` become ready now, without waiting; the number moved. Run them with
    ``drain``. (Jobs due later keep their time: it is not a shift of every clock.)"""
    return await qa.Admin(queue).promote(seconds)


async def enqueued(
    queue: qa.Queue,
    *,
    task: str | qa.Task[Any, Any] | None = None,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    states: Iterable[str] = ("ready", "scheduled"),
) -> list[qa.Job]:
    """The jobs waiting in ``queue`` (ready or scheduled) that match, oldest first.

    Matching is partial, as Oban's ``assert_enqueued``: ``args`` matches the first
    positional arguments, ``kwargs`` and ``headers`` the keys given (others may be there);
    ``unittest.mock.ANY`` matches any value. Arguments compare as stored (JSON: a tuple
    comes back a list)."""
    name = task.name if isinstance(task, qa.Task) else task
    admin = qa.Admin(queue)
    found = []
    for state in states:
        cursor: str | None = None
        while True:
            page = await admin.jobs(state, task=name, cursor=cursor, limit=500)  # type: ignore[arg-type]
            found += [job for job in page.jobs if _matches(job, args, kwargs, headers)]
            cursor = page.cursor
            if cursor is None:
                break
    return found


def _matches(
    job: qa.Job,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
) -> bool:
    if args is not None and list(job.args[: len(args)]) != list(args):
        return False
    if kwargs is not None and any(
        key not in job.kwargs or value != job.kwargs[key] for key, value in kwargs.items()
    ):
        return False
    return headers is None or all(job.headers.get(k) == v for k, v in headers.items())


def assert_enqueued(jobs: list[qa.Job], count: int | None = None) -> qa.Job:
    """Assert that ``enqueued(...)`` found a job (or exactly ``count``); the first."""
    if not jobs or (count is not None and len(jobs) != count):
        raise AssertionError(
            f"expected {count if count is not None else 'a'} matching job(s), found "
            f"{len(jobs)}: {[(j.task, j.args, j.kwargs) for j in jobs]}"
        )
    return jobs[0]


def refute_enqueued(jobs: list[qa.Job]) -> None:
    """Assert that ``enqueued(...)`` found no job."""
    if jobs:
        raise AssertionError(
            f"expected no matching job, found {len(jobs)}: "
            f"{[(j.task, j.args, j.kwargs) for j in jobs]}"
        )


def job_context(
    queue: qa.Queue,
    task: str | qa.Task[Any, Any] = "test.task",
    *,
    attempt: int = 1,
    state: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    job_id: str | None = None,
) -> qa.JobContext:
    """A ``JobContext`` for calling a handler directly: ``await task.run(job_context(q,
    task), ...)``. ``state`` stands for what the worker's startup hooks would fill.
    ``ctx.checkin`` raises (no worker holds the job)."""
    return qa.JobContext(
        job_id=job_id or uuid.uuid4().hex,
        task=task.name if isinstance(task, qa.Task) else task,
        attempt=attempt,
        queue=queue,
        state=state if state is not None else {},
        worker_id="test",
        enqueued_ms=int(time.time() * 1000),
        headers=headers or {},
    )
