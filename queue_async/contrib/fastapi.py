"""FastAPI integration: a lifespan that runs a worker beside the app, and job endpoints.

```python
from fastapi import FastAPI
from queue_async.contrib.fastapi import job_router, lifespan

app = FastAPI(lifespan=lifespan(queue, concurrency=50))
app.include_router(job_router(queue))  # GET /jobs/{id}, GET /jobs/{id}/result?timeout=10
```

Needs the ``fastapi`` extra: ``pip install 'queue-async[fastapi]'``. Uses only the public API.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# runtime, and the ``timeout`` parameter's refers to ``max_wait``, a local of job_router().
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, TypedDict

try:
    import fastapi
except ImportError as exc:
    raise ImportError(
        "queue_async.contrib.fastapi needs FastAPI: pip install 'queue-async[fastapi]'"
    ) from exc

from starlette.applications import Starlette

import queue_async as qa

__all__ = ["LifespanState", "job_router", "lifespan"]


class LifespanState(TypedDict):
    """The lifespan state (``request.state.queue``, ``request.state.worker``)."""

    queue: qa.Queue | Sequence[qa.Queue]
    """The queue or queues given to ``lifespan()``, as given."""
    worker: qa.Worker | None
    """The worker running in the app's process; ``None`` with ``worker=False``."""


def lifespan(
    queue_or_queues: qa.Queue | Sequence[qa.Queue],
    *,
    worker: bool = True,
    **worker_options: Any,
) -> Callable[[Starlette], AbstractAsyncContextManager[LifespanState]]:
    """A FastAPI/Starlette lifespan that opens the queue(s) and runs a worker for the app's life.

    ``FastAPI(lifespan=lifespan(queue, concurrency=50))``. On shutdown the worker stops
    gracefully (running jobs get its ``shutdown_grace``), then the queues close.

    Args:
        queue_or_queues: the queue, or queues, the app enqueues to and the worker serves.
        worker: run a ``qa.Worker`` in the app's process; False only opens and closes the
            queues (the jobs run in separate ``queue-async worker`` processes).
        **worker_options: passed to ``qa.Worker`` (``concurrency``, ``lease``, ...).

    Returns:
        A lifespan factory; its state is a ``LifespanState``.
    """
    queues = [queue_or_queues] if isinstance(queue_or_queues, qa.Queue) else list(queue_or_queues)
    if not queues:
        raise qa.ConfigurationError("lifespan() needs at least one queue")
    if not worker and worker_options:
        raise qa.ConfigurationError(
            f"lifespan(worker=False) runs no worker, so it takes no worker options: "
            f"{', '.join(sorted(worker_options))}"
        )

    @asynccontextmanager
    async def queue_lifespan(_app: Starlette) -> AsyncIterator[LifespanState]:
        async with AsyncExitStack() as stack:
            for queue in queues:
                await stack.enter_async_context(queue)
            running = None
            if worker:
                running = await stack.enter_async_context(qa.Worker(queues, **worker_options))
            yield {"queue": queue_or_queues, "worker": running}

    return queue_lifespan


def job_router(
    queue: qa.Queue, *, prefix: str = "/jobs", max_wait: float = 30.0
) -> fastapi.APIRouter:
    """An ``APIRouter`` that reports a queue's jobs by id.

    - ``GET {prefix}/{job_id}``: the job (a ``qa.Job``), or 404.
    - ``GET {prefix}/{job_id}/result?timeout=10``: waits up to ``timeout`` seconds (at most
      ``max_wait``) for the job to finish. 200 with ``{"id", "status": "complete", "result"}``,
      ``{"id", "status": "failed", "error"}`` (the error's last line) or
      ``{"id", "status": "cancelled"}``; 202 with ``{"id", "status": "pending"}`` if it is
      still going (ask again); 404 if there is no such job.

    Args:
        queue: the queue whose jobs are reported.
        prefix: the path prefix of both endpoints.
        max_wait: the longest one request waits for a result, in seconds, whatever its
            ``timeout``: keep it below your proxy's and clients' read timeouts.

    Returns:
        The router, for ``app.include_router()``.
    """
    if not max_wait > 0:
        raise qa.ConfigurationError(f"job_router(max_wait=...) must be positive, got {max_wait}")
    router = fastapi.APIRouter(prefix=prefix)
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"description": "No such job (never enqueued, or its result expired)"}
    }

    @router.get("/{job_id}", response_model=qa.Job, responses=not_found)
    async def job_info(job_id: str) -> qa.Job:
        """The job's status, attempts, timestamps, error and result."""
        try:
            return await _handle(queue, job_id).info()
        except qa.JobNotFound:
            raise _not_found(job_id) from None

    @router.get(
        "/{job_id}/result",
        responses={**not_found, 202: {"description": "Still waiting or running: ask again"}},
    )
    async def job_result(
        job_id: str,
        response: fastapi.Response,
        timeout: Annotated[
            float, fastapi.Query(gt=0, description=f"seconds to wait, at most {max_wait}")
        ] = 10.0,
    ) -> dict[str, Any]:
        """Wait for the job to finish, then report how it ended."""
        try:
            result = await _handle(queue, job_id).result(timeout=min(timeout, max_wait))
        except qa.JobNotFound:
            raise _not_found(job_id) from None
        except qa.JobTimeout:
            response.status_code = 202
            return {"id": job_id, "status": "pending"}
        except qa.JobFailed as exc:
            return {"id": job_id, "status": "failed", "error": _last_line(exc.error)}
        except qa.JobCancelled:
            return {"id": job_id, "status": "cancelled"}
        return {"id": job_id, "status": "complete", "result": result}

    return router


def _handle(queue: qa.Queue, job_id: str) -> qa.JobHandle[Any]:
    try:
        return queue.job(job_id)
    except qa.JobNotFound:  # an id that cannot exist
        raise _not_found(job_id) from None


def _not_found(job_id: str) -> fastapi.HTTPException:
    return fastapi.HTTPException(404, f"no job {job_id!r} (never enqueued, or its result expired)")


def _last_line(error: str | None) -> str | None:
    """The exception line that ends a traceback (``ValueError: bad input``)."""
    if error is None:
        return None
    lines = [line for line in error.splitlines() if line.strip()]
    return lines[-1] if lines else error
