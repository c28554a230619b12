"""The standalone dashboard (``queue-async dashboard``) as a subprocess over real HTTP, and the
wheel carrying its templates and static files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import queue_async as qa
from tests.test_fastapi import free_port

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent


def start_dashboard(
    redis_url: str, queue: str, *extra: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``queue-async dashboard`` on a free port; its base URL once it answers."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "queue_async", "dashboard", "--url", redis_url,
             "--queue", queue, "--port", str(port), *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def read(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    with anyio.fail_after(20):
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {read(log)}")
            try:
                async with httpx.AsyncClient() as http:
                    await http.get(base + "/static/dashboard.js")
                return
            except httpx.TransportError:
                await anyio.sleep(0.1)


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_standalone_binds_loopback_and_is_read_only_unless_admin(
    queue: qa.Queue, redis_url: str, tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    await queue.enqueue("t.standalone")
    for extra, can_act in (((), False), (("--admin",), True)):
        log = tmp_path / f"dashboard{len(extra)}.log"
        proc, base = start_dashboard(redis_url, queue.name, *extra, log=log)
        stop.append(proc)
        await wait_up(base, proc, log)
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get(f"/q/{queue.name}")
            assert page.status_code == 200 and 'data-count="ready">1<' in page.text
            csrf = http.cookies["qa_dashboard_csrf"]
            response = await http.post(
                f"/q/{queue.name}/gate", data={"csrf": csrf, "action": "pause"}
            )
            assert response.status_code == (303 if can_act else 403)
        assert (await queue.stats()).paused is can_act
        assert "127.0.0.1" in log.read_text()
        proc.terminate()
        # uvicorn shuts down cleanly, then re-raises SIGTERM for the parent to see.
        assert proc.wait(10) in (0, -15), log.read_text()
        assert "Application shutdown complete" in log.read_text()
    await queue.client.delete(f"{queue.prefix}:dashboard:audit")


def test_without_the_extra_the_command_prints_the_pip_line(tmp_path: Path) -> None:
    # A shadow package that fails to import stands in for a missing starlette.
    (tmp_path / "starlette").mkdir()
    (tmp_path / "starlette" / "__init__.py").write_text("raise ImportError('no starlette')")
    done = subprocess.run(
        [sys.executable, "-m", "queue_async", "dashboard"],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=30,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "pip install 'queue-async[dashboard]'" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT, check=True, timeout=240,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("queue_async-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    here = ROOT / "queue_async" / "dashboard"
    for kind in ("templates", "static"):
        files = {f"queue_async/dashboard/{kind}/{p.name}" for p in (here / kind).iterdir()}
        assert files and files <= names
