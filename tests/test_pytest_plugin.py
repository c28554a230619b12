"""The pytest plugin, as a user meets it: pytester runs a user's test files in a subprocess,
with the plugin loaded from the installed package's entry point."""

from __future__ import annotations

import pytest
import redis

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

APP = '''
import queue_async as qa

queue = qa.Queue(name="app")
sent = []
tries = {}

@queue.task(name="send_email")
async def send_email(ctx: qa.JobContext, to: str, subject: str = "hi") -> str:
    sent.append((to, subject, ctx.state.get("smtp")))
    return f"sent to {to}"

@queue.task(name="flaky", retries=3, backoff_base=600, backoff_cap=600)
async def flaky(key: str) -> int:
    tries[key] = tries.get(key, 0) + 1
    if tries[key] < 3:
        raise RuntimeError("not yet")
    return tries[key]

@queue.on_startup
async def connect(state):
    state["smtp"] = "fake-smtp"

async def signup(address: str) -> None:
    """App code: enqueues through the task object, as a request handler would."""
    await send_email.enqueue(address, subject="welcome")
'''

INI = """
[pytest]
pythonpath = .
queue_async_app = app:queue
addopts = -p no:cacheprovider
filterwarnings = error
"""

USER_TESTS = """
from datetime import timedelta
from unittest.mock import ANY

import pytest

import queue_async as qa
from queue_async.testing import (
    advance, assert_enqueued, drain, enqueued, job_context, refute_enqueued,
)

import app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_app_code_enqueues_to_the_test_queue(qa_queue):
    await app.signup("a@b.c")
    job = assert_enqueued(await enqueued(qa_queue, task=app.send_email, args=["a@b.c"]), 1)
    assert job.kwargs == {"subject": "welcome"}
    assert_enqueued(await enqueued(qa_queue, task="send_email", kwargs={"subject": ANY}))
    refute_enqueued(await enqueued(qa_queue, task=app.send_email, args=["x@y.z"]))
    with pytest.raises(AssertionError, match="found 0"):
        assert_enqueued(await enqueued(qa_queue, kwargs={"subject": "other"}))
    stats = await drain(qa_queue)
    assert (stats.ready, stats.processed) == (0, 1)
    assert app.sent[-1] == ("a@b.c", "welcome", "fake-smtp")
    assert await qa_queue.job(job.id).result(timeout=5) == "sent to a@b.c"


async def test_each_test_has_a_fresh_queue(qa_queue):
    assert await enqueued(qa_queue) == []
    assert qa_queue.name != "app" and "send_email" in qa_queue.tasks


async def test_scheduled_jobs_run_once_the_clock_moves_on(qa_queue):
    handle = await app.send_email.options(delay=timedelta(hours=1)).enqueue("later@b.c")
    assert_enqueued(await enqueued(qa_queue, task=app.send_email, states=["scheduled"]))
    stats = await drain(qa_queue)
    assert (stats.scheduled, stats.processed) == (1, 0)
    assert await advance(qa_queue, 1800) == 0
    assert await advance(qa_queue, timedelta(hours=1)) == 1
    await drain(qa_queue)
    assert await handle.result(timeout=5) == "sent to later@b.c"


async def test_retries_run_without_waiting_their_backoff(qa_queue):
    handle = await app.flaky.enqueue("k1")
    stats = await drain(qa_queue)
    assert (stats.retrying, stats.processed) == (1, 0)
    stats = await drain(qa_queue, within=3600)
    assert (stats.scheduled, stats.retrying, stats.retried, stats.processed) == (0, 0, 2, 1)
    assert await handle.result(timeout=5) == 3


async def test_a_handler_called_directly(qa_queue):
    ctx = job_context(qa_queue, app.send_email, state={"smtp": "direct"})
    assert await app.send_email.run(ctx, "d@b.c") == "sent to d@b.c"
    assert app.sent[-1] == ("d@b.c", "hi", "direct")
    assert ctx.attempt == 1 and ctx.task == "send_email"


async def test_the_worker_fixture_runs_jobs_in_the_background(qa_queue, qa_worker):
    handle = await app.send_email.enqueue("bg@b.c")
    assert await handle.result(timeout=10) == "sent to bg@b.c"


def test_a_sync_test_uses_the_queue_on_its_own_loops(qa_queue):
    import asyncio

    async def enqueue():
        return await app.send_email.enqueue("sync@b.c")

    handle = asyncio.run(enqueue())
    asyncio.run(drain(qa_queue))
    assert asyncio.run(handle.result(timeout=5)) == "sent to sync@b.c"
"""

MODULE_QUEUE_TESTS = """
import asyncio
import os

import pytest

import queue_async as qa
from queue_async.testing import drain

queue = qa.Queue(os.environ["REDIS_URL"], name=os.environ["QA_QUEUE"])


@queue.task(name="add")
async def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def run_one(n):
    handle = await add.enqueue(n, 1)
    await drain(queue)
    assert await handle.result(timeout=5) == n + 1


@pytest.mark.anyio
@pytest.mark.parametrize("n", range(3))
async def test_module_level_queue_on_anyio_loops(n):
    await run_one(n)


@pytest.mark.parametrize("n", range(3))
def test_module_level_queue_on_asyncio_run_loops(n):
    asyncio.run(run_one(n))


def test_closed_on_yet_another_loop():
    import gc

    asyncio.run(queue.close())
    gc.collect()
"""


def test_a_users_tests_run_with_the_plugins_fixtures_and_helpers(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    pytester.makeini(INI)
    pytester.makepyfile(app=APP, test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=7)
    # The test queues left the server's registry too (a shared server would list them all).
    with redis.Redis.from_url(redis_url) as client:
        assert not [m for m in client.smembers("qa:queues") if m.startswith(b"test-")]


def test_a_marker_names_another_app_queue_and_a_fixture_can_override_it(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    pytester.makeini(INI)
    pytester.makepyfile(
        app=APP,
        other="import queue_async as qa\nqueue = qa.Queue(name='other')\n"
        "@queue.task(name='ping')\nasync def ping() -> str:\n    return 'pong'\n",
        test_marker="""
import pytest

@pytest.mark.queue_async(app="other:queue")
def test_marker(qa_queue):
    assert list(qa_queue.tasks) == ["ping"]

def test_ini(qa_queue):
    assert "send_email" in qa_queue.tasks
""",
        test_override="""
import pytest
import queue_async as qa

@pytest.fixture
def qa_app():
    return None

def test_no_app(qa_queue):
    assert dict(qa_queue.tasks) == {}
""",
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=3)


def test_a_module_level_queue_reconnects_on_each_tests_event_loop(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QA_QUEUE", "module-level")
    pytester.makeini(INI.replace("queue_async_app = app:queue\n", ""))
    pytester.makepyfile(test_module_queue=MODULE_QUEUE_TESTS)
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=7)


def test_without_redis_url_the_session_server_is_an_embedded_valkey(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makeini(INI)
    pytester.makepyfile(
        app=APP,
        test_embedded="""
def test_url(qa_server_url, qa_queue):
    assert qa_server_url.startswith("redis://127.0.0.1:")
""",
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)
