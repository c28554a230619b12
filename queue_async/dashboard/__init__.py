"""A web dashboard for queue_async: see and repair every queue from a browser.

An ASGI app (Starlette and Jinja2, from the ``dashboard`` extra) that reads and acts through
``qa.Admin`` only, so every page does bounded work however many jobs are queued::

    from queue_async.dashboard import Access, dashboard

    app.mount("/queues", dashboard(queue, authorize=lambda request: Access.ADMIN))

Standalone: ``queue-async dashboard --url redis://... --port 8080`` (127.0.0.1, read-only
unless ``--admin``).
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401 (checked here so that the error names the extra)
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the dashboard needs {exc.name or 'its dependencies'}: "
        "pip install 'queue-async[dashboard]'"
    ) from exc

from queue_async.dashboard.access import Access, Authorize, Identify, Redact
from queue_async.dashboard.app import Dashboard, dashboard
from queue_async.dashboard.audit import AuditEntry, AuditLog
from queue_async.dashboard.samples import Samples

__all__ = [
    "Access",
    "AuditEntry",
    "AuditLog",
    "Authorize",
    "Dashboard",
    "Identify",
    "Redact",
    "Samples",
    "dashboard",
]
