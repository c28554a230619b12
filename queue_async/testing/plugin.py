"""The pytest plugin of queue_async (an entry point: pytest loads it by itself).

Fixtures:

- ``qa_server_url`` (session): ``$REDIS_URL`` if set, else a private embedded Valkey started
  for the session (``pip install 'queue-async[testing]'``).
- ``qa_app``: your app's ``Queue``, whose tasks the test queue carries: named by the
  ``queue_async_app = "myapp.tasks:queue"`` ini option, by a marker
  ``@pytest.mark.queue_async(app="myapp.other:queue")`` on a test or module, or by
  overriding this fixture in your conftest.py. None: a queue with no tasks.
- ``qa_queue``: a fresh ``Queue`` per test, with a name of its own on that server and the
  app's tasks, hooks and middleware; while the test runs, the app's ``Task`` objects enqueue
  to it (``await send_email.enqueue(...)`` in your code lands here). Its keys are deleted
  afterwards. A plain fixture: it works with anyio's plugin, pytest-asyncio and sync tests.
- ``qa_worker``: a ``Worker`` of ``qa_queue`` running in the background for the test (an
  async fixture: with ``pytest.mark.anyio``, or pytest-asyncio's auto mode).

The helpers (``drain``, ``enqueued``, ``advance``, ``job_context``) are in
``queue_async.testing``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

import queue_async as qa
from queue_async.testing import fresh_queue

_INI = "queue_async_app"
_MARKER = "queue_async"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI,
        "module:attribute of the app's Queue whose tasks qa_queue carries (e.g. myapp.tasks:queue)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(app='module:queue'): the app Queue whose tasks qa_queue carries",
    )


@pytest.fixture(scope="session")
def qa_server_url() -> Iterator[str]:
    """The server the test queues live on: $REDIS_URL, else a private embedded Valkey."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    from queue_async.embedded import EmbeddedServer  # noqa: PLC0415 (only when asked for)

    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture
def qa_app(request: pytest.FixtureRequest) -> qa.Queue | None:
    """The app's Queue (marker, else the ini option; override this fixture to choose)."""
    marker = request.node.get_closest_marker(_MARKER)
    spec = marker.kwargs.get("app") if marker is not None else None
    spec = spec or request.config.getini(_INI)
    if not spec:
        return None
    if isinstance(spec, qa.Queue):
        return spec
    return _load(str(spec))


def _load(spec: str) -> qa.Queue:
    module_name, _, attribute = spec.partition(":")
    found = getattr(importlib.import_module(module_name), attribute or "queue", None)
    if callable(found) and not isinstance(found, qa.Queue):
        found = found()
    if not isinstance(found, qa.Queue):
        raise pytest.UsageError(f"{spec!r} names no queue_async.Queue (module:attribute)")
    return found


@pytest.fixture
def qa_queue(
    qa_server_url: str, qa_app: qa.Queue | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[qa.Queue]:
    """A fresh queue per test, carrying the app's tasks; the app's tasks enqueue to it."""
    queue = fresh_queue(qa_server_url, qa_app)
    if qa_app is not None:
        for task in qa_app.tasks.values():
            monkeypatch.setattr(task, "queue", queue)
    yield queue
    # Sync, so that it works whatever runs the test's event loop: the queue reconnects on
    # this one (see "Connections" in the README).
    asyncio.run(_forget_and_close(queue))
    with redis.Redis.from_url(qa_server_url) as client:
        keys = list(client.scan_iter(match=f"{queue.key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)


async def _forget_and_close(queue: qa.Queue) -> None:
    """Out of the server's registry of queues (a shared $REDIS_URL server would list every
    test's queue otherwise), then closed."""
    try:
        await qa.Admin(queue).forget_queue()
    finally:
        await queue.close()


@pytest.fixture
async def qa_worker(qa_queue: qa.Queue) -> AsyncIterator[qa.Worker]:
    """A worker of ``qa_queue`` running for the test (stopped gracefully after it)."""
    async with qa.Worker(qa_queue, lease=5.0, heartbeat=1.0, shutdown_grace=5.0) as worker:
        yield worker
