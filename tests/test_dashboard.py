"""queue_async.dashboard over ASGI with httpx, on a real server: every page and action, access
levels, redaction, CSRF refusals and bad input."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import queue_async as qa
from queue_async.dashboard import Access, AuditLog, Dashboard, Samples, dashboard
from tests.helpers import drain

pytestmark = pytest.mark.anyio


def admin_level(request: Request) -> Access:
    return Access.ADMIN


@pytest.fixture
async def dash(queue: qa.Queue) -> AsyncIterator[Dashboard]:
    # An audit log of the test's own, so that tests in parallel do not see each other's.
    app = dashboard(queue, authorize=admin_level, audit=AuditLog(queue.client, queue.name))
    yield app
    await queue.client.delete(app.audit.key)
    await app.aclose()


@pytest.fixture
async def http(dash: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=dash)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        yield client


async def token(http: httpx.AsyncClient, url: str = "/") -> str:
    """The CSRF token of a page's forms (and the cookie, now in the client's jar)."""
    page = await http.get(url)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if found:
        return found.group(1)
    return http.cookies["qa_dashboard_csrf"]


async def post(http: httpx.AsyncClient, url: str, page: str, **fields: str) -> httpx.Response:
    return await http.post(url, data={"csrf": await token(http, page), **fields})


async def dead_jobs(queue: qa.Queue, count: int, *, task: str = "boom") -> list[str]:
    """``count`` jobs of a task that fails for good, run to dead."""

    @queue.task(name=task, retries=0)
    async def boom(n: int) -> None:
        raise ValueError(f"boom number {n}")

    handles = [await boom.enqueue(n) for n in range(count)]
    await drain(queue)
    return [h.id for h in handles]


async def test_overview_shows_every_queue_with_counts_and_a_chart(
    queue: qa.Queue, second: qa.Queue, http: httpx.AsyncClient
) -> None:
    await queue.enqueue("a.task", 1)
    await queue.enqueue("a.task", 2)
    await second.enqueue("b.task")
    page = await http.get("/")
    assert page.status_code == 200
    row = re.search(rf'<tr data-queue="{queue.name}">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert '<a href="/q/' + queue.name + '/jobs/ready" data-count="ready">2</a>' in row.group(1)
    assert f'data-queue="{second.name}"' in page.text
    assert "Last hour, per minute" in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_jobs_page_by_state_pages_with_a_cursor_and_sorts(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    ids = [(await queue.enqueue("t.page", n)).id for n in range(5)]
    first = await http.get(f"/q/{queue.name}/jobs/ready", params={"limit": 2})
    listed = re.findall(r"job\?id=([\w-]+)\">", first.text)
    assert listed == ids[:2]
    cursor = re.search(r'rel="next" href="\?([^"]+)"', first.text)
    assert cursor is not None
    nxt = await http.get(f"/q/{queue.name}/jobs/ready?" + cursor.group(1).replace("&amp;", "&"))
    assert re.findall(r"job\?id=([\w-]+)\">", nxt.text) == ids[2:4]
    newest = await http.get(f"/q/{queue.name}/jobs/ready", params={"order": "newest", "limit": 2})
    assert re.findall(r"job\?id=([\w-]+)\">", newest.text) == ids[::-1][:2]


async def test_jobs_filter_by_task_and_search_text(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    await queue.enqueue("t.mail", "alice@example.com")
    bob = await queue.enqueue("t.mail", "bob@example.com")
    other = await queue.enqueue("t.other", "bob@example.com")
    page = await http.get(f"/q/{queue.name}/jobs/ready", params={"search": "BOB"})
    assert set(re.findall(r"job\?id=([\w-]+)\">", page.text)) == {bob.id, other.id}
    page = await http.get(f"/q/{queue.name}/jobs/ready", params={"search": "bob", "task": "t.mail"})
    assert re.findall(r"job\?id=([\w-]+)\">", page.text) == [bob.id]


async def test_job_detail_shows_arguments_result_error_headers_and_timeline(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    @queue.task(name="t.detail")
    async def detail(ctx: qa.JobContext, x: int, *, label: str) -> dict[str, int]:
        await ctx.checkin("halfway", progress=0.5)
        return {"double": 2 * x}

    handle = await detail.options(headers={"tenant": "acme"}).enqueue(21, label="<b>hi</b>")
    await drain(queue)
    page = await http.get(f"/q/{queue.name}/job", params={"id": handle.id})
    assert page.status_code == 200
    text = page.text
    assert "&#34;double&#34;: 42" in text or "&quot;double&quot;: 42" in text
    assert "&lt;b&gt;hi&lt;/b&gt;" in text and "<b>hi</b>" not in text  # escaped
    assert "tenant" in text and "acme" in text
    assert "halfway" in text and "50%" in text
    assert "Enqueued" in text and "Started" in text and "Finished: done" in text

    dead = (await dead_jobs(queue, 1))[0]
    page = await http.get(f"/q/{queue.name}/job", params={"id": dead})
    assert "ValueError: boom number 0" in page.text and "Traceback" in page.text


async def test_unknown_job_is_404_and_bad_input_is_400_not_500(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    name = queue.name
    assert (await http.get(f"/q/{name}/job", params={"id": "no-such-job"})).status_code == 404
    assert (await http.get(f"/q/{name}/job", params={"id": "has space"})).status_code == 404
    assert (await http.get(f"/q/{name}/job")).status_code == 400
    assert (await http.get(f"/q/{name}/jobs/bogus")).status_code == 404
    for params in (
        {"limit": "1000000"}, {"limit": "0"}, {"limit": "ten"}, {"order": "sideways"},
        {"cursor": "not-a-cursor"}, {"search": "x" * 10_000},
    ):  # fmt: skip
        response = await http.get(f"/q/{name}/jobs/ready", params=params)
        assert response.status_code == 400, (params, response.text)
    assert (await http.get("/q/bad{name}/jobs/ready")).status_code == 400
    assert (await http.get("/audit", params={"offset": "-1"})).status_code == 400
    response = await post(http, f"/q/{name}/job/act", f"/q/{name}", id="x", action="explode")
    assert response.status_code == 400
    response = await post(
        http, f"/q/{name}/dead/bulk", f"/q/{name}", action="retry", limit="99999999"
    )
    assert response.status_code == 400


async def test_read_only_by_default_shows_pages_and_refuses_every_action(
    queue: qa.Queue,
) -> None:
    (dead,) = await dead_jobs(queue, 1)
    app = dashboard(queue)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
        page = await http.get(f"/q/{queue.name}/job", params={"id": dead})
        assert page.status_code == 200 and "read-only" in page.text
        assert "Retry now" not in page.text
        csrf = http.cookies["qa_dashboard_csrf"]
        for url, fields in (
            (f"/q/{queue.name}/job/act", {"id": dead, "action": "retry"}),
            (f"/q/{queue.name}/gate", {"action": "pause"}),
            (f"/q/{queue.name}/dead/bulk", {"action": "delete", "confirm": "yes"}),
        ):
            response = await http.post(url, data={"csrf": csrf, **fields})
            assert response.status_code == 403, url
    assert (await queue.job(dead).info()).status is qa.JobStatus.DEAD
    assert not (await queue.stats()).paused
    await app.aclose()


async def test_access_none_refuses_every_page_and_an_async_hook_decides(
    queue: qa.Queue,
) -> None:
    async def by_header(request: Request) -> Access:
        await anyio.lowlevel.checkpoint()
        return Access(request.headers.get("x-level", "none"))

    app = dashboard(queue, authorize=by_header)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
        for url in ("/", "/live", "/audit", f"/q/{queue.name}", f"/q/{queue.name}/jobs/dead"):
            assert (await http.get(url)).status_code == 403, url
        assert (await http.get("/", headers={"x-level": "read"})).status_code == 200
    await app.aclose()


async def test_redact_hides_arguments_and_results_and_read_only_cannot_search(
    queue: qa.Queue,
) -> None:
    @queue.task(name="t.secret")
    async def secret(password: str) -> str:
        return f"token-for-{password}"

    handle = await secret.enqueue("hunter2")
    await drain(queue)
    waiting = await secret.enqueue("swordfish")

    def hide(job: qa.Job) -> qa.Job:
        return job.model_copy(update={"args": ["***"], "kwargs": {}, "result": "***"})

    for level in (Access.READ, Access.ADMIN):
        app = dashboard(queue, authorize=lambda r, level=level: level, redact=hide)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            pages = [
                await http.get(f"/q/{queue.name}/job", params={"id": handle.id}),
                await http.get(f"/q/{queue.name}/job/live", params={"id": handle.id}),
                await http.get(f"/q/{queue.name}/jobs/done"),
                await http.get(f"/q/{queue.name}/jobs/ready"),
            ]
            for page in pages:
                assert page.status_code == 200
                assert "hunter2" not in page.text and "swordfish" not in page.text
            assert waiting.id in pages[3].text
            search = await http.get(f"/q/{queue.name}/jobs/ready", params={"search": "sword"})
            assert search.status_code == (403 if level is Access.READ else 200)
        await app.aclose()


async def test_actions_without_a_valid_csrf_token_or_from_another_origin_are_refused(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    (dead,) = await dead_jobs(queue, 1)
    url = f"/q/{queue.name}/job/act"
    fields = {"id": dead, "action": "delete"}
    csrf = await token(http, f"/q/{queue.name}")
    assert (await http.post(url, data=fields)).status_code == 403
    assert (await http.post(url, data={**fields, "csrf": "forged.value"})).status_code == 403
    forged = "0" * 32 + "." + "0" * 32
    http.cookies.set("qa_dashboard_csrf", forged)
    assert (await http.post(url, data={**fields, "csrf": forged})).status_code == 403
    http.cookies.set("qa_dashboard_csrf", csrf)
    response = await http.post(
        url, data={**fields, "csrf": csrf}, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403
    response = await http.post(url, json={**fields, "csrf": csrf})
    assert response.status_code == 415
    assert (await queue.job(dead).info()).status is qa.JobStatus.DEAD
    response = await http.post(
        url, data={**fields, "csrf": csrf}, headers={"origin": "http://dash"}
    )
    assert response.status_code == 303
    with pytest.raises(qa.JobNotFound):
        await queue.job(dead).info()


async def test_retry_a_dead_job_then_it_completes_and_the_audit_says_who(
    queue: qa.Queue, dash: Dashboard, http: httpx.AsyncClient
) -> None:
    @queue.task(name="t.flaky", retries=0)
    async def flaky(ctx: qa.JobContext) -> str:
        if ctx.attempt == 1:
            raise qa.Fatal("first try fails")
        return "second try works"

    handle = await flaky.enqueue()
    await drain(queue)
    job_page = f"/q/{queue.name}/job?id={handle.id}"
    response = await post(http, f"/q/{queue.name}/job/act", job_page, id=handle.id, action="retry")
    assert response.status_code == 303
    assert response.headers["location"] == job_page.replace("?", "?") + "&done=retry%3Aok"
    await drain(queue)
    assert await handle.result(timeout=5) == "second try works"
    page = await http.get(response.headers["location"])
    assert "Done: retry." in page.text and "second try works" in page.text
    again = await post(http, f"/q/{queue.name}/job/act", job_page, id=handle.id, action="retry")
    assert "Nothing to do" in (await http.get(again.headers["location"])).text
    audit = await http.get("/audit")
    rows = re.findall(r"<tr><td title=.*?</tr>", audit.text, re.S)
    assert len(rows) == 2
    assert "127.0.0.1" in rows[1] and "retry" in rows[1] and handle.id in rows[1]
    assert ">ok<" in rows[1] and "nothing to do" in rows[0]


async def test_bulk_retry_of_dead_jobs_asks_first_then_retries_at_most_the_limit(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    await dead_jobs(queue, 5)
    url, page = f"/q/{queue.name}/dead/bulk", f"/q/{queue.name}/jobs/dead"
    asked = await post(http, url, page, action="retry", limit="3", search="boom")
    assert asked.status_code == 200
    assert "at most\n<b>3</b>" in asked.text and "Yes, retry them" in asked.text
    assert (await queue.stats()).dead == 5
    csrf = re.search(r'name="csrf" value="([^"]+)"', asked.text)
    assert csrf is not None
    done = await http.post(url, data={
        "csrf": csrf.group(1), "action": "retry", "limit": "3", "search": "boom",
        "confirm": "yes",
    })  # fmt: skip
    assert done.status_code == 303 and done.headers["location"].endswith("done=retry_dead%3A3")
    stats = await queue.stats()
    assert stats.dead == 2 and stats.ready == 3
    assert "Retried 3 dead jobs." in (await http.get(done.headers["location"])).text


async def test_bulk_delete_removes_only_the_dead_jobs_that_match(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    await dead_jobs(queue, 2, task="t.keep")
    await dead_jobs(queue, 3, task="t.drop")
    url, page = f"/q/{queue.name}/dead/bulk", f"/q/{queue.name}/jobs/dead"
    done = await post(http, url, page, action="delete", task="t.drop", limit="1000", confirm="yes")
    assert done.status_code == 303
    remaining = await qa.Admin(queue).jobs("dead")
    assert {job.task for job in remaining.jobs} == {"t.keep"} and len(remaining.jobs) == 2


async def test_pause_and_resume_a_queue_and_one_task(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    url, page = f"/q/{queue.name}/gate", f"/q/{queue.name}"
    assert (await post(http, url, page, action="pause")).status_code == 303
    assert (await queue.stats()).paused
    assert "paused" in (await http.get(page)).text
    await post(http, url, page, action="resume")
    assert not (await queue.stats()).paused
    await post(http, url, page, action="pause", task="t.slow")
    assert (await queue.stats()).paused_tasks == ["t.slow"]
    await post(http, url, page, action="resume", task="t.slow")
    assert (await queue.stats()).paused_tasks == []


async def test_cancel_a_waiting_job_and_abort_a_running_one(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    started = anyio.Event()

    @queue.task(name="t.long")
    async def long() -> None:
        started.set()
        await anyio.sleep(30)

    waiting = await queue.enqueue_spec(queue.call("t.other"))
    url = f"/q/{queue.name}/job/act"
    page = f"/q/{queue.name}/job?id={waiting.id}"
    await post(http, url, page, id=waiting.id, action="cancel")
    assert (await waiting.info()).status is qa.JobStatus.CANCELLED

    running = await long.enqueue()
    async with anyio.create_task_group() as tg:
        worker = qa.Worker(queue, heartbeat=0.2, lease=2)
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            await started.wait()
        with anyio.fail_after(10):
            while "t.long" not in (await http.get(f"/q/{queue.name}/workers")).text:
                await anyio.sleep(0.05)
        await post(http, url, f"/q/{queue.name}/job?id={running.id}", id=running.id, action="abort")
        with anyio.fail_after(10):
            while (await running.info()).status is not qa.JobStatus.ABORTED:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()


async def test_queue_page_shows_running_jobs_and_live_updates_use_etags(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    release = anyio.Event()

    @queue.task(name="t.wait")
    async def wait(ctx: qa.JobContext) -> None:
        await ctx.checkin("working hard", progress=0.25)
        await release.wait()

    handle = await wait.enqueue()
    async with anyio.create_task_group() as tg:
        tg.start_soon(qa.Worker(queue, heartbeat=0.2, lease=2).run)
        live = f"/q/{queue.name}/live"
        with anyio.fail_after(10):
            while handle.id not in (await http.get(live)).text:
                await anyio.sleep(0.1)
        first = await http.get(live)
        body: dict[str, Any] = first.json()
        assert set(body) == {"counts", "running", "chart"}
        assert "working hard" in body["running"] and "25%" in body["running"]
        unchanged = await http.get(live, headers={"if-none-match": first.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""
        release.set()
        with anyio.fail_after(10):
            while (
                await http.get(live, headers={"if-none-match": first.headers["etag"]})
            ).status_code == 304:
                await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    overview = await http.get("/live")
    assert set(overview.json()) == {"queues", "chart"}


async def test_crons_page_lists_the_schedules_workers_recorded(
    queue: qa.Queue, http: httpx.AsyncClient
) -> None:
    @queue.cron("0 0 1 1 *", name="new-year")
    async def new_year() -> None: ...

    async with qa.Worker(queue, heartbeat=0.2, lease=2):
        with anyio.fail_after(10):
            while not await qa.Admin(queue).crons():
                await anyio.sleep(0.05)
        page = await http.get(f"/q/{queue.name}/crons")
    assert "new-year" in page.text and "0 0 1 1 *" in page.text


async def test_audit_log_is_capped_and_pages_newest_first(queue: qa.Queue) -> None:
    app = dashboard(
        queue, authorize=admin_level, audit=AuditLog(queue.client, queue.name, max_len=3)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
        for action in ("pause", "resume", "pause", "resume", "pause"):
            await post(http, f"/q/{queue.name}/gate", f"/q/{queue.name}", action=action)
        assert await app.audit.length() == 3
        entries = await app.audit.page()
        assert [e.action for e in entries] == ["pause", "resume", "pause"]
    await queue.client.delete(app.audit.key)
    await app.aclose()


def test_samples_make_a_per_minute_chart_with_gaps_and_bounded_memory() -> None:
    now = [1_000_000 * 60.0]
    samples = Samples(every=10, keep=600, max_queues=2, clock=lambda: now[0])

    def stats(queue: str, processed: int, failed: int = 0) -> qa.QueueStats:
        return qa.QueueStats(
            queue=queue, ready=0, scheduled=0, active=0, dead=0, processed=processed,
            failed=failed, retried=0, workers=0,
        )  # fmt: skip

    for i in range(200):
        samples.record([stats("a", 10 * i, i // 10)])
        samples.record([stats("a", 10**9)])  # within `every`: not sampled
        now[0] += 10
    minutes = samples.minutes("a", count=60)
    assert len(minutes) == 60
    watched = [m for m in minutes if m.known]
    assert len(watched) == 11  # keep=600 s of samples
    assert all(m.processed == 60 for m in watched[1:-1])  # the first and last are partial
    assert samples.minutes("nobody")[-1].known is False
    samples.record([stats("b", 1), stats("c", 1)])
    assert samples.minutes("a") == samples.minutes("nobody")  # "a" dropped: max_queues


async def test_mounted_under_a_path_in_a_starlette_app(queue: qa.Queue) -> None:
    await queue.enqueue("t.mounted")
    inner = dashboard(queue, authorize=admin_level)
    app = Starlette(routes=[Mount("/ops/queues", inner)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        page = await http.get("/ops/queues/")
        assert page.status_code == 200
        assert f'href="/ops/queues/q/{queue.name}"' in page.text
        assert 'src="/ops/queues/static/dashboard.js"' in page.text
        assert (await http.get("/ops/queues/static/dashboard.js")).status_code == 200
        assert "path=/ops/queues" in page.headers["set-cookie"].lower()
        done = await post(http, f"/ops/queues/q/{queue.name}/gate", "/ops/queues/", action="pause")
        assert done.headers["location"] == f"/ops/queues/q/{queue.name}?done=pause%3Aok"
        assert (await queue.stats()).paused
    await queue.client.delete(inner.audit.key)
    await inner.aclose()
