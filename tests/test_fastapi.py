"""queue_async.contrib.fastapi: real apps under uvicorn in a subprocess, driven over HTTP.

The apps are tests/apps/fastapi_app.py (and examples/fastapi_app.py); each runs its worker in
its lifespan and gets the test's queue through QA_QUEUE.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio

import queue_async as qa

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent
APP = "tests.apps.fastapi_app:app"


@dataclass
class App:
    """A uvicorn process serving one app, and a client for it."""

    proc: subprocess.Popen[bytes]
    http: httpx.AsyncClient
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_uvicorn(
    target: str, env: dict[str, str], log: Path, spawn: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    spawn.append(proc)
    return proc, f"http://127.0.0.1:{port}"


async def until_served_or_exited(app: App, limit: float = 20.0) -> bool:
    """True once the app answers HTTP (whatever the answer), False if its process exits first."""
    with anyio.fail_after(limit):
        while app.proc.poll() is None:
            try:
                await app.http.get("/openapi.json")
            except httpx.TransportError:
                pass
            else:
                return True
            await anyio.sleep(0.05)
    return False


@pytest.fixture
def app_env(redis_url: str, queue: qa.Queue) -> dict[str, str]:
    """The subprocess serves the test's queue (whose keys the ``queue`` fixture deletes)."""
    return {**os.environ, "REDIS_URL": redis_url, "QA_QUEUE": queue.name, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def serve(
    app_env: dict[str, str], tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> Callable[[str], AbstractAsyncContextManager[App]]:
    """Serve an app until the block ends, then stop it with SIGTERM, as a deployment would."""

    @asynccontextmanager
    async def run(target: str) -> AsyncIterator[App]:
        log = tmp_path / f"uvicorn-{len(spawn)}.log"
        proc, url = start_uvicorn(target, app_env, log, spawn)
        limits = httpx.Limits(max_connections=1100, max_keepalive_connections=1100)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=90) as http:
            app = App(proc, http, log)
            assert await until_served_or_exited(app), f"the app did not start:\n{app.output()}"
            yield app
        proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(proc.wait, 15)

    return run


async def connected_clients(client: redis.asyncio.Redis) -> int:
    info = await client.info("clients")
    return int(info["connected_clients"])


@pytest.mark.timeout(180)
async def test_thousand_concurrent_requests_each_await_a_result_on_few_connections(
    serve: Callable[[str], AbstractAsyncContextManager[App]], client: redis.asyncio.Redis
) -> None:
    async with serve(APP) as app:
        assert (await app.http.get("/add", params={"a": 1, "b": 1})).json() == 2
        baseline = await connected_clients(client)
        peak = baseline
        statuses: Counter[int | str] = Counter()
        failures: list[str] = []
        wrong: list[int] = []

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await connected_clients(client))
                await anyio.sleep(0.02)

        transport_retries: list[str] = []

        async def request(i: int) -> None:
            for attempt in (1, 2):
                try:
                    response = await app.http.get("/add", params={"a": i, "b": 1})
                    break
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    # The connection closed before any response (a loopback keep-alive race
                    # between httpx and uvicorn, seen once in a thousand under load): a GET is
                    # sent again, as browsers do. Counted, and bounded below.
                    if attempt == 2:
                        statuses[type(exc).__name__] += 1
                        failures.append(repr(exc))
                        return
                    transport_retries.append(repr(exc))
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    failures.append(repr(exc))
                    return
            statuses[response.status_code] += 1
            if response.status_code != 200:
                failures.append(response.text[:200])
            elif response.json() != i + 1:
                wrong.append(i)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as sampler:
                sampler.start_soon(sample)
                async with anyio.create_task_group() as requests:
                    for i in range(1000):
                        requests.start_soon(request, i)
                sampler.cancel_scope.cancel()
        peak = max(peak, await connected_clients(client))
        server_errors = [line for line in app.output().splitlines() if "Error" in line]

    assert statuses == {200: 1000}, (statuses, failures[:3], server_errors[:5])
    assert len(transport_retries) <= 5, transport_retries
    assert not wrong
    assert peak - baseline <= 40, f"{peak - baseline} more connections under load"


async def test_job_router_reports_missing_pending_failed_and_cancelled_jobs(
    serve: Callable[[str], AbstractAsyncContextManager[App]], queue: qa.Queue
) -> None:
    async with serve(APP) as app:
        http = app.http
        assert (await http.get("/openapi.json")).status_code == 200
        for path in ("/jobs/no-such-job", "/jobs/no-such-job/result", "/jobs/a%20b/result"):
            assert (await http.get(path)).status_code == 404, path
        for bad in ("0", "-1", "soon"):
            response = await http.get("/jobs/no-such-job/result", params={"timeout": bad})
            assert response.status_code == 422, bad

        job_id = (await http.post("/nap", params={"seconds": 2.5})).json()["job_id"]
        response = await http.get(f"/jobs/{job_id}/result", params={"timeout": 0.2})
        assert (response.status_code, response.json()) == (202, {"id": job_id, "status": "pending"})
        info = (await http.get(f"/jobs/{job_id}")).json()
        assert (info["id"], info["task"], info["args"]) == (job_id, "web.nap", [2.5])
        assert info["status"] in ("ready", "active")
        # The test app's max_wait is 1 s: a longer timeout waits no longer than that.
        started = anyio.current_time()
        response = await http.get(f"/jobs/{job_id}/result", params={"timeout": 100})
        assert response.status_code == 202
        assert anyio.current_time() - started < 2
        with anyio.fail_after(10):
            while response.status_code == 202:
                response = await http.get(f"/jobs/{job_id}/result", params={"timeout": 100})
        assert response.status_code == 200
        assert response.json() == {"id": job_id, "status": "complete", "result": "rested"}

        job_id = (await http.post("/boom", params={"message": "bad input"})).json()["job_id"]
        response = await http.get(f"/jobs/{job_id}/result", params={"timeout": 5})
        assert (response.status_code, response.json()) == (
            200,
            {"id": job_id, "status": "failed", "error": "ValueError: bad input"},
        )
        info = (await http.get(f"/jobs/{job_id}")).json()
        assert info["status"] == "dead"
        assert "Traceback" in info["error"]

        nap = queue.task(name="web.nap")(_nap)
        handle = await nap.options(delay=60).enqueue(1.0)
        assert await handle.cancel()
        response = await http.get(f"/jobs/{handle.id}/result")
        assert response.json() == {"id": handle.id, "status": "cancelled"}
    # uvicorn re-raises the SIGTERM once it has shut down cleanly.
    assert app.proc.returncode in (0, -signal.SIGTERM), app.output()
    assert "Application shutdown complete." in app.output()


async def _nap(seconds: float) -> str:
    """The in-process twin of tests.apps.fastapi_app.nap, to enqueue it with options."""
    await anyio.sleep(seconds)
    return "rested"


async def test_app_whose_worker_cannot_start_does_not_serve(
    app_env: dict[str, str], tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "uvicorn.log"
    proc, url = start_uvicorn("tests.apps.fastapi_app:failing_app", app_env, log, spawn)
    async with httpx.AsyncClient(base_url=url) as http:
        served = await until_served_or_exited(App(proc, http, log))
    output = log.read_text(errors="replace")
    assert not served, f"the app served without its worker:\n{output}"
    assert proc.wait() != 0
    assert "Application startup failed" in output
    assert "the database is down" in output


async def test_example_app_signs_up_and_adds(
    serve: Callable[[str], AbstractAsyncContextManager[App]], redis_url: str
) -> None:
    try:
        async with serve("examples.fastapi_app:app") as app:
            response = await app.http.post("/signup", json={"address": "a@b.c"})
            job_id = response.json()["job_id"]
            response = await app.http.get(f"/jobs/{job_id}/result")
            assert response.json()["result"] == "welcome sent to a@b.c (try 1)"
            assert (await app.http.get("/add", params={"a": 1, "b": 2})).json() == 3
    finally:
        async with qa.Queue(redis_url, name="fastapi-demo") as demo:
            keys = [k async for k in demo.client.scan_iter(match=f"{demo._broker.keys.prefix}*")]
            if keys:
                await demo.client.delete(*keys)


def test_import_without_fastapi_says_which_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "import queue_async, queue_async.contrib\n"  # the core never needs the extra
        "import queue_async.contrib.fastapi\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "ImportError: queue_async.contrib.fastapi needs FastAPI: pip install 'queue-async[fastapi]'"
    )
