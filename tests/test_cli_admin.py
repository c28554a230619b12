"""The ``queue-async`` admin subcommands, run as an operator runs them: a subprocess against a
real server, reaching the queue by --url/--queue/--prefix with no import of the app."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import queue_async as qa
from queue_async.producer.encode import new_job_id
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "queue_async.cli"]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def where(queue: qa.Queue, url: str, *, name: bool = True) -> list[str]:
    return ["--url", url, "--prefix", queue.prefix, *(["--queue", queue.name] if name else [])]


async def run(
    *argv: str, stdin: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> Ran:
    with anyio.fail_after(30):
        done = await anyio.run_process([*CLI, *argv], check=False, stdin=stdin, cwd=ROOT, env=env)
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


async def cli(queue: qa.Queue, url: str, command: str, *argv: str, stdin: Any = None) -> Ran:
    """``queue-async COMMAND --url URL --prefix P --queue NAME ARGV...`` (stdin: not a TTY)."""
    return await run(
        command, *where(queue, url), *argv,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
    )  # fmt: skip


def failed_with(ran: Ran, code: int, *fragments: str) -> None:
    """The command exited with ``code`` and one ``error:`` line on stderr, no traceback."""
    assert ran.code == code, (ran.code, ran.out, ran.err)
    assert "Traceback" not in ran.err, ran.err
    last = ran.err.strip().splitlines()[-1]
    assert "error:" in last, ran.err
    for fragment in fragments:
        assert fragment in last, ran.err


async def dead_jobs(queue: qa.Queue, count: int, *, task: str = "cli.boom") -> list[str]:
    """``count`` jobs of ``task`` in the dead set (the handler raises ``qa.Fatal``)."""

    @queue.task(name=task, retries=0)
    async def boom(n: int) -> None:
        raise qa.Fatal(f"card declined {n}")

    handles = await queue.enqueue_many([boom.call(n) for n in range(count)])
    await drain(queue, concurrency=max(count, 1))
    return [handle.id for handle in handles]


# -- info -----------------------------------------------------------------------------------


async def test_info_shows_every_queue_of_the_prefix_or_one(
    queue: qa.Queue, second: qa.Queue, redis_url: str
) -> None:
    await queue.enqueue("cli.a")
    await second.enqueue("cli.b")
    await second.enqueue("cli.b")
    listed = await run("info", "--json", *where(queue, redis_url, name=False))
    assert listed.code == 0, listed.err
    by_name = {stats["queue"]: stats for stats in listed.json()}
    assert by_name[queue.name]["ready"] == 1 and by_name[second.name]["ready"] == 2

    one = await cli(queue, redis_url, "info", "--json")
    assert one.code == 0 and one.json()["queue"] == queue.name and one.json()["ready"] == 1

    table = await cli(second, redis_url, "info")
    header, row = table.out.splitlines()
    assert header.split()[:4] == ["QUEUE", "READY", "SCHEDULED", "ACTIVE"]
    assert row.split()[:4] == [second.name, "2", "0", "0"]


async def test_info_with_an_app_spec_still_prints_the_queue_stats(
    queue: qa.Queue, redis_url: str
) -> None:
    await queue.enqueue("cli.a")
    env = {**os.environ, "REDIS_URL": redis_url, "QA_QUEUE": queue.name}
    ran = await run("info", "tests.apps.cron_app:queue", env=env)
    assert ran.code == 0, ran.err
    assert ran.json()["queue"] == queue.name and ran.json()["ready"] == 1


async def test_info_watch_refreshes_until_ctrl_c(queue: qa.Queue, redis_url: str) -> None:
    command = [*CLI, "info", *where(queue, redis_url), "--json", "--watch", "0.1"]
    with anyio.fail_after(20):
        async with await anyio.open_process(command, cwd=ROOT) as proc:
            assert proc.stdout is not None
            lines = BufferedByteReceiveStream(proc.stdout)
            # While watching, one document a line (JSON lines).
            first = json.loads(await lines.receive_until(b"\n", 1 << 16))
            await queue.enqueue("cli.a")
            while json.loads(await lines.receive_until(b"\n", 1 << 16))["ready"] != 1:
                pass
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    assert first["queue"] == queue.name and first["ready"] == 0


# -- jobs and job ---------------------------------------------------------------------------


async def test_jobs_lists_a_state_filtered_and_paged(queue: qa.Queue, redis_url: str) -> None:
    boom = await dead_jobs(queue, 3)
    other = await dead_jobs(queue, 1, task="cli.other")
    ran = await cli(queue, redis_url, "jobs", "--state", "dead", "--json", "--task", "cli.boom")
    assert ran.code == 0, ran.err
    assert sorted(job["id"] for job in ran.json()["jobs"]) == sorted(boom)
    assert ran.json()["cursor"] is None

    first = (
        await cli(queue, redis_url, "jobs", "--state", "dead", "--json", "--limit", "3")
    ).json()
    assert len(first["jobs"]) == 3 and first["cursor"] is not None
    rest = await cli(
        queue, redis_url, "jobs", "--state", "dead", "--json", "--cursor", first["cursor"]
    )
    seen = [job["id"] for job in first["jobs"] + rest.json()["jobs"]]
    assert sorted(seen) == sorted(boom + other)

    walked = await cli(
        queue, redis_url, "jobs", "--state", "dead", "--json", "--all", "--limit", "1"
    )
    assert sorted(job["id"] for job in walked.json()["jobs"]) == sorted(seen)
    oldest = [job["finished_at"] for job in walked.json()["jobs"]]
    assert oldest == sorted(oldest)
    newest = await cli(queue, redis_url, "jobs", "--state", "dead", "--json", "--order", "newest")
    # Jobs that died in the same millisecond may come in either order: check by time.
    finished = [job["finished_at"] for job in newest.json()["jobs"]]
    assert len(finished) == 4 and finished == sorted(finished, reverse=True)

    table = await cli(queue, redis_url, "jobs", "--state", "dead", "--search", "declined 2")
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "TASK", "TRIES", "PRI", "ENQUEUED", "FINISHED", "ERROR"]
    assert len(rows) == 1 and rows[0].startswith(boom[2]) and "card declined 2" in rows[0]

    empty = await cli(queue, redis_url, "jobs", "--state", "ready")
    assert empty.code == 0 and empty.out == "" and "no ready jobs" in empty.err


async def test_job_shows_arguments_error_traceback_and_timeline(
    queue: qa.Queue, redis_url: str
) -> None:
    (job_id,) = await dead_jobs(queue, 1)
    ran = await cli(queue, redis_url, "job", job_id)
    assert ran.code == 0, ran.err
    for fragment in ("status    dead", "args      [0]", "Traceback", "card declined 0"):
        assert fragment in ran.out
    for moment in ("enqueued", "started", "finished"):
        line = next(line for line in ran.out.splitlines() if line.strip().startswith(moment))
        assert "ago)" in line or "(now)" in line, line

    shown = (await cli(queue, redis_url, "job", job_id, "--json")).json()
    assert (shown["id"], shown["status"], shown["args"]) == (job_id, "dead", [0])
    assert "card declined 0" in shown["error"] and shown["finished_at"] is not None

    failed_with(
        await cli(queue, redis_url, "job", "nope"), 1, f"no job 'nope' in queue {queue.name!r}"
    )


# -- repairs --------------------------------------------------------------------------------


async def test_retry_by_id_requeues_dead_jobs_in_place_and_says_why_not(
    queue: qa.Queue, redis_url: str
) -> None:
    dead, other = await dead_jobs(queue, 2)
    ran = await cli(queue, redis_url, "retry", dead)
    assert ran.code == 0 and ran.out.strip() == f"retried {dead}", ran.err
    assert await queue.job(dead).status() is qa.JobStatus.READY

    again = await cli(queue, redis_url, "retry", dead, other, "--json")
    assert again.code == 1
    assert again.json() == {"retried": [other], "not_retried": [dead]}
    assert "it is ready" in again.err
    failed_with(await cli(queue, redis_url, "retry", "missing"), 1, "no job 'missing' in queue")


async def test_retry_dead_in_bulk_by_task_and_limit(queue: qa.Queue, redis_url: str) -> None:
    await dead_jobs(queue, 3, task="cli.a")
    await dead_jobs(queue, 2, task="cli.b")
    ran = await cli(queue, redis_url, "retry", "--dead", "--task", "cli.a", "--json")
    assert ran.code == 0 and ran.json() == {"retried": 3}, ran.err
    one = await cli(queue, redis_url, "retry", "--dead", "--limit", "1")
    assert one.code == 0 and one.out.startswith("retried 1 dead job"), one.err
    stats = await queue.stats()
    assert (stats.dead, stats.ready) == (1, 4)
    failed_with(await cli(queue, redis_url, "retry", "--dead", "--task", "cli.a"), 1, "nothing")
    failed_with(await cli(queue, redis_url, "retry", "x", "--dead"), 2, "not both")


async def test_retry_dead_of_more_than_a_hundred_jobs_asks_first(
    queue: qa.Queue, redis_url: str
) -> None:
    await dead_jobs(queue, 101)
    refused = await cli(queue, redis_url, "retry", "--dead")
    failed_with(refused, 4, "--yes", "101 dead jobs")
    assert (await queue.stats()).dead == 101
    done = await cli(queue, redis_url, "retry", "--dead", "--yes", "--json")
    assert done.code == 0 and done.json() == {"retried": 101}, done.err
    assert (await queue.stats()).dead == 0


async def test_purge_refuses_without_yes_when_no_terminal_can_ask(
    queue: qa.Queue, redis_url: str
) -> None:
    for n in range(3):
        await queue.enqueue("cli.a", n)
    failed_with(await cli(queue, redis_url, "purge", "--state", "ready"), 4, "--yes")
    assert (await queue.stats()).ready == 3
    ran = await cli(queue, redis_url, "purge", "--state", "ready", "--yes", "--json")
    assert ran.code == 0 and ran.json() == {"purged": 3}, ran.err
    assert (await queue.stats()).ready == 0
    failed_with(await cli(queue, redis_url, "purge", "--state", "ready", "--yes"), 1, "nothing")


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 4, 2), ("y\n", 0, 0)])
async def test_purge_on_a_terminal_does_what_the_answer_says(
    queue: qa.Queue, redis_url: str, answer: str, code: int, left: int
) -> None:
    await dead_jobs(queue, 2)
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        ran = await cli(queue, redis_url, "purge", "--state", "dead", "--json", stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert ran.code == code, ran.err
    assert "delete up to 2 dead jobs" in ran.err and "[y/N]" in ran.err
    assert (await queue.stats()).dead == left
    if code == 0:
        assert ran.json() == {"purged": 2}  # the question went to stderr, not into the JSON


async def test_delete_removes_jobs_and_reports_those_it_could_not(
    queue: qa.Queue, redis_url: str
) -> None:
    handle = await queue.enqueue("cli.a")
    ran = await cli(queue, redis_url, "delete", handle.id, "missing")
    assert ran.code == 1 and ran.out.strip() == f"deleted {handle.id}"
    assert "missing" in ran.err and "no job 'missing' in queue" in ran.err
    assert await queue.job(handle.id).status() is None

    many = [f"id-{n}" for n in range(11)]
    failed_with(await cli(queue, redis_url, "delete", *many), 4, "delete 11 jobs", "--yes")
    ran = await cli(queue, redis_url, "delete", *many, "--yes", "--json")
    assert ran.json() == {"deleted": [], "not_deleted": many}


async def test_pause_and_resume_the_queue_or_one_task(queue: qa.Queue, redis_url: str) -> None:
    ran = await cli(queue, redis_url, "pause", "--json")
    assert ran.code == 0 and ran.json() == {"queue": queue.name, "task": None, "paused": True}
    assert (await queue.stats()).paused
    ran = await cli(queue, redis_url, "resume")
    assert ran.code == 0 and ran.out.startswith(f"resumed queue {queue.name!r}")
    assert not (await queue.stats()).paused

    assert (await cli(queue, redis_url, "pause", "--task", "cli.a")).code == 0
    assert (await queue.stats()).paused_tasks == ["cli.a"]
    table = await cli(queue, redis_url, "info")
    assert table.out.splitlines()[1].endswith("cli.a")  # the PAUSED column
    ran = await cli(queue, redis_url, "resume", "--task", "cli.a")
    assert ran.out.startswith("resumed task 'cli.a' of queue")
    assert (await queue.stats()).paused_tasks == []


async def test_enqueue_by_name_with_options_runs_in_the_apps_worker(
    queue: qa.Queue, redis_url: str
) -> None:
    ran = await cli(
        queue, redis_url, "enqueue", "cli.add", "--args", "[1, 2]", "--kwargs", '{"c": 3}',
        "--delay", "60", "--job-id", "j-1", "--priority", "2", "--json",
    )  # fmt: skip
    assert ran.code == 0 and ran.json() == {
        "id": "j-1",
        "queue": queue.name,
        "task": "cli.add",
        "existing": False,
    }
    job = await queue.job("j-1").info()
    assert (job.status, job.args, job.kwargs, job.priority) == (
        qa.JobStatus.SCHEDULED, [1, 2], {"c": 3}, 2,
    )  # fmt: skip

    @queue.task(name="cli.add")
    async def add(a: int, b: int, c: int = 0) -> int:
        return a + b + c

    assert await queue.cancel("j-1")  # so that the burst worker need not wait for it
    plain = await cli(queue, redis_url, "enqueue", "cli.add", "--args", "[4, 5]")
    assert plain.code == 0, plain.err
    job_id = plain.out.strip()  # the id alone, for $(...)
    await drain(queue)
    assert await queue.job(job_id).result(timeout=5) == 9


async def test_cancel_and_abort_say_when_they_did_nothing(queue: qa.Queue, redis_url: str) -> None:
    scheduled = await queue.enqueue_spec(qa.JobSpec("cli.a", (), {}, qa.EnqueueOptions(delay=60)))
    ran = await cli(queue, redis_url, "cancel", scheduled.id)
    assert ran.code == 0 and ran.out.strip() == f"cancelled {scheduled.id}"
    failed_with(await cli(queue, redis_url, "cancel", scheduled.id), 1, "it is cancelled")
    failed_with(await cli(queue, redis_url, "abort", "missing"), 1, "no job 'missing' in queue")

    started, finish = anyio.Event(), anyio.Event()

    @queue.task(name="cli.slow")
    async def slow() -> None:
        started.set()
        await finish.wait()

    handle = await slow.enqueue()
    with anyio.fail_after(20):
        async with qa.Worker(queue, **FAST):
            await started.wait()
            ran = await cli(queue, redis_url, "abort", handle.id, "--json")
            assert ran.json() == {"aborted": [handle.id], "not_aborted": []}
            with pytest.raises(qa.JobCancelled):
                await handle.result(timeout=10)


# -- workers and crons ----------------------------------------------------------------------


async def test_workers_shows_each_live_worker_and_its_jobs(queue: qa.Queue, redis_url: str) -> None:
    started, finish = anyio.Event(), anyio.Event()

    @queue.task(name="cli.slow")
    async def slow() -> None:
        started.set()
        await finish.wait()

    handle = await slow.enqueue()
    with anyio.fail_after(20):
        async with qa.Worker(queue, **{**FAST, "concurrency": 7}):
            await started.wait()
            await anyio.sleep(FAST["heartbeat"] * 2)  # a heartbeat that names the job
            ran = await cli(queue, redis_url, "workers", "--json")
            table = await cli(queue, redis_url, "workers")
            finish.set()
    assert ran.code == 0, ran.err
    (worker,) = ran.json()
    assert worker["pid"] == os.getpid() and worker["concurrency"] == 7
    assert [job["id"] for job in worker["jobs"]] == [handle.id]
    header, row = table.out.splitlines()
    assert header.split()[:4] == ["ID", "HOST", "PID", "STARTED"]
    assert f"cli.slow[{handle.id}]" in row and str(os.getpid()) in row

    gone = await cli(queue, redis_url, "workers")
    assert gone.code == 0 and "no live workers" in gone.err


async def test_cron_lists_schedules_with_their_ticks(queue: qa.Queue, redis_url: str) -> None:
    @queue.cron("0 3 * * *", name="cli-nightly")
    async def nightly() -> None: ...

    with anyio.fail_after(20):
        async with qa.Worker(queue, **FAST):
            await anyio.sleep(0.5)
    ran = await cli(queue, redis_url, "cron", "--json")
    assert ran.code == 0, ran.err
    (schedule,) = ran.json()
    assert (schedule["name"], schedule["spec"]) == ("cli-nightly", "0 3 * * *")
    assert schedule["next_tick"] is not None
    table = await cli(queue, redis_url, "cron")
    header, row = table.out.splitlines()
    assert header.split() == ["NAME", "SPEC", "TASK", "TZ", "LAST", "NEXT", "LIVE"]
    assert row.startswith("cli-nightly") and "in " in row


# -- errors ---------------------------------------------------------------------------------


async def test_bad_input_is_one_line_and_exit_code_2(queue: qa.Queue, redis_url: str) -> None:
    bad = await cli(queue, redis_url, "enqueue", "cli.a", "--args", "[1,")
    assert bad.code == 2 and "--args: not valid JSON" in bad.err and "Traceback" not in bad.err
    shape = await cli(queue, redis_url, "enqueue", "cli.a", "--kwargs", "[1]")
    assert shape.code == 2 and "should be a JSON object" in shape.err
    failed_with(await cli(queue, redis_url, "enqueue", "cli.a", "--job-id", "a b"), 2, "job id")
    state = await cli(queue, redis_url, "jobs", "--state", "lost")
    assert state.code == 2 and "invalid choice: 'lost'" in state.err
    limit = await cli(queue, redis_url, "jobs", "--state", "dead", "--limit", "-5")
    assert limit.code == 2 and "-5 should be positive" in limit.err
    assert (await queue.stats()).ready == 0


async def test_an_unreachable_server_is_exit_code_3(queue: qa.Queue) -> None:
    ran = await run("info", "--url", "redis://user:secret@127.0.0.1:1/0", "--queue", "x")
    failed_with(ran, 3, "cannot reach the server at redis://user:***@127.0.0.1:1/0")
    assert "secret" not in ran.err


# -- found by trying it as an operator -------------------------------------------------------


def test_generated_job_ids_never_start_with_a_dash() -> None:
    # A command line would read such an id as an option (queue-async job -abc).
    assert not [job_id for job_id in (new_job_id() for _ in range(20_000)) if job_id[0] == "-"]


async def test_an_id_that_starts_with_a_dash_is_explained(queue: qa.Queue, redis_url: str) -> None:
    ran = await cli(queue, redis_url, "job", "-abc")
    assert ran.code == 2 and "goes after --" in ran.err, ran.err
    assert (await cli(queue, redis_url, "job", "--", "-abc")).code == 1  # read as an id


async def test_an_id_that_cannot_be_one_is_bad_usage(queue: qa.Queue, redis_url: str) -> None:
    for command in ("job", "retry", "delete", "cancel", "abort"):
        failed_with(await cli(queue, redis_url, command, "has space"), 2, "not valid")


async def test_enqueue_of_an_id_that_exists_says_nothing_was_enqueued(
    queue: qa.Queue, redis_url: str
) -> None:
    first = await cli(queue, redis_url, "enqueue", "cli.add", "--args", "[1, 2]", "--job-id", "e-1")
    assert first.code == 0 and first.out.strip() == "e-1"
    again = await cli(queue, redis_url, "enqueue", "cli.other", "--job-id", "e-1", "--json")
    assert again.code == 1
    assert again.json() == {"id": "e-1", "queue": queue.name, "task": "cli.add", "existing": True}
    assert "nothing enqueued" in again.err and "cli.add" in again.err


async def test_a_reader_that_stops_reading_is_no_server_outage(
    queue: qa.Queue, redis_url: str
) -> None:
    @queue.task(name="cli.add")
    async def add(a: int, b: int) -> int:
        return a + b

    await queue.enqueue_many([add.call(n, 1) for n in range(3000)])
    argv = [*CLI, "jobs", "--state", "ready", "--all", "--limit", "1000", *where(queue, redis_url)]

    def read_a_little() -> tuple[int, bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(100)
        proc.stdout.close()  # as `| head -1` does
        with proc.stderr:
            err = proc.stderr.read()
        return proc.wait(timeout=60), err

    code, err = await anyio.to_thread.run_sync(read_a_little)
    assert code == 141, err  # as a shell sees a command ended by SIGPIPE
    assert b"cannot reach" not in err and b"Traceback" not in err
