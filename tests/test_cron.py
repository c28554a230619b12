"""Cron schedules: validation, exactly one job per tick across worker processes, missed ticks."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import queue_async as qa
from queue_async.broker.wire import pack_job
from queue_async.producer.cron import tick_ms
from tests.conftest import unique_name
from tests.helpers import FAST
from tests.test_processes import ROOT

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("spec", "timezone", "match"),
    [
        ("bad", "UTC", "not valid"),
        ("* * *", "UTC", "5 fields"),
        ("61 * * * *", "UTC", "not valid"),
        ("* * * * * * *", "UTC", "5 fields"),
        ("0 9 * * *", "Mars/Olympus_Mons", "unknown timezone"),
    ],
    ids=["words", "three-fields", "minute-61", "seven-fields", "timezone"],
)
async def test_invalid_cron_raises_configuration_error_at_registration(
    queue: qa.Queue, spec: str, timezone: str, match: str
) -> None:
    @queue.task
    async def job() -> None: ...

    with pytest.raises(qa.ConfigurationError, match=match):
        queue.cron(spec, job, timezone=timezone)
    assert queue.crons == {}


async def test_cron_registration_errors_name_what_is_wrong(queue: qa.Queue) -> None:
    @queue.task
    async def job(x: object = None) -> None: ...

    queue.cron("0 * * * *", job)
    with pytest.raises(qa.ConfigurationError, match="already registered"):
        queue.cron("30 * * * *", job)
    queue.cron("30 * * * *", job, name="half-past")  # a name of its own tells them apart
    with pytest.raises(qa.EncodeError):
        queue.cron("15 * * * *", job, args=(object(),), name="bad-args")
    with pytest.raises(qa.ConfigurationError, match="takes a Task"):
        queue.cron("15 * * * *", "not a task", name="x")  # type: ignore[arg-type]
    with pytest.raises(qa.ConfigurationError, match="job id"):
        queue.cron("15 * * * *", job, name="has spaces")
    assert set(queue.crons) == {job.name, "half-past"}


async def test_ticks_follow_the_spec_in_its_timezone(queue: qa.Queue) -> None:
    @queue.task
    async def report() -> None: ...

    @queue.cron("*/10 * * * * *", name="every-10s")
    async def often() -> None: ...

    queue.cron("0 9 * * 1-5", report, timezone="Europe/Paris")
    daily = queue.crons[report.name]
    winter_monday = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    assert daily.next_tick(winter_monday) == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # 9:00 CET
    summer_friday = datetime(2026, 7, 3, 8, 0, tzinfo=UTC)
    assert daily.next_tick(summer_friday) == datetime(2026, 7, 6, 7, 0, tzinfo=UTC)  # CEST
    seconds = queue.crons["every-10s"]
    at = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert seconds.next_tick(at) == at.replace(second=10)
    assert seconds.last_tick(at) == at.replace(second=0)
    assert seconds.job_id(at.replace(second=10)) == f"cron:every-10s:{tick_ms(at) + 7000}"


async def test_a_tick_is_enqueued_once_even_after_its_job_record_expired(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> None: ...

    async def fire(tick: int) -> bool:
        packed = pack_job(f"cron:c:{tick}", b"", job.name, b"[[],{}]")
        return await queue._broker.scripts.cron_tick("c", tick, packed)

    assert await fire(1_000) is True
    assert await fire(1_000) is False  # a second worker firing the same tick
    await queue.client.delete(queue._broker.keys.job("cron:c:1000"))  # its result expired
    assert await fire(1_000) is False
    assert await fire(500) is False  # a late worker firing an older tick
    assert await fire(2_000) is True


async def test_last_missed_tick_runs_at_start_only_when_asked(queue: qa.Queue) -> None:
    @queue.task
    async def nightly() -> None: ...

    @queue.task
    async def hourly() -> None: ...

    queue.cron("0 3 * * *", nightly, run_missed=True)
    queue.cron("0 * * * *", hourly)
    now = datetime.now(UTC)
    missed_nightly = queue.crons[nightly.name].last_tick(now)
    missed_hourly = queue.crons[hourly.name].last_tick(now)
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            caught_up = queue.job(queue.crons[nightly.name].job_id(missed_nightly))
            while await caught_up.status() is not qa.JobStatus.DONE:
                await anyio.sleep(0.02)
            worker.stop()
    skipped = queue.job(queue.crons[hourly.name].job_id(missed_hourly))
    assert await skipped.status() is None
    assert (await queue.stats()).processed == 1


def start_cli_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "queue_async", "worker", "tests.apps.cron_app:queue"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
async def test_three_worker_processes_run_each_tick_exactly_once(
    redis_url: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    name = unique_name()
    env = {**os.environ, "REDIS_URL": redis_url, "QA_QUEUE": name, "PYTHONPATH": str(ROOT)}
    queue = qa.Queue(redis_url, name=name)
    ticks_key = f"{queue._broker.keys.prefix}test:ticks"
    spawn.extend(start_cli_worker(env) for _ in range(3))
    with anyio.fail_after(30):
        while await queue.client.llen(ticks_key) < 5:
            await anyio.sleep(0.05)
    for proc in spawn:
        proc.send_signal(signal.SIGTERM)
    for proc in spawn:
        proc.wait(timeout=15)
        assert proc.returncode == 0
    ran = [job_id.decode() for job_id in await queue.client.lrange(ticks_key, 0, -1)]
    assert len(ran) == len(set(ran)), ran  # no tick ran twice
    ticks = sorted(int(job_id.rsplit(":", 1)[1]) for job_id in ran)
    assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000)), ticks  # none was lost
    first = datetime.fromtimestamp(ticks[0] / 1000, UTC)
    assert first.microsecond == 0
    assert datetime.now(UTC) - first < timedelta(seconds=30)
    await queue.close()
