"""Run one admin subcommand: open the ``Admin``, call the command, and turn every error into
one line on stderr and an exit code (the one place where that happens)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.exceptions
from pydantic import ValidationError

import queue_async as qa
from queue_async.cli_tools.commands import COMMANDS, Output, StdoutClosed
from queue_async.cli_tools.interact import EXIT_NOTHING, CliError

__all__ = ["EXIT_UNREACHABLE", "EXIT_USAGE", "run"]

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
_DEFAULT_URL = "redis://localhost:6379/0"
_INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT
_PIPE_CLOSED = 141  # ... and by SIGPIPE

# Connection trouble as the admin layer may let it through: ours, redis-py's, the OS's.
_UNREACHABLE = (
    qa.BrokerConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


def run(args: argparse.Namespace, queue: qa.Queue | None = None) -> int:
    """Run ``args.command`` on ``queue`` (an app's, from ``info module:attr``) or on the queue
    that ``--url``/``--queue``/``--prefix`` name; the exit code."""
    try:
        return anyio.run(_run, args, queue)
    except KeyboardInterrupt:
        # Ctrl-C is how ``info --watch`` ends.
        return 0 if getattr(args, "watch", None) else _INTERRUPTED
    except StdoutClosed:
        # As a shell pipeline sees a command ended by SIGPIPE; and no complaint at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _PIPE_CLOSED
    except (CliError, qa.QueueAsyncError, ValidationError, *_UNREACHABLE) as exc:
        message, code = _explained(exc, args, queue)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return code


def _explained(
    exc: BaseException, args: argparse.Namespace, queue: qa.Queue | None
) -> tuple[str, int]:
    """The one line and the exit code for an error (most specific first: the connection
    error and the not-found are ``QueueAsyncError`` too)."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, qa.JobNotFound):
        name = _name(args, queue)
        prefix = queue.prefix if queue is not None else args.prefix
        return f"no job {exc.job_id!r} in queue {name!r} (prefix {prefix!r})", EXIT_NOTHING
    if isinstance(exc, _UNREACHABLE):
        return f"cannot reach the server at {_url(args, queue)}: {exc}", EXIT_UNREACHABLE
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return (f"{where}: {first['msg']}" if where else first["msg"]), EXIT_USAGE
    if isinstance(exc, qa.ConfigurationError):
        return str(exc), EXIT_USAGE
    return str(exc), EXIT_NOTHING


async def _run(args: argparse.Namespace, queue: qa.Queue | None) -> int:
    out = Output(as_json=args.json or queue is not None)
    command = COMMANDS[args.command]
    if queue is not None:
        try:
            return await command(qa.Admin(queue), args, out)
        finally:
            await queue.close()
    admin = qa.Admin.connect(
        args.url, name=_name(args, queue), prefix=args.prefix, shards=args.shards
    )
    async with admin:
        return await command(admin, args, out)


def _name(args: argparse.Namespace, queue: qa.Queue | None) -> str:
    return queue.name if queue is not None else args.queue or "default"


def _url(args: argparse.Namespace, queue: qa.Queue | None) -> str:
    """The server's URL as the operator gave it, without its password."""
    if queue is not None:
        return "the app's queue server"
    url = args.url or os.environ.get("REDIS_URL") or _DEFAULT_URL
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))
