"""The pages (GET): each reads a bounded amount through ``qa.Admin`` and renders a template.

A page with live parts has a ``.../live`` twin that renders only those parts, as JSON, for
``dashboard.js`` to swap in (see ``Dashboard.live``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

import queue_async as qa
from queue_async.dashboard.access import CsrfTokens
from queue_async.dashboard.views import chart

if TYPE_CHECKING:
    from queue_async.dashboard.access import Access
    from queue_async.dashboard.app import Dashboard

__all__ = ["MAX_BULK", "MAX_PAGE", "STATES"]

STATES = ("ready", "scheduled", "active", "dead", "done")
ORDERS = ("oldest", "newest")
MAX_PAGE = 200
"""Jobs one page shows at most."""
_CALLS_PER_PAGE = 5
"""Listing calls one page makes at most to fill itself under a filter (each looks at 1,000
jobs at most): a page of a million-job queue reads 5,000 jobs, whatever the filter."""
_AUDIT_PAGE = 50
MAX_BULK = 10_000
"""Jobs one bulk action (retry or delete every dead job that matches) touches at most."""


# -- overview -------------------------------------------------------------------------------


async def _overview(dash: Dashboard, request: Request) -> dict[str, Any]:
    queues = sorted(await dash.admin.queues(), key=lambda s: s.queue)
    dash.samples.record(queues)
    return {"queues": queues, "chart": chart(dash.samples.minutes())}


async def overview(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    return await dash.page(request, "overview.html", level=level, **await _overview(dash, request))


async def overview_live(dash: Dashboard, request: Request) -> Response:
    await dash.level(request)
    context = await _overview(dash, request)
    return dash.live(request, {
        "queues": dash.fragment("_queues.html", request, **context),
        "chart": dash.fragment("_chart.html", request, **context),
    })  # fmt: skip


# -- one queue ------------------------------------------------------------------------------


async def _queue(dash: Dashboard, request: Request) -> dict[str, Any]:
    name = request.path_params["queue"]
    admin = await dash.admin_for(name)
    stats = await admin.stats()
    dash.samples.record([stats])
    workers = await admin.workers()
    running = sorted(
        ((worker, job) for worker in workers for job in worker.jobs),
        key=lambda pair: pair[1].started_at or pair[0].started_at,
    )
    tasks = set(stats.paused_tasks) | set(stats.held_by_task)
    if admin.queue is dash.admin.queue:
        tasks |= set(dash.admin.queue.tasks)
    return {
        "name": name,
        "stats": stats,
        "running": running,
        "tasks": sorted(tasks),
        "chart": chart(dash.samples.minutes(name)),
    }


async def queue(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    return await dash.page(request, "queue.html", level=level, **await _queue(dash, request))


async def queue_live(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    context = await _queue(dash, request)
    regions = {
        name: dash.fragment(
            f"_{name}.html",
            request,
            level=level,
            csrf=request.cookies.get(CsrfTokens.cookie, ""),
            **context,
        )
        for name in ("counts", "running", "chart")
    }
    return dash.live(request, regions)


# -- jobs -----------------------------------------------------------------------------------


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "50")
    try:
        limit = int(text)
    except ValueError:
        raise HTTPException(400, f"limit should be a whole number, not {text!r}.") from None
    if not 1 <= limit <= MAX_PAGE:
        raise HTTPException(400, f"limit should be from 1 to {MAX_PAGE}, not {limit}.")
    return limit


async def jobs(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    name, state = request.path_params["queue"], request.path_params["state"]
    if state not in STATES:
        raise HTTPException(404, f"No such state {state!r}: {', '.join(STATES)}.")
    params = request.query_params
    order = params.get("order", "oldest")
    if order not in ORDERS:
        raise HTTPException(400, f"order should be oldest or newest, not {order!r}.")
    limit = _limit(request)
    task = params.get("task") or None
    search = params.get("search") or None
    if search and not dash.can_search(level):
        raise HTTPException(403, "Search is for admins here (it matches redacted arguments).")
    admin = await dash.admin_for(name)
    cursor = params.get("cursor") or None
    found: list[qa.Job] = []
    scanned = 0
    for _ in range(_CALLS_PER_PAGE):
        page = await admin.jobs(
            state, task=task, search=search, order=order,  # type: ignore[arg-type]
            cursor=cursor, limit=limit - len(found),
        )  # fmt: skip
        found += page.jobs
        scanned += page.scanned
        cursor = page.cursor
        if cursor is None or len(found) >= limit:
            break
    stats = await admin.stats()
    return await dash.page(
        request, "jobs.html", level=level, name=name, state=state, states=STATES,
        jobs=[dash.shown(job) for job in found], cursor=cursor, scanned=scanned,
        order=order, task=task or "", search=search or "", limit=limit, stats=stats,
        first=params.get("cursor") is None, can_search=dash.can_search(level),
        max_bulk=MAX_BULK,
    )  # fmt: skip


async def _job(dash: Dashboard, request: Request) -> dict[str, Any]:
    name = request.path_params["queue"]
    job_id = request.query_params.get("id")
    if not job_id:
        raise HTTPException(400, "Which job? Give its id: job?id=...")
    admin = await dash.admin_for(name)
    return {"name": name, "job": dash.shown(await admin.job(job_id))}


async def job(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    return await dash.page(request, "job.html", level=level, **await _job(dash, request))


async def job_live(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    context = await _job(dash, request)
    csrf = request.cookies.get(CsrfTokens.cookie, "")
    return dash.live(
        request, {"job": dash.fragment("_job.html", request, level=level, csrf=csrf, **context)}
    )


# -- workers, crons, audit ------------------------------------------------------------------


async def _workers(dash: Dashboard, request: Request) -> dict[str, Any]:
    name = request.path_params["queue"]
    admin = await dash.admin_for(name)
    workers = sorted(await admin.workers(), key=lambda w: (w.host, w.pid, w.id))
    return {"name": name, "workers": workers}


async def workers(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    return await dash.page(request, "workers.html", level=level, **await _workers(dash, request))


async def workers_live(dash: Dashboard, request: Request) -> Response:
    await dash.level(request)
    context = await _workers(dash, request)
    return dash.live(request, {"workers": dash.fragment("_workers.html", request, **context)})


async def crons(dash: Dashboard, request: Request) -> Response:
    level = await dash.level(request)
    name = request.path_params["queue"]
    admin = await dash.admin_for(name)
    schedules = sorted(await admin.crons(), key=lambda c: c.name)
    return await dash.page(request, "crons.html", level=level, name=name, crons=schedules)


async def audit(dash: Dashboard, request: Request) -> Response:
    level: Access = await dash.level(request)
    text = request.query_params.get("offset", "0")
    if not text.isdigit():
        raise HTTPException(400, f"offset should be a whole number, not {text!r}.")
    offset = min(int(text), dash.audit.max_len)
    entries = await dash.audit.page(offset, _AUDIT_PAGE)
    return await dash.page(
        request, "audit.html", level=level, entries=entries, offset=offset,
        page_size=_AUDIT_PAGE, total=await dash.audit.length(), kept=dash.audit.max_len,
    )  # fmt: skip
