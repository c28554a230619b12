"""End to end in Debian's headless Chromium (through playwright's Python package, pointed at
/usr/bin/chromium; no browser download): the standalone dashboard, a worker and real jobs.

Run by ``nox -s tests_browser`` (which installs chromium and playwright); skipped where either
is missing. Screenshots go to $QA_DASHBOARD_SCREENSHOTS, else to the test's tmp_path (printed).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import queue_async as qa
from tests.helpers import drain
from tests.test_dashboard_server import start_dashboard, wait_up

# `nox -s tests_browser` sets QA_REQUIRE_BROWSER: there a missing browser fails, not skips.
REQUIRED = bool(os.environ.get("QA_REQUIRE_BROWSER"))
if REQUIRED:
    import playwright.async_api as playwright
else:
    playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not REQUIRED and not Path(CHROMIUM).exists(),
        reason="no chromium (apt-get install chromium)",
    ),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright.async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


async def test_operator_retries_a_dead_job_watches_it_complete_and_pauses_the_queue(
    queue: qa.Queue, redis_url: str, tmp_path: Path, browser: Any
) -> None:
    shots = screenshots(tmp_path)

    @queue.task(name="billing.charge", retries=0)
    async def charge(ctx: qa.JobContext, customer: str, cents: int) -> str:
        if ctx.attempt == 1:
            raise qa.Fatal(f"card declined for {customer}")
        return f"charged {customer} {cents}"

    @queue.task(name="reports.build")
    async def build(ctx: qa.JobContext, report: str) -> None:
        await ctx.checkin(f"building {report}", progress=0.4)
        await anyio.sleep(60)

    @queue.task(name="emails.send")
    async def send(address: str) -> str:
        return f"sent to {address}"

    dead = await charge.enqueue("acme", 4200)
    for n in range(3):
        await send.enqueue(f"user{n}@example.com")
    await drain(queue)
    for n in range(4):
        await send.options(delay=3600).enqueue(f"later{n}@example.com")

    log = tmp_path / "dashboard.log"
    proc, base = start_dashboard(redis_url, queue.name, "--admin", log=log)
    try:
        await wait_up(base, proc, log)
        worker = qa.Worker(queue, heartbeat=0.5, lease=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            await build.enqueue("monthly")
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("dialog", lambda dialog: asyncio_task(dialog.accept()))

            # The overview: every queue with its counts; the dead one shows.
            await page.goto(f"{base}/")
            row = page.locator(f'tr[data-queue="{queue.name}"]')
            await playwright.expect(row.locator('[data-count="dead"]')).to_have_text("1")
            await playwright.expect(row.locator('[data-count="scheduled"]')).to_have_text("4")
            await page.screenshot(path=shots / "overview.png", full_page=True)

            # The queue: counts, and the running job appears live (no reload).
            await page.goto(f"{base}/q/{queue.name}")
            await playwright.expect(page.locator('[data-region="running"]')).to_contain_text(
                "building monthly", timeout=15_000
            )
            await page.screenshot(path=shots / "queue.png", full_page=True)
            await page.goto(f"{base}/q/{queue.name}/workers")
            await playwright.expect(page.locator("#workers")).to_contain_text("reports.build")
            await page.screenshot(path=shots / "workers.png", full_page=True)

            # The dead job: open it from the dead list, retry it, watch it complete.
            await page.goto(f"{base}/")
            await row.locator('[data-count="dead"]').click()
            await playwright.expect(page.locator("#jobs")).to_contain_text("billing.charge")
            await page.screenshot(path=shots / "dead.png", full_page=True)
            await page.locator(f'a:text-is("{dead.id}")').click()
            await playwright.expect(page.locator('[data-testid="job-status"]')).to_have_text("dead")
            await playwright.expect(page.locator(".traceback")).to_contain_text("card declined")
            await page.screenshot(path=shots / "job-dead.png", full_page=True)
            await page.get_by_role("button", name="Retry now").click()
            await playwright.expect(page.locator(".flash")).to_contain_text("Done: retry.")
            await playwright.expect(page.locator('[data-testid="job-status"]')).to_have_text(
                "done", timeout=15_000
            )
            await playwright.expect(page.locator('[data-testid="job-result"]')).to_contain_text(
                "charged acme 4200"
            )
            await page.screenshot(path=shots / "job.png", full_page=True)
            assert await dead.result(timeout=5) == "charged acme 4200"

            # Pause the queue (the button asks first; the dialog is accepted).
            await page.goto(f"{base}/q/{queue.name}")
            await page.get_by_role("button", name="Pause queue").click()
            await playwright.expect(page.locator('[data-testid="queue-state"]')).to_have_text(
                "paused"
            )
            assert (await queue.stats()).paused
            await page.goto(f"{base}/audit")
            await playwright.expect(page.locator("#audit")).to_contain_text("pause")
            await page.screenshot(path=shots / "audit.png", full_page=True)
            tg.cancel_scope.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await queue.client.delete(f"{queue.prefix}:dashboard:audit")
    taken = {p.name for p in shots.iterdir()}
    assert {"overview.png", "queue.png", "workers.png", "dead.png", "job.png", "audit.png"} <= taken


def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go (printed: they are the test's artefacts)."""
    shots = Path(os.environ.get("QA_DASHBOARD_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {shots}")
    return shots


def asyncio_task(coro: Any) -> None:
    """Run a playwright coroutine from its (synchronous) event callbacks."""
    asyncio.get_running_loop().create_task(coro)
