"""The ``Dashboard`` ASGI app: routes, access checks, rendering, and the admins it reads.

Pages are in ``pages.py``, actions in ``actions.py``; both go through ``qa.Admin`` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import queue_async as qa
from queue_async.dashboard import actions, pages
from queue_async.dashboard.access import (
    Access,
    Authorize,
    CsrfTokens,
    Identify,
    Redact,
    default_identify,
    read_only,
    resolve_access,
)
from queue_async.dashboard.audit import AuditLog
from queue_async.dashboard.samples import Samples
from queue_async.dashboard.views import FILTERS

__all__ = ["Dashboard", "dashboard"]

_HERE = Path(__file__).parent
_MAX_FORM_BYTES = 64 * 1024
_MAX_ADMINS = 64
"""Admins of other queues kept open at once (each has a small pool of its own)."""


def dashboard(
    target: qa.Queue | qa.Admin,
    *,
    authorize: Authorize | None = None,
    redact: Redact | None = None,
    identify: Identify | None = None,
    secret: str | bytes | None = None,
    audit_max: int = 10_000,
    audit: AuditLog | None = None,
    poll_interval: float = 3.0,
    title: str = "queue_async",
    owns: bool = False,
) -> Dashboard:
    """The dashboard of ``target``'s queue and of every queue of its key prefix.

    Args:
        target: the app's ``Queue``, or an ``Admin`` (``qa.Admin.connect(url, name=...)``).
        authorize: ``authorize(request) -> Access`` (plain or async) per request; by default
            everyone may look (``Access.READ``) and nobody may act.
        redact: ``redact(job) -> job`` for every job shown (hide arguments and results). With
            it, read-only viewers cannot search (a search matches the hidden arguments).
        identify: who made a request, for the audit log (default: the authenticated user's
            name, else the client's address).
        secret: signs the CSRF tokens; give the same one to every process behind one URL
            (default: random per process).
        audit_max: entries the audit log keeps (a capped list on the server, per prefix).
        audit: the audit log to write to, instead of ``<prefix>:dashboard:audit`` on the
            queue's server.
        poll_interval: seconds between live updates of an open page.
        owns: close ``target`` when the app shuts down (the standalone command does).
    """
    admin = target if isinstance(target, qa.Admin) else qa.Admin(target)
    return Dashboard(
        admin,
        authorize=authorize or read_only,
        redact=redact,
        identify=identify or default_identify,
        csrf=CsrfTokens(secret),
        audit=audit or AuditLog(admin.queue.client, admin.queue.prefix, max_len=audit_max),
        poll_interval=poll_interval,
        title=title,
        owns=owns,
    )


class Dashboard:
    """An ASGI app (mount it, or serve it with uvicorn); ``aclose()`` closes what it opened
    (a mounted app's lifespan is not run by Starlette, so call it from yours)."""

    def __init__(
        self,
        admin: qa.Admin,
        *,
        authorize: Authorize,
        redact: Redact | None,
        identify: Identify,
        csrf: CsrfTokens,
        audit: AuditLog,
        poll_interval: float,
        title: str,
        owns: bool,
    ) -> None:
        self.admin = admin
        self.authorize = authorize
        self.redact = redact
        self.identify = identify
        self.csrf = csrf
        self.audit = audit
        self.poll_interval = poll_interval
        self.title = title
        self.samples = Samples()
        self._owns = owns
        self._admins: OrderedDict[str, qa.Admin] = OrderedDict()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters.update(FILTERS)
        self.app = Starlette(
            routes=_routes(self),
            lifespan=self._lifespan,
            exception_handlers={
                HTTPException: self._http_error,
                qa.JobNotFound: self._not_found,
                qa.ConfigurationError: self._bad_input,
                qa.BrokerError: self._unavailable,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the admins of other queues it opened (and ``target``, if it owns it)."""
        while self._admins:
            _, admin = self._admins.popitem()
            await admin.aclose()
        if self._owns:
            await self.admin.aclose()

    # -- helpers for pages and actions ------------------------------------------------------

    async def admin_for(self, name: str) -> qa.Admin:
        """The admin of queue ``name`` (of the same server and prefix), kept for reuse."""
        if name == self.admin.queue.name:
            return self.admin
        admin = self._admins.get(name)
        if admin is None:
            admin = self._admins[name] = self.admin.for_queue(name)
            while len(self._admins) > _MAX_ADMINS:
                _, oldest = self._admins.popitem(last=False)
                await oldest.aclose()
        self._admins.move_to_end(name)
        return admin

    async def level(self, request: Request, *, act: bool = False) -> Access:
        """The request's access level; 403 unless it may look (or act, with ``act``)."""
        level = await resolve_access(self.authorize, request)
        if not level.can_read:
            raise HTTPException(403, "You may not see this dashboard.")
        if act and not level.can_act:
            raise HTTPException(403, "This dashboard is read-only for you.")
        return level

    def shown(self, job: qa.Job) -> qa.Job:
        return self.redact(job) if self.redact is not None else job

    def can_search(self, level: Access) -> bool:
        return self.redact is None or level.can_act

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def fragment(self, template: str, request: Request, /, **context: Any) -> str:
        return self.templates.get_template(template).render(base=self.base(request), **context)

    async def page(
        self,
        request: Request,
        template: str,
        /,
        *,
        level: Access,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """A full page, with the CSRF cookie set if the browser has no valid one."""
        token = request.cookies.get(CsrfTokens.cookie)
        fresh = not self.csrf.valid(token)
        if fresh or token is None:
            token = self.csrf.new()
        html = self.templates.get_template(template).render(
            base=self.base(request),
            level=level,
            csrf=token,
            title=self.title,
            home=self.admin.queue.name,
            poll_ms=int(self.poll_interval * 1000),
            done=request.query_params.get("done"),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        if fresh:
            response.set_cookie(
                CsrfTokens.cookie, token, httponly=True, samesite="strict",
                path=self.base(request) or "/",
            )  # fmt: skip
        return response

    def live(self, request: Request, regions: Mapping[str, str]) -> Response:
        """Live regions as JSON, with an ETag: an unchanged page costs a 304 and no redraw."""
        body = json.dumps(regions, sort_keys=True).encode()
        etag = '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form, after the CSRF and origin checks (403 otherwise)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPException(415, "Actions are posted as forms.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                raise HTTPException(413, "That form is too large.")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise HTTPException(403, "Refused: the action came from another site.")
        if not self.csrf.check(request.cookies.get(CsrfTokens.cookie), fields.get("csrf")):
            raise HTTPException(403, "Refused: the form's CSRF token is missing or stale.")
        return fields

    async def who(self, request: Request) -> str:
        return self.identify(request)

    # -- errors -----------------------------------------------------------------------------

    async def _error(self, request: Request, status: int, message: str) -> Response:
        try:
            level = await resolve_access(self.authorize, request)
        except Exception:  # noqa: BLE001 (an error page must not fail on the hook)
            level = Access.NONE
        if request.url.path.endswith("/live"):
            return Response(json.dumps({"error": message}), status, media_type="application/json")
        return await self.page(request, "error.html", level=level, status=status, message=message)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await self._error(request, exc.status_code, str(exc.detail))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, qa.JobNotFound)
        return await self._error(request, 404, f"No job {exc.job_id!r} in this queue.")

    async def _bad_input(self, request: Request, exc: Exception) -> Response:
        return await self._error(request, 400, str(exc))

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        return await self._error(request, 503, f"The queue's server cannot be reached: {exc}")


def _routes(dash: Dashboard) -> list[Route | Mount]:
    def bind(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            response: Response = await handler(dash, request)
            return response

        return endpoint

    get, post = ["GET"], ["POST"]
    return [
        Route("/", bind(pages.overview), methods=get),
        Route("/live", bind(pages.overview_live), methods=get),
        Route("/audit", bind(pages.audit), methods=get),
        Route("/q/{queue}", bind(pages.queue), methods=get),
        Route("/q/{queue}/live", bind(pages.queue_live), methods=get),
        Route("/q/{queue}/jobs/{state}", bind(pages.jobs), methods=get),
        Route("/q/{queue}/job", bind(pages.job), methods=get),
        Route("/q/{queue}/job/live", bind(pages.job_live), methods=get),
        Route("/q/{queue}/workers", bind(pages.workers), methods=get),
        Route("/q/{queue}/workers/live", bind(pages.workers_live), methods=get),
        Route("/q/{queue}/crons", bind(pages.crons), methods=get),
        Route("/q/{queue}/job/act", bind(actions.job_action), methods=post),
        Route("/q/{queue}/gate", bind(actions.gate), methods=post),
        Route("/q/{queue}/dead/bulk", bind(actions.bulk_dead), methods=post),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
