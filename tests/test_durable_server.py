"""The durable server of one machine: data in a folder, a Unix socket, shared by processes.

Real servers only: each test has a data folder of its own and kills what it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import queue_async as qa
from queue_async import embedded
from queue_async.embedded import DurableServer
from tests.conftest import unique_name
from tests.helpers import drain

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data folder; whatever server runs for it at the end is killed."""
    folder = tmp_path / "queue-data"
    yield folder
    DurableServer(folder).kill()


def servers_of(folder: Path) -> list[int]:
    """Pids of the server processes serving this folder's socket (from /proc)."""
    path = str(DurableServer(folder).socket).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if path in command and b"server" in command:
                found.append(int(entry.name))
    return found


async def test_acknowledged_jobs_survive_kill_9_of_the_server_with_fsync_always(
    data: Path,
) -> None:
    name = unique_name()
    queue = qa.Queue.embedded(data, fsync="always", name=name)

    @queue.task(name="double")
    async def double(x: int) -> int:
        return 2 * x

    finished = [await double.enqueue(i) for i in range(20)]
    await drain(queue)
    waiting = [await double.enqueue(i) for i in range(100)]
    waiting += await queue.enqueue_many([double.call(i) for i in range(500)])
    later = await double.options(delay=3600).enqueue(7)
    await queue.close()

    server = DurableServer(data)
    pid = server.pid()
    assert pid is not None and server.kill()
    # SIGKILL leaves both files behind: the next start must see them as stale.
    assert server.pid_file.exists() and server.socket.exists()

    again = qa.Queue.embedded(data, name=name)
    again.task(name="double")(double.fn)
    try:
        assert DurableServer(data).pid() not in (None, pid)
        assert await again.job(finished[0].id).result(timeout=5) == 0
        for handle in finished:
            assert await again.job(handle.id).status() is qa.JobStatus.DONE
        for handle in waiting:
            assert await again.job(handle.id).status() is qa.JobStatus.READY
        assert await again.job(later.id).status() is qa.JobStatus.SCHEDULED
        stats = await again.stats()
        assert (stats.ready, stats.scheduled, stats.processed) == (600, 1, 20)
    finally:
        await again.close()


async def test_graceful_stop_and_start_reloads_the_data_with_everysec(data: Path) -> None:
    name = unique_name()
    queue = qa.Queue.embedded(data, name=name)
    handle = await queue.enqueue("some.task", 1)
    await queue.close()
    assert DurableServer(data).stop()
    assert not DurableServer(data).answers()

    again = qa.Queue.embedded(data, name=name)
    try:
        assert await again.job(handle.id).status() is qa.JobStatus.READY
    finally:
        await again.close()


ATTACH = """
import asyncio, sys
import queue_async as qa
from queue_async.embedded import DurableServer

async def main():
    queue = qa.Queue.embedded(sys.argv[1], name=sys.argv[2])
    handle = await queue.enqueue("some.task", sys.argv[3])
    await queue.close()
    print(DurableServer(sys.argv[1]).pid(), handle.id)

asyncio.run(main())
"""


def test_processes_that_start_at_once_share_one_server(data: Path) -> None:
    name = unique_name()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ATTACH, str(data), name, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(4)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode().split())
    pids = {pid for pid, _ in outputs}
    assert len(pids) == 1
    assert servers_of(data) == [int(pids.pop())]

    async def check() -> None:
        async with qa.Queue.embedded(data, name=name) as queue:
            for _, job_id in outputs:
                assert await queue.job(job_id).status() is qa.JobStatus.READY

    anyio.run(check)


def test_stale_pid_file_of_another_process_and_dead_socket_are_replaced(data: Path) -> None:
    data.mkdir(parents=True)
    server = DurableServer(data)
    # A pid file naming a live process that is no server (a pid reused after a reboot),
    # and a socket file nobody listens on (a crash).
    server.pid_file.write_text(f"{os.getpid()}\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(server.socket))
    assert server.socket.exists() and not server.answers()

    assert server.start(timeout=20)
    assert server.answers()
    assert server.pid() not in (None, os.getpid())
    assert not DurableServer(data).start()  # a second call attaches


def test_pid_file_of_a_finished_process_is_stale(data: Path) -> None:
    data.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True)  # fmt: skip
    server = DurableServer(data)
    server.pid_file.write_text(done.stdout.decode())
    assert server.start(timeout=20)
    assert servers_of(data) == [server.pid()]


def test_cli_server_runs_in_the_foreground_until_sigterm_then_detached(data: Path) -> None:
    command = [sys.executable, "-m", "queue_async", "server", "--data", str(data)]
    proc = subprocess.Popen(
        [*command, "--fsync", "always"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith(f"started: {DurableServer(data).url} ")
        assert DurableServer(data).answers()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert "stopped" in out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not DurableServer(data).answers() and servers_of(data) == []

    detached = subprocess.run([*command, "--detach"], capture_output=True, timeout=60, check=False)
    assert detached.returncode == 0, detached.stderr.decode()
    assert detached.stdout.decode().startswith("started: ")
    again = subprocess.run([*command, "--detach"], capture_output=True, timeout=60, check=False)
    assert again.stdout.decode().startswith("already running: ")
    assert len(servers_of(data)) == 1


def test_a_long_folder_path_gets_its_socket_in_the_temporary_folder(tmp_path: Path) -> None:
    folder = tmp_path / ("deep-" * 20) / "data"
    server = DurableServer(folder)
    assert len(str(server.socket)) <= 100 and not str(server.socket).startswith(str(folder))
    try:
        assert server.start(timeout=20) and server.answers()
        assert DurableServer(folder).socket == server.socket
    finally:
        server.kill()


def test_a_python_whose_path_names_redis_is_not_taken_for_a_server(tmp_path: Path) -> None:
    # A venv named after redis-py (nox's tests_compat, tests_redis7): its processes must
    # never be taken for a stale server and killed.
    venv = tmp_path / "tests_redis7" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    proc = subprocess.Popen([str(venv / "python"), "-c", "import time; time.sleep(30)"])
    try:
        assert not embedded._is_server(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    server = DurableServer(tmp_path / "data")
    try:
        assert server.start(timeout=20)
        pid = server.pid()
        assert pid is not None and embedded._is_server(pid)
    finally:
        server.kill()
