"""``queue-async dashboard``: the dashboard on its own, under uvicorn.

Safe by default: it binds 127.0.0.1 and everyone is read-only; ``--admin`` lets whoever
reaches it act (put it behind your own authentication before binding it elsewhere).
"""

from __future__ import annotations

import ipaddress
import sys

import queue_async as qa
from queue_async.dashboard.access import Access
from queue_async.dashboard.app import dashboard

__all__ = ["serve"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    *,
    url: str | None,
    queue: str,
    prefix: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    admin: bool = False,
    secret: str | None = None,
    log_level: str = "info",
) -> int:
    """Serve the dashboard of ``queue`` (and of every queue of ``prefix``) until Ctrl-C."""
    try:
        import uvicorn  # noqa: PLC0415 (only the standalone dashboard needs a server)
    except ImportError as exc:
        raise ImportError(
            "the standalone dashboard needs uvicorn: pip install 'queue-async[dashboard]'"
        ) from exc
    level = Access.ADMIN if admin else Access.READ
    app = dashboard(
        qa.Admin.connect(url, name=queue, prefix=prefix),
        authorize=lambda request: level,
        secret=secret,
        owns=True,
    )
    if admin and not _loopback(host):
        print(
            f"warning: --admin on {host}: anyone who can reach this port can retry, delete "
            "and purge jobs",
            file=sys.stderr,
        )
    mode = "admin" if admin else "read-only"
    print(f"queue-async dashboard on http://{host}:{port}/ ({mode})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
    return 0
