"""Workers as real processes: SIGKILL mid-job, SIGTERM with jobs running, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import queue_async as qa
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent


@pytest.fixture
def app_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "QA_QUEUE": unique_name(),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
async def app_queue(app_env: dict[str, str]) -> AsyncIterator[qa.Queue]:
    """The queue of tests/apps/tasks.py, as the subprocess sees it, with its tasks."""
    queue = qa.Queue(app_env["REDIS_URL"], name=app_env["QA_QUEUE"])
    queue.task(name="apps.record", retries=3, backoff_base=0.05)(_record)
    yield queue
    keys = [k async for k in queue.client.scan_iter(match=f"{queue._broker.keys.prefix}*")]
    if keys:
        await queue.client.delete(*keys)
    await queue.close()


async def _record(ctx: qa.JobContext, hold: float = 0.0) -> str:
    """The in-process twin of tests.apps.tasks.record (never holds: it runs retries)."""
    await ctx.queue.client.rpush(
        f"{ctx.queue._broker.keys.prefix}test:runs", f"{ctx.job_id}:{ctx.attempt}"
    )
    return ctx.job_id


def start_worker(
    env: dict[str, str], procs: list[subprocess.Popen[bytes]], *args: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    return proc


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m queue_async ARGS`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "queue_async", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )


async def runs_of(queue: qa.Queue) -> list[str]:
    return [
        r.decode()
        for r in await queue.client.lrange(f"{queue._broker.keys.prefix}test:runs", 0, -1)
    ]


async def wait_for_runs(queue: qa.Queue, count: int, limit: float = 15) -> list[str]:
    with anyio.fail_after(limit):
        while len(runs := await runs_of(queue)) < count:
            await anyio.sleep(0.02)
    return runs


@pytest.mark.slow
async def test_job_of_a_sigkilled_worker_runs_again_and_completes_once(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    handle = await app_queue.enqueue("apps.record", hold=60)
    victim = start_worker(app_env, spawn, "1.0")
    assert await wait_for_runs(app_queue, 1) == [f"{handle.id}:1"]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert await handle.status() is qa.JobStatus.ACTIVE

    # Another worker picks it up once the 1 s lease has expired, with the attempt counted.
    async with qa.Worker(app_queue, **FAST):
        assert await handle.result(timeout=15) == handle.id
    assert await runs_of(app_queue) == [f"{handle.id}:1", f"{handle.id}:2"]
    info = await handle.info()
    assert info.status is qa.JobStatus.DONE and info.attempts == 2 and info.result == handle.id
    stats = await app_queue.stats()
    assert (stats.processed, stats.active, stats.ready) == (1, 0, 0)


@pytest.mark.slow
async def test_sigterm_lets_running_jobs_finish_then_exits(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_worker(app_env, spawn, "5.0", "10")
    handles = [await app_queue.enqueue("apps.record", hold=0.5) for _ in range(3)]
    await wait_for_runs(app_queue, 3)
    proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(15):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    for handle in handles:
        assert await handle.status() is qa.JobStatus.DONE
    assert await app_queue.client.zcard(app_queue._broker.keys.workers) == 0


@pytest.mark.slow
async def test_sigterm_past_grace_hands_jobs_back_and_second_signal_stops_at_once(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_worker(app_env, spawn, "30.0", "30")
    handle = await app_queue.enqueue("apps.record", hold=60)
    await wait_for_runs(app_queue, 1)
    proc.send_signal(signal.SIGTERM)
    await anyio.sleep(0.2)
    assert proc.poll() is None  # still within its 30 s grace
    proc.send_signal(signal.SIGINT)
    with anyio.fail_after(10):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    assert proc.returncode == 0
    info = await handle.info()
    # Handed straight back (no 30 s lease wait), and the interrupted try is not counted.
    assert info.status is qa.JobStatus.READY and info.attempts == 0


async def test_cli_worker_burst_and_info(app_queue: qa.Queue, app_env: dict[str, str]) -> None:
    handles = [await app_queue.enqueue("apps.add", i, 1) for i in range(5)]
    cli = [sys.executable, "-m", "queue_async"]
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*cli, "worker", "tests.apps.tasks:queue", "--burst", "--concurrency", "3"],
            env=app_env,
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert [await h.result(timeout=5) for h in handles] == [1, 2, 3, 4, 5]
    with anyio.fail_after(60):
        info = await anyio.run_process(
            [*cli, "info", "tests.apps.tasks:queue"], env=app_env, cwd=ROOT
        )
    stats = json.loads(info.stdout)
    assert stats["processed"] == 5 and stats["queue"] == app_env["QA_QUEUE"]


async def test_cli_worker_serves_several_queues(
    app_queue: qa.Queue, app_env: dict[str, str]
) -> None:
    async with qa.Queue(app_queue.client, name=f"{app_queue.name}-other") as other:
        sums = [await app_queue.enqueue("apps.add", i, 1) for i in range(3)]
        shouts = [await other.enqueue("apps.shout", word) for word in ("a", "b")]
        command = [
            *[sys.executable, "-m", "queue_async", "worker"],
            *["tests.apps.tasks:queue", "tests.apps.tasks:other", "--burst"],
            *["--strategy", "weighted", "--weights", "3,1", "--lease", "5", "--heartbeat", "1"],
        ]
        with anyio.fail_after(60):
            done = await anyio.run_process(command, env=app_env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert [await h.result(timeout=5) for h in sums] == [1, 2, 3]
        assert [await h.result(timeout=5) for h in shouts] == ["A", "B"]
        await other.client.delete(
            *[k async for k in other.client.scan_iter(f"{other._broker.keys.prefix}*")]
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "3"], "one positive integer per queue"),
        (["--weights", "three"], "is not a list like 10,1"),
        (["--lease", "1", "--heartbeat", "2"], "must be shorter than the lease"),
    ],
    ids=["weights-count", "weights-words", "heartbeat-vs-lease"],
)
def test_cli_worker_explains_bad_settings(
    app_env: dict[str, str], extra: list[str], message: str
) -> None:
    done = run_cli(
        app_env,
        "worker",
        "--burst",
        *["tests.apps.tasks:queue", "tests.apps.tasks:other", "--strategy", "weighted"],
        *extra,
    )
    assert done.returncode != 0
    assert message in done.stderr.decode()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.apps.tasks", "is not module:attribute; for a queue by name: --queue"),
        ("tests.apps.nothing_here:queue", "cannot import"),
        ("tests.apps.tasks:missing", "has no attribute"),
        ("tests.apps.tasks:add", "not a queue_async.Queue"),
    ],
)
def test_cli_explains_a_bad_queue_reference(
    app_env: dict[str, str], target: str, message: str
) -> None:
    done = run_cli(app_env, "info", target)
    assert done.returncode != 0
    assert message in done.stderr.decode()


def test_cli_reports_an_unreachable_server(app_env: dict[str, str]) -> None:
    env = {**app_env, "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = run_cli(env, "info", "tests.apps.tasks:queue")
    assert done.returncode == 3  # the exit code for an unreachable server (--help)
    assert "cannot reach Redis" in done.stderr.decode()


@pytest.mark.slow
async def test_concurrency_slot_of_a_killed_worker_comes_back_when_its_lease_expires(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    app_queue.task(name="apps.limited", max_concurrency=1, retries=3)(_record)
    first = await app_queue.enqueue("apps.limited", hold=60)
    second = await app_queue.enqueue("apps.limited")
    victim = start_worker(app_env, spawn, "1.0")
    # One lease call takes both: the first runs in the only slot, the second is held.
    assert await wait_for_runs(app_queue, 1) == [f"{first.id}:1"]
    assert (await app_queue.stats()).held == 1
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    async with qa.Worker(app_queue, **FAST):
        assert await first.result(timeout=15) == first.id
        assert await second.result(timeout=15) == second.id
    assert sorted(await runs_of(app_queue)) == sorted(
        [f"{first.id}:1", f"{first.id}:2", f"{second.id}:1"]
    )
    stats = await app_queue.stats()
    assert (stats.held, stats.active, stats.ready) == (0, 0, 0)
    assert await app_queue.client.hgetall(f"{app_queue._broker.keys.prefix}running") == {}


@pytest.mark.slow
async def test_max_concurrency_holds_across_worker_processes(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    handles = await app_queue.enqueue_many(
        [app_queue.call("apps.gauged", hold=0.2) for _ in range(8)]
    )
    for _ in range(3):
        start_worker(app_env, spawn, "5.0")
    with anyio.fail_after(30):
        while (await app_queue.stats()).processed < len(handles):
            await anyio.sleep(0.05)
    seen = [
        int(n)
        for n in await app_queue.client.lrange(
            f"{app_queue._broker.keys.prefix}test:gauge-seen", 0, -1
        )
    ]
    assert len(seen) == 8
    assert max(seen) == 2  # two at once, never three, though three processes had room


async def test_sigterm_ends_the_process_in_its_grace_even_with_a_stuck_sync_handler(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = start_worker(app_env, spawn, "30.0", "1")
    handle = await app_queue.enqueue("apps.stuck_sync", 60)
    with anyio.fail_after(10):
        while (await handle.info()).status is not qa.JobStatus.ACTIVE:
            await anyio.sleep(0.02)
    await anyio.sleep(0.2)  # its thread is in time.sleep
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    # shutdown_grace (1 s) + cancel_grace (5 s) at most, not the handler's 60 s.
    assert time.monotonic() - signalled < 6.5
    assert proc.returncode == 0
    info = await handle.info()
    assert info.status is qa.JobStatus.READY and info.attempts == 0
