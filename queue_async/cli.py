"""The ``queue-async`` command: run workers, look at queues, and repair their jobs.

    queue-async worker myapp.tasks:queue --concurrency 100 [--burst]
    queue-async worker myapp.tasks:critical myapp.tasks:bulk --strategy weighted --weights 10,1
    queue-async info [--queue emails] [--watch]
    queue-async jobs --state dead --task myapp.send_email --search timeout
    queue-async retry --dead --task myapp.send_email

``myapp.tasks:queue`` names a module and the ``Queue`` in it (or a function returning one).
Every other subcommand reaches the queue by ``--url``, ``--queue`` and ``--prefix``, with no
import of the app. Uses the public API only; the admin subcommands live in
``queue_async.cli_tools``, imported only when one runs, so that a worker starts without them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn, cast

import anyio
from pydantic import ValidationError

from queue_async import ConfigurationError, Queue, QueueAsyncError, Worker, __version__

__all__ = ["load_queue", "main"]

_EPILOG = """\
exit codes:
  0  done
  1  not found, or the action did nothing (a retry of a job that is not dead, a purge that
     matched no job), or the server refused the command
  2  bad usage: an unknown option or state, bad JSON in --args, a negative --limit
  3  the server cannot be reached
  4  refused: the confirmation was answered no, or there was no terminal to ask and no --yes
  130 interrupted (Ctrl-C), except that Ctrl-C ends `info --watch` with 0

The server is --url, else $REDIS_URL, else redis://localhost:6379/0.
"""


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


def _positive(kind: type[int] | type[float], *, zero: bool = False) -> argparse._ActionType:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{text} should be {'0 or more' if zero else 'positive'}"
            )
        return value

    return parse


def _json_of(kind: type[list[object]] | type[dict[str, object]]) -> argparse._ActionType:
    def parse(text: str) -> object:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
        if not isinstance(value, kind):
            shape = "an array, e.g. '[1, \"a\"]'" if kind is list else "object, e.g. '{\"a\": 1}'"
            raise argparse.ArgumentTypeError(f"should be a JSON {shape}, not {text!r}")
        return value

    return parse


def _weights(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 10,1") from None


def _connection() -> argparse.ArgumentParser:
    """The options every admin subcommand takes, to reach a queue without the app."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        help="the server (default: $REDIS_URL, else redis://localhost:6379/0)",
    )
    common.add_argument("--queue", default=None, help="the queue's name (default: default)")
    common.add_argument("--prefix", default="qa", help="the queue's key prefix (default: qa)")
    common.add_argument(
        "--shards",
        type=_positive(int),
        default=1,
        help="the queue's shards, if it is sharded (Queue(shards=N); default: 1)",
    )
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return common


def _filtering(parser: argparse.ArgumentParser, *, limit_help: str) -> None:
    parser.add_argument("--task", default=None, help="only this task's jobs")
    parser.add_argument(
        "--search", default=None, help="only jobs whose id, arguments or error contain this"
    )
    parser.add_argument("--limit", type=_positive(int), default=None, help=limit_help)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments: -" in message or "required: id" in message:
            message += " (a job id that starts with '-' goes after --: job -- -abc)"
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="queue-async",
        description="Run workers, look at queues, and repair their jobs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"queue-async {__version__}")
    _logging_options(parser)
    # Subcommands parse with _Parser too (its hint for ids that start with "-"); typeshed
    # types the action by its parser class.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(
            dest="command", required=True, metavar="COMMAND", parser_class=_Parser
        ),
    )
    _worker_parser(commands)
    _server_parser(commands)
    common = _connection()

    def sub(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, description=help_, parents=[common])

    info = sub("info", "counts per state of every queue of the prefix, or of one (--queue)")
    info.add_argument(
        "spec", nargs="?", metavar="MODULE:QUEUE", help="an app's Queue instead (prints JSON)"
    )
    info.add_argument(
        "--watch", nargs="?", type=_positive(float), const=2.0, default=None, metavar="SECONDS",
        help="refresh every SECONDS (2) until Ctrl-C",
    )  # fmt: skip

    jobs = sub("jobs", "list jobs in a state, a page at a time")
    jobs.add_argument(
        "--state", required=True, choices=["ready", "scheduled", "active", "dead", "done"]
    )
    _filtering(jobs, limit_help="jobs to list (50); with --all, per page")
    jobs.set_defaults(limit=50)
    jobs.add_argument("--order", choices=["oldest", "newest"], default="oldest")
    jobs.add_argument("--cursor", default=None, help="where the previous listing stopped")
    jobs.add_argument("--all", action="store_true", help="every page, to the end")

    job = sub("job", "one job: arguments, result, error and traceback, timeline")
    job.add_argument("id")

    retry = sub("retry", "run dead jobs again, in place (same id, history kept)")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--dead", action="store_true", help="the dead jobs that match, in bulk")
    _filtering(retry, limit_help="with --dead: retry at most this many (all)")
    retry.add_argument("--delay", type=_positive(float, zero=True), help="run in SECONDS")
    retry.add_argument("--yes", "-y", action="store_true", help="do not ask")

    delete = sub("delete", "delete jobs that are not running")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask")

    purge = sub("purge", "delete the jobs in a state that match (asks first)")
    purge.add_argument("--state", required=True, choices=["ready", "scheduled", "dead", "done"])
    _filtering(purge, limit_help="delete at most this many (all)")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask")

    for name, verb in (("pause", "stop workers from starting"), ("resume", "let workers start")):
        gate = sub(name, f"{verb} the queue's jobs (or one task's)")
        gate.add_argument("--task", default=None)

    enqueue = sub("enqueue", "enqueue a job by task name (no app import)")
    enqueue.add_argument("task")
    enqueue.add_argument("--args", type=_json_of(list), default=[], help="a JSON array")
    enqueue.add_argument("--kwargs", type=_json_of(dict), default={}, help="a JSON object")
    enqueue.add_argument("--delay", type=_positive(float, zero=True), help="seconds")
    enqueue.add_argument("--job-id", default=None, help="an explicit id (an existing one is kept)")
    enqueue.add_argument("--priority", type=int, default=None, help="lower runs first")

    for name, help_ in (
        ("cancel", "cancel a job that has not started"),
        ("abort", "cancel a waiting job, or stop a running one"),
    ):
        sub(name, help_).add_argument("id")

    sub("workers", "the live workers and the jobs each runs")
    sub("cron", "the cron schedules, with their last and next tick")

    board = sub("dashboard", "serve the web dashboard (needs queue-async[dashboard])")
    board.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    board.add_argument("--port", type=int, default=8080, help="port (8080)")
    board.add_argument(
        "--admin", action="store_true", help="let viewers act (retry, delete...); read-only without"
    )
    board.add_argument("--secret", default=None, help="signs CSRF tokens (default: random)")
    return parser


def _worker_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on PORT (needs queue-async[metrics])",
    )
    worker.add_argument(
        "--metrics-addr", default="0.0.0.0",  # noqa: S104 - Prometheus scrapes from elsewhere
        help="address of the metrics endpoint (0.0.0.0)",
    )  # fmt: skip


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (INFO)")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines, or one JSON object per record with the job fields (text)",
    )


def _server_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = commands.add_parser(
        "server",
        help="run the durable server of one machine, its data in a folder",
        description="Start the server whose data lives in --data (append-only file, a Unix "
        "socket in that folder), or find the one running for it; then stay until SIGTERM/"
        "SIGINT, and stop it if this command started it. Apps reach it with "
        "Queue.embedded(DATA) or Queue('unix://DATA/valkey.sock').",
    )
    server.add_argument("--data", required=True, help="the folder of the server's files")
    server.add_argument(
        "--fsync",
        choices=["always", "everysec"],
        default="everysec",
        help="always: every acknowledged write is on disk; everysec (default): within 1 s",
    )
    server.add_argument(
        "--detach", action="store_true", help="start it in the background and return"
    )


def _serve(args: argparse.Namespace) -> int:
    from queue_async.embedded import DurableServer  # noqa: PLC0415 (not needed by workers)

    server = DurableServer(args.data, fsync=args.fsync)
    try:
        started = server.start()
    except QueueAsyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Blocked only now: the server would inherit the mask, and never hear its own SIGTERM.
    stop_on = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_on)
    pid = server.pid()
    verb = "started" if started else "already running"
    print(f"{verb}: {server.url} (pid {pid}, data {server.data})", flush=True)
    if args.detach:
        return 0
    while pid is not None and server.pid() == pid:
        if signal.sigtimedwait(stop_on, 0.5) is not None:
            if started:
                server.stop()
                print("stopped", flush=True)
            return 0
    print(f"error: the server exited: {server.log()[-1000:]}", file=sys.stderr)
    return 1


def _configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler()
    if form == "json":
        from queue_async.contrib.logs import JsonFormatter  # noqa: PLC0415 (only when asked)

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


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
        if args.metrics_port is not None:
            _serve_metrics(worker, queues, args.metrics_port, args.metrics_addr)
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


def _serve_metrics(worker: Worker, queues: list[Queue], port: int, addr: str) -> None:
    try:
        from queue_async.contrib.prometheus import Metrics  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    metrics = Metrics()
    metrics.watch_worker(worker)
    for queue in queues:
        metrics.watch_queue(queue)
    try:
        metrics.serve(port, addr)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc}") from None
    logging.getLogger("queue_async.worker").info("metrics on http://%s:%d/metrics", addr, port)


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from queue_async.dashboard.serve import serve  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(
        url=args.url, queue=args.queue or "default", prefix=args.prefix, host=args.host,
        port=args.port, admin=args.admin, secret=args.secret, log_level=args.log_level,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``queue-async`` and ``python -m queue_async``."""
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    if args.command == "server":
        return _serve(args)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.command != "worker":
        spec = getattr(args, "spec", None)
        if spec is not None and ":" not in spec:
            parser.error(f"{spec!r} is not module:attribute; for a queue by name: --queue {spec}")
        from queue_async.cli_tools.run import run  # noqa: PLC0415 (not needed by workers)

        return run(args, load_queue(spec) if spec else None)
    try:
        anyio.run(_run_worker, [load_queue(spec) for spec in args.queue], args)
    except (QueueAsyncError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
