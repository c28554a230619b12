"""One coroutine per admin subcommand: ``await run(admin, args, out)`` returns the exit code.

Reads and repairs go through ``qa.Admin`` and the queue's public methods only; what is shown
is decided here, how it is laid out in ``table.py``, and how the operator is asked in
``interact.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

import queue_async as qa
from queue_async.cli_tools.interact import EXIT_NOTHING, CliError, confirm, with_progress
from queue_async.cli_tools.table import Column, ago, iso, render

__all__ = ["COMMANDS", "Output"]

_CONFIRM_OVER = 100
"""``retry --dead`` asks first when it may touch more jobs than this; ``purge`` always asks."""
_PAGE_MOST = 1000
"""Jobs one ``Admin.jobs`` call returns at most; a longer listing is read in pages."""
_DELETE_CONFIRM_OVER = 10
# A purge of done jobs has no count to bound it (the done index is trimmed as it goes).
_EVERY = 1 << 62
"""``delete`` asks first when given more ids than this (ids from a pipe, say)."""


class StdoutClosed(Exception):
    """Whoever reads our output stopped reading (a pipe into ``head``)."""


class Output:
    """Where results go: one JSON document on stdout (``--json``), or text for people."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()

    def json(self, document: Any, *, compact: bool = False) -> None:
        """One document; ``compact`` puts it on one line (a stream of them: JSON lines)."""
        self.text(json.dumps(document, indent=None if compact else 2, default=str))

    def text(self, text: str) -> None:
        try:
            print(text, flush=True)
        except BrokenPipeError:
            # The reader went away (``| head``): not an error of ours, nor of the server's.
            raise StdoutClosed from None

    def note(self, text: str) -> None:
        """A remark for the operator (on stderr, so that stdout stays clean for pipes)."""
        print(text, file=sys.stderr, flush=True)

    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> None:
        self.text(render(columns, rows, tty=self.tty))


def _where(admin: qa.Admin) -> str:
    return f"queue {admin.queue.name!r} (prefix {admin.queue.prefix!r})"


def _count(n: int | None, what: str) -> str:
    if n is None:
        return f"every {what}"
    return f"{n} {what}" if n == 1 else f"{n} {what.replace('job', 'jobs', 1)}"


def _filters(args: argparse.Namespace) -> str:
    """`` of task 'x' matching 'y'``, for the filters given."""
    task = f" of task {args.task!r}" if args.task else ""
    return task + (f" matching {args.search!r}" if args.search else "")


# -- info -----------------------------------------------------------------------------------

_STATS = [
    Column("QUEUE", max_width=40, shrinks=True),
    *(
        Column(header, numeric=True)
        for header in (
            "READY", "SCHEDULED", "ACTIVE", "DEAD", "HELD", "WORKERS",
            "PROCESSED", "FAILED", "RETRIED",
        )
    ),
    Column("LATENCY", numeric=True),
    Column("PAUSED", shrinks=True),
]  # fmt: skip


def _stats_row(stats: qa.QueueStats) -> list[object]:
    return [
        stats.queue, stats.ready, stats.scheduled, stats.active, stats.dead, stats.held,
        stats.workers, stats.processed, stats.failed, stats.retried, f"{stats.latency:.1f}s",
        "queue" if stats.paused else ", ".join(stats.paused_tasks),
    ]  # fmt: skip


async def info(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    one = args.queue is not None or args.spec is not None
    while True:
        if one:
            stats = [await admin.stats()]
        else:
            stats = sorted(await admin.queues(), key=lambda s: s.queue)
        if out.as_json:
            documents = [s.model_dump(mode="json") for s in stats]
            out.json(documents[0] if one else documents, compact=bool(args.watch))
        else:
            if args.watch and out.tty:
                out.text("\x1b[H\x1b[2J" + f"{iso(datetime.now(UTC))}  every {args.watch:g}s")
            if stats:
                out.table(_STATS, [_stats_row(s) for s in stats])
            else:
                out.note(f"no queues under prefix {admin.queue.prefix!r}")
        if not args.watch:
            return 0
        await anyio.sleep(args.watch)


# -- jobs -----------------------------------------------------------------------------------

_WHEN = {"scheduled": "DUE", "active": "STARTED", "done": "FINISHED", "dead": "FINISHED"}


def _last_line(error: str | None) -> str:
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _when(job: qa.Job, state: str) -> datetime | None:
    if state == "scheduled":
        return job.scheduled_for
    if state == "active":
        return job.started_at
    return job.finished_at


async def _collect(admin: qa.Admin, args: argparse.Namespace) -> tuple[list[qa.Job], str | None]:
    """The jobs of one listing: ``--limit`` of them (a filtered page may come back short, so
    pages are read until it is full), or every page with ``--all``."""
    jobs: list[qa.Job] = []
    cursor = args.cursor
    while True:
        want = min(_PAGE_MOST, args.limit if args.all else args.limit - len(jobs))
        page = await admin.jobs(
            args.state, task=args.task, search=args.search, order=args.order,
            cursor=cursor, limit=want,
        )  # fmt: skip
        jobs.extend(page.jobs)
        cursor = page.cursor
        if cursor is None or (not args.all and len(jobs) >= args.limit):
            return jobs, cursor


async def jobs(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    found, cursor = await _collect(admin, args)
    if out.as_json:
        out.json({"jobs": [job.model_dump(mode="json") for job in found], "cursor": cursor})
        return 0
    columns = [
        Column("ID", max_width=None),
        Column("TASK", shrinks=True),
        Column("TRIES", numeric=True),
        Column("PRI", numeric=True),
        Column("ENQUEUED"),
    ]
    if args.state in _WHEN:
        columns.append(Column(_WHEN[args.state]))
    if args.state in ("dead", "scheduled"):
        columns.append(Column("ERROR", max_width=60, shrinks=True))
    rows = []
    for job in found:
        row: list[object] = [job.id, job.task, job.attempts, job.priority, ago(job.enqueued_at)]
        if args.state in _WHEN:
            row.append(ago(_when(job, args.state)))
        if args.state in ("dead", "scheduled"):
            row.append(_last_line(job.error))
        rows.append(row)
    if rows:
        out.table(columns, rows)
    else:
        out.note(f"no {args.state} jobs{_filters(args)} in {_where(admin)}")
    if cursor is not None:
        out.note(f"more: --cursor {cursor}")
    return 0


# -- job ------------------------------------------------------------------------------------


def _dumped(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _moment(moment: datetime | None) -> str:
    return f"{iso(moment)} ({ago(moment)})" if moment else "-"


def _valid_ids(admin: qa.Admin, ids: Sequence[str]) -> None:
    """Refuse, as bad usage (exit 2), a text that cannot be a job id at all."""
    for job_id in ids:
        try:
            admin.queue.job(job_id)
        except qa.JobNotFound as exc:
            raise CliError(str(exc), 2) from None


async def job(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    _valid_ids(admin, [args.id])
    found = await admin.job(args.id)
    if out.as_json:
        out.json(found.model_dump(mode="json"))
        return 0
    lines = [
        f"id        {found.id}",
        f"queue     {found.queue}",
        f"task      {found.task}",
        f"status    {found.status.value}",
        f"attempts  {found.attempts}",
        f"priority  {found.priority}",
        f"worker    {found.worker or '-'}",
        "timeline",
        f"  enqueued   {_moment(found.enqueued_at)}",
        f"  scheduled  {_moment(found.scheduled_for)}",
        f"  started    {_moment(found.started_at)}",
        f"  finished   {_moment(found.finished_at)}",
    ]
    if found.checkin is not None or found.progress is not None:
        progress = "" if found.progress is None else f"{found.progress:.0%} "
        message = "" if found.checkin is None else f"{found.checkin!r} "
        lines.append(f"check-in  {progress}{message}{_moment(found.checkin_at)}")
    if found.headers:
        lines.append("headers")
        lines.extend(f"  {key}: {value}" for key, value in sorted(found.headers.items()))
    lines += [f"args      {_dumped(found.args)}", f"kwargs    {_dumped(found.kwargs)}"]
    if found.status is qa.JobStatus.DONE:
        lines.append(f"result    {_dumped(found.result)}")
    if found.error:
        lines.append("error")
        lines.extend(f"  {line}" for line in found.error.rstrip().splitlines())
    out.text("\n".join(lines))
    return 0


# -- one-job actions ------------------------------------------------------------------------


def _missing(admin: qa.Admin, job_id: str) -> str:
    return f"no job {job_id!r} in {_where(admin)}"


async def _why_not(admin: qa.Admin, job_id: str, action: str, wanted: str) -> str:
    try:
        status = (await admin.job(job_id)).status.value
    except qa.JobNotFound:
        return _missing(admin, job_id)
    return f"job {job_id!r} not {action}: it is {status} ({wanted})"


async def _each(
    admin: qa.Admin,
    out: Output,
    ids: Sequence[str],
    act: Callable[[str], Awaitable[bool]],
    *,
    action: str,
    wanted: str,
) -> int:
    """``act`` on each job; those it did nothing to are named on stderr (exit 1)."""
    _valid_ids(admin, ids)
    done, not_done = [], []
    for job_id in ids:
        try:
            acted = await act(job_id)
        except qa.JobNotFound:
            why = _missing(admin, job_id)
        else:
            if acted:
                done.append(job_id)
                if not out.as_json:
                    out.text(f"{action} {job_id}")
                continue
            why = await _why_not(admin, job_id, action, wanted)
        not_done.append(job_id)
        out.note(f"error: {why}")
    if out.as_json:
        out.json({action: done, f"not_{action}": not_done})
    return EXIT_NOTHING if not_done else 0


def _at(args: argparse.Namespace) -> timedelta | None:
    return None if args.delay is None else timedelta(seconds=args.delay)


async def retry(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    if not args.dead:
        if args.task or args.search or args.limit is not None:
            raise CliError("--task, --search and --limit go with --dead", 2)
        return await _each(
            admin, out, args.ids, lambda job_id: admin.retry(job_id, at=_at(args)),
            action="retried", wanted="only dead jobs and retries waiting out a backoff are",
        )  # fmt: skip
    if args.ids:
        raise CliError("give job ids or --dead, not both", 2)
    dead = (await admin.stats()).dead
    total = dead if args.limit is None else min(args.limit, dead)
    if total > _CONFIRM_OVER:
        what = _count(total, f"dead job{_filters(args)}")
        confirm(f"retry up to {what} in {_where(admin)}", yes=args.yes)
    retried = 0
    if total:
        # Bounded by the count at the start: a retried job that fails again comes back.
        retried = await with_progress(
            lambda progress: admin.retry_dead(
                task=args.task, search=args.search, limit=total, at=_at(args), progress=progress
            ),
            total=total, verb="retried",
        )  # fmt: skip
    return _counted(out, "retried", retried, f"dead jobs{_filters(args)} in {_where(admin)}")


def _counted(out: Output, action: str, count: int, what: str) -> int:
    if out.as_json:
        out.json({action: count})
    elif count:
        out.text(f"{action} {count} {what}")
    if not count:
        out.note(f"error: nothing {action}: no {what}")
        return EXIT_NOTHING
    return 0


async def delete(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    if len(args.ids) > _DELETE_CONFIRM_OVER:
        confirm(f"delete {len(args.ids)} jobs in {_where(admin)}", yes=args.yes)
    return await _each(
        admin, out, args.ids, admin.delete,
        action="deleted", wanted="a running job is stopped with abort first",
    )  # fmt: skip


async def purge(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    stats = await admin.stats()
    known: int | None = getattr(stats, args.state) if args.state != "done" else None
    total = known if args.limit is None else min(args.limit, known or args.limit)
    what = f"{args.state} jobs{_filters(args)} in {_where(admin)}"
    purged = 0
    if total != 0:
        size = "" if total is None else "up to "
        confirm(
            f"delete {size}{_count(total, f'{args.state} job')}{_filters(args)} in {_where(admin)}",
            yes=args.yes,
        )
        purged = await with_progress(
            lambda progress: admin.purge(
                args.state, task=args.task, search=args.search,
                limit=_EVERY if total is None else total, progress=progress,
            ),
            total=total, verb="deleted",
        )  # fmt: skip
    return _counted(out, "purged", purged, what)


async def cancel(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    return await _each(
        admin, out, [args.id], admin.cancel,
        action="cancelled", wanted="only jobs that have not started can be; see abort",
    )  # fmt: skip


async def abort(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    return await _each(
        admin, out, [args.id], admin.abort,
        action="aborted", wanted="only jobs waiting or running can be",
    )  # fmt: skip


async def _gate(admin: qa.Admin, args: argparse.Namespace, out: Output, *, pause: bool) -> int:
    await (admin.pause if pause else admin.resume)(args.task)
    verb = "paused" if pause else "resumed"
    if out.as_json:
        out.json({"queue": admin.queue.name, "task": args.task, "paused": pause})
    else:
        subject = f"task {args.task!r} of " if args.task else ""
        out.text(f"{verb} {subject}{_where(admin)}")
    return 0


async def pause(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    return await _gate(admin, args, out, pause=True)


async def resume(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    return await _gate(admin, args, out, pause=False)


async def enqueue(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    given = {"delay": args.delay, "priority": args.priority, "job_id": args.job_id}
    options = qa.EnqueueOptions.model_validate({k: v for k, v in given.items() if v is not None})
    spec = admin.queue.call(args.task, *args.args, **args.kwargs)
    spec = dataclasses.replace(spec, options=options)
    handle = await admin.queue.enqueue_spec(spec)
    if handle.existing:
        found = await admin.job(handle.id)
        if out.as_json:
            out.json(
                {"id": handle.id, "queue": admin.queue.name, "task": found.task, "existing": True}
            )
        out.note(
            f"error: nothing enqueued: job {handle.id!r} ({found.task}, {found.status.value}) "
            f"was there already in {_where(admin)}"
        )
        return EXIT_NOTHING
    if out.as_json:
        out.json({"id": handle.id, "queue": admin.queue.name, "task": args.task, "existing": False})
    else:
        out.text(handle.id)
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- workers and crons ----------------------------------------------------------------------


async def workers(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    found = sorted(await admin.workers(), key=lambda w: w.started_at)
    if out.as_json:
        out.json([worker.model_dump(mode="json") for worker in found])
        return 0
    if not found:
        out.note(f"no live workers on {_where(admin)}")
        return 0
    columns = [
        Column("ID", max_width=None),
        Column("HOST", max_width=30, shrinks=True),
        Column("PID", numeric=True),
        Column("STARTED"),
        Column("CONCURRENCY", numeric=True),
        Column("RUNNING", numeric=True),
        Column("PREFETCHED", numeric=True),
        Column("PROCESSED", numeric=True),
        Column("FAILED", numeric=True),
        Column("JOBS", max_width=80, shrinks=True),
    ]
    rows = [
        [
            w.id,
            w.host,
            w.pid,
            ago(w.started_at),
            w.concurrency,
            len(w.jobs),
            w.prefetched,
            w.processed,
            w.failed,
            ", ".join(f"{j.task}[{j.id}]" for j in w.jobs),
        ]
        for w in found
    ]
    out.table(columns, rows)
    return 0


async def cron(admin: qa.Admin, args: argparse.Namespace, out: Output) -> int:
    found = sorted(await admin.crons(), key=lambda c: c.name)
    if out.as_json:
        out.json([schedule.model_dump(mode="json") for schedule in found])
        return 0
    if not found:
        out.note(f"no cron schedules on {_where(admin)}")
        return 0
    columns = [
        Column("NAME", shrinks=True),
        Column("SPEC"),
        Column("TASK", shrinks=True),
        Column("TZ"),
        Column("LAST"),
        Column("NEXT"),
        Column("LIVE"),
    ]
    rows = [
        [c.name, c.spec, c.task, c.timezone, ago(c.last_tick), ago(c.next_tick), _yes(c.live)]
        for c in found
    ]
    out.table(columns, rows)
    return 0


Command = Callable[[qa.Admin, argparse.Namespace, Output], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "abort": abort,
    "cancel": cancel,
    "cron": cron,
    "delete": delete,
    "enqueue": enqueue,
    "info": info,
    "job": job,
    "jobs": jobs,
    "pause": pause,
    "purge": purge,
    "resume": resume,
    "retry": retry,
    "workers": workers,
}
