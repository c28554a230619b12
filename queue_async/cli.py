"""The ``queue-async`` command: run workers and look at queues.

    queue-async worker myapp.tasks:queue --concurrency 100 [--burst]
    queue-async worker myapp.tasks:critical myapp.tasks:bulk --strategy weighted --weights 10,1
    queue-async info myapp.tasks:queue

``myapp.tasks:queue`` names a module and the ``Queue`` in it (or a function returning one).
Uses the public API only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

import anyio
from pydantic import ValidationError

from queue_async import Queue, QueueAsyncError, Worker

__all__ = ["load_queue", "main"]


def load_queue(spec: str) -> Queue:
    """Import ``module:attribute`` and return the Queue it names (or a callable's Queue)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"error: {spec!r} should look like 'package.module:queue'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise SystemExit(f"error: module {module_name!r} has no attribute {attribute!r}") from None
    if callable(found) and not isinstance(found, Queue):
        found = found()
    if not isinstance(found, Queue):
        raise SystemExit(f"error: {spec!r} is a {type(found).__name__}, not a queue_async.Queue")
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="queue-async", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker until SIGTERM/SIGINT")
    worker.add_argument(
        "queue", nargs="+", help="module:attribute of the Queue, e.g. myapp.tasks:queue"
    )
    worker.add_argument(
        "--strategy",
        choices=["strict", "weighted"],
        default="strict",
        help="with several queues: always the first with work (strict), or by --weights",
    )
    worker.add_argument(
        "--weights", type=_weights, default=None, help="with --strategy weighted: e.g. 10,1"
    )
    worker.add_argument("--lease", type=float, default=30.0, help="lease length, seconds (30)")
    worker.add_argument("--heartbeat", type=float, default=10.0, help="seconds between (10)")
    worker.add_argument("--concurrency", type=int, default=100, help="jobs at once (100)")
    worker.add_argument("--burst", action="store_true", help="stop when nothing is left to do")
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds running jobs get to finish on SIGTERM (10)",
    )

    info = commands.add_parser("info", help="print the queue's counts as JSON")
    info.add_argument("queue", help="module:attribute of the Queue")
    return parser


def _weights(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 10,1") from None


async def _run_worker(queues: list[Queue], args: argparse.Namespace) -> None:
    try:
        worker = Worker(
            queues,
            strategy=args.strategy,
            weights=args.weights,
            concurrency=args.concurrency,
            shutdown_grace=args.shutdown_grace,
            lease=args.lease,
            heartbeat=args.heartbeat,
        )
        await worker.run(burst=args.burst)
    finally:
        for queue in queues:
            await queue.close()
    if worker.abandoned:
        # Handlers that ignored cancellation are still running; asyncio would wait for them
        # forever at exit. Their jobs were handed back or failed, so nothing is lost.
        logging.getLogger("queue_async.worker").error(
            "%d handlers ignored cancellation; exiting without waiting for them",
            worker.abandoned,
        )
        logging.shutdown()
        os._exit(0)


async def _info(queue: Queue) -> None:
    try:
        stats = await queue.stats()
        print(json.dumps(stats.model_dump(), indent=2))
    finally:
        await queue.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``queue-async`` and ``python -m queue_async``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "worker":
            anyio.run(_run_worker, [load_queue(spec) for spec in args.queue], args)
        else:
            anyio.run(_info, load_queue(args.queue))
    except (QueueAsyncError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
