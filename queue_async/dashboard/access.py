"""Who may do what: access levels, the hooks that decide them, and CSRF tokens for actions."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum

from starlette.requests import Request

import queue_async as qa

__all__ = [
    "Access",
    "Authorize",
    "CsrfTokens",
    "Identify",
    "Redact",
    "default_identify",
    "resolve_access",
]


class Access(StrEnum):
    """What a request may do, as ``authorize(request)`` decides."""

    NONE = "none"
    """Nothing: every page answers 403."""
    READ = "read"
    """See every page; no action (the default)."""
    ADMIN = "admin"
    """See and act: retry, delete, purge, pause, resume, cancel, abort."""

    @property
    def can_read(self) -> bool:
        return self is not Access.NONE

    @property
    def can_act(self) -> bool:
        return self is Access.ADMIN


Authorize = Callable[[Request], Access | Awaitable[Access]]
"""``authorize(request) -> Access`` (plain or async): the access level of one request."""
Redact = Callable[[qa.Job], qa.Job]
"""``redact(job) -> job``: what the dashboard shows of a job (hide arguments, results)."""
Identify = Callable[[Request], str]
"""``identify(request) -> str``: who made a request, for the audit log."""


def read_only(request: Request) -> Access:
    """The default: everyone may look, nobody may act."""
    del request
    return Access.READ


async def resolve_access(authorize: Authorize, request: Request) -> Access:
    """The level ``authorize`` gives ``request``; anything but an ``Access`` is refused."""
    level = authorize(request)
    if inspect.isawaitable(level):
        level = await level
    if not isinstance(level, Access):
        raise TypeError(f"authorize() should return a dashboard Access, not {level!r}")
    return level


def default_identify(request: Request) -> str:
    """The authenticated user's name (Starlette's ``AuthenticationMiddleware``), else the
    client's address."""
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        name = getattr(user, "display_name", "")
        if name:
            return str(name)
    return request.client.host if request.client else "unknown"


class CsrfTokens:
    """Signed double-submit tokens: a random nonce and its HMAC, in a ``SameSite=Strict``
    cookie and in every form; an action is taken only when both are there, equal and signed
    with this dashboard's secret. Stateless, so several dashboard processes can share a
    ``secret``."""

    cookie = "qa_dashboard_csrf"
    field = "csrf"

    def __init__(self, secret: str | bytes | None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        self._key = secret.encode() if isinstance(secret, str) else secret

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def new(self) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        nonce, _, signature = token.partition(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def check(self, cookie: str | None, submitted: str | None) -> bool:
        """True if the form's token matches the cookie's and is ours."""
        if cookie is None or submitted is None:
            return False
        return hmac.compare_digest(cookie, submitted) and self.valid(cookie)
