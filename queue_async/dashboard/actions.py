"""The actions (POST): admins only, CSRF-checked, each one audited; then a redirect (303)
back to the page it came from, which says what was done (``?done=...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from queue_async.dashboard.pages import MAX_BULK

if TYPE_CHECKING:
    from queue_async.dashboard.app import Dashboard

__all__ = ["bulk_dead", "gate", "job_action"]

_JOB_ACTIONS = ("retry", "delete", "cancel", "abort")


def _back(dash: Dashboard, request: Request, path: str, **query: str) -> Response:
    url = f"{dash.base(request)}{path}"
    if query:
        url += "?" + urlencode(query)
    return RedirectResponse(url, status_code=303)


async def job_action(dash: Dashboard, request: Request) -> Response:
    await dash.level(request, act=True)
    fields = await dash.form(request)
    name = request.path_params["queue"]
    job_id, action = fields.get("id", ""), fields.get("action", "")
    if action not in _JOB_ACTIONS:
        raise HTTPException(400, f"Unknown action {action!r}: {', '.join(_JOB_ACTIONS)}.")
    if not job_id:
        raise HTTPException(400, "Which job? The form has no id.")
    admin = await dash.admin_for(name)
    if action == "retry":
        done = await admin.retry(job_id)
    elif action == "delete":
        done = await admin.delete(job_id)
    elif action == "cancel":
        done = await admin.cancel(job_id)
    else:
        done = await admin.abort(job_id)
    outcome = "ok" if done else "nothing to do"
    await dash.audit.record(
        who=await dash.who(request), action=action, queue=name, target=job_id, outcome=outcome
    )
    result = f"{action}:{'ok' if done else 'no'}"
    if action == "delete" and done:
        return _back(dash, request, f"/q/{name}/jobs/dead", done=result)
    return _back(dash, request, f"/q/{name}/job", id=job_id, done=result)


async def gate(dash: Dashboard, request: Request) -> Response:
    """Pause or resume the queue, or one task of it (``task`` in the form)."""
    await dash.level(request, act=True)
    fields = await dash.form(request)
    name = request.path_params["queue"]
    action, task = fields.get("action", ""), fields.get("task", "").strip() or None
    if action not in ("pause", "resume"):
        raise HTTPException(400, f"Unknown action {action!r}: pause or resume.")
    admin = await dash.admin_for(name)
    if action == "pause":
        await admin.pause(task)
    else:
        await admin.resume(task)
    await dash.audit.record(
        who=await dash.who(request), action=action, queue=name,
        target=f"task {task}" if task else "queue", outcome="ok",
    )  # fmt: skip
    return _back(dash, request, f"/q/{name}", done=f"{action}:ok")


async def bulk_dead(dash: Dashboard, request: Request) -> Response:
    """Retry or delete every dead job that matches a filter, at most ``limit``
    (``MAX_BULK``): the first post shows what would be done and asks; the second, with
    ``confirm=yes``, does it."""
    level = await dash.level(request, act=True)
    fields = await dash.form(request)
    name = request.path_params["queue"]
    action = fields.get("action", "")
    if action not in ("retry", "delete"):
        raise HTTPException(400, f"Unknown action {action!r}: retry or delete.")
    task = fields.get("task", "").strip() or None
    search = fields.get("search", "").strip() or None
    text = fields.get("limit", "1000").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_BULK:
        raise HTTPException(400, f"limit should be from 1 to {MAX_BULK}, not {text!r}.")
    limit = int(text)
    admin = await dash.admin_for(name)
    described = (
        ", ".join(
            part
            for part in (f"task {task}" if task else "", f"matching {search!r}" if search else "")
            if part
        )
        or "all"
    )
    if fields.get("confirm") != "yes":
        stats = await admin.stats()
        return await dash.page(
            request, "confirm.html", level=level, name=name, action=action, task=task or "",
            search=search or "", limit=limit, dead=stats.dead, described=described,
        )  # fmt: skip
    if action == "retry":
        count = await admin.retry_dead(task=task, search=search, limit=limit)
    else:
        count = await admin.purge("dead", task=task, search=search, limit=limit)
    await dash.audit.record(
        who=await dash.who(request), action=f"{action}_dead", queue=name,
        target=f"{described} (at most {limit})", outcome=f"{count} jobs",
    )  # fmt: skip
    return _back(dash, request, f"/q/{name}/jobs/dead", done=f"{action}_dead:{count}")
