"""What every adapter provides, and the command line that runs one in its library's venv.

Standard library only: this module is imported under every peer's virtualenv.

An adapter registers three handlers under its library's own API, each reporting to a
``Recorder``:

* ``noop(i)``: returns at once;
* ``io(i)``: awaits ``asyncio.sleep(0.01)``;
* ``stamp(i, sent)``: records ``time.time() - sent`` (``sent`` is taken just before enqueue).

Roles (``python -m adapters LIB ROLE ...``, one JSON object per output line):

* ``info``: library versions and the configuration the adapter uses;
* ``enqueue``: enqueue ``--count`` jobs of ``--task`` through the library's bulk path;
* ``stamps``: enqueue ``--count`` stamp jobs one at a time, ``--gap`` seconds apart;
* ``web_enqueue``: ``--producers`` coroutines in this one process, each awaiting one single
  enqueue of a ``noop`` job at a time, ``--count`` jobs in all (no worker runs): the web
  pattern; the rate, and the latency of one call;
* ``roundtrip``: ``--clients`` coroutines, each in a loop enqueueing a ``noop`` job and
  awaiting its result through the library's own result wait, for ``--seconds``;
* ``work``: run one worker until ``--expect`` distinct jobs ran (or, with ``--burst``, until
  the queue is empty, where the library has such a mode; or, with ``--until-stop``, until a
  line on stdin), then stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

TASKS = ("noop", "io", "stamp")
IO_SLEEP_S = 0.01
# Bulk enqueues of huge counts (the backlog) are sent in slices of this many jobs, so no
# client ever builds a million-job request in memory.
ENQUEUE_SLICE = 20_000
# Libraries without a bulk call enqueue with asyncio.gather over this many jobs at a time:
# unbounded, a gather of 20,000 opens one connection per job and runs into maxclients.
GATHER_CHUNK = 1_000
# Once its last job ran, a worker that has not stopped after this long is abandoned (and the
# run is flagged): a hung shutdown must not hang the benchmark.
STOP_GRACE_S = 10.0

T = TypeVar("T")


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, which the driver reads."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@dataclass
class Recorder:
    """What the handlers of one worker process saw. Times are ``time.time()`` (comparable
    across processes on one machine).

    Args:
        expect: distinct jobs after which ``done`` is set (``None``: never; burst mode).
        gate: before the worker starts, print ``{"event": "ready"}`` and wait for a line on
            stdin (the driver starts several workers at the same moment this way).
        ready_after: without ``gate``, print ``{"event": "ready"}`` this long after the worker
            started (for the latency scenario: the worker is up and idle by then).
    """

    expect: int | None
    gate: bool = False
    ready_after: float = 1.0
    begin_at: float = 0.0
    cpu_at_begin: float = 0.0
    first_at: float = 0.0
    last_at: float = 0.0
    duplicates: int = 0
    stop_at: float = 0.0
    """With ``--until-stop``: when the driver's stop line came."""
    latencies_ms: list[float] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def begin(self) -> None:
        """Called by the adapter just before its worker starts taking jobs."""
        if self.gate:
            emit({"event": "ready"})
            await asyncio.to_thread(sys.stdin.readline)
        else:
            asyncio.get_running_loop().call_later(self.ready_after, emit, {"event": "ready"})
        self.begin_at = time.time()
        self.cpu_at_begin = time.process_time()

    def _start(self) -> None:
        if not self.first_at:
            self.first_at = time.time()

    def _end(self, i: int) -> None:
        if i in self.seen:
            self.duplicates += 1
            return
        if self.done.is_set():
            return  # past the goal: jobs finishing while the worker stops do not count
        self.seen.add(i)
        self.last_at = time.time()
        if self.expect is not None and len(self.seen) >= self.expect:
            self.done.set()

    def noop(self, i: int) -> None:
        """The no-op handler's body."""
        self._start()
        self._end(i)

    async def io(self, i: int) -> None:
        """The I/O-bound handler's body."""
        self._start()
        await asyncio.sleep(IO_SLEEP_S)
        self._end(i)

    def stamp(self, i: int, sent: float) -> None:
        """The latency handler's body."""
        now = time.time()
        self._start()
        self.latencies_ms.append((now - sent) * 1000)
        self._end(i)

    def summary(self) -> dict[str, Any]:
        return {
            "handled": len(self.seen),
            "duplicates": self.duplicates,
            "begin_at": self.begin_at,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "latencies_ms": self.latencies_ms,
            # CPU time of this process (all its threads) since it started taking jobs.
            "cpu_s": round(time.process_time() - self.cpu_at_begin, 4) if self.begin_at else 0.0,
        }


class Producer(Protocol):
    """The enqueueing side of a library, connected."""

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        """Enqueue ``task(i)`` for ``i`` in ``range(start, start + count)``, fastest path."""
        ...

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        """Enqueue one ``stamp(i, sent)`` job."""
        ...

    async def enqueue_noop(self, i: int) -> None:
        """Enqueue one ``noop(i)`` job through the library's normal single enqueue call."""
        ...

    async def roundtrip(self, i: int, timeout: float) -> None:
        """Enqueue one ``noop(i)`` job and await its result through the library's own result
        wait; raise ``TimeoutError`` if it has not come after ``timeout`` seconds (or
        ``NotImplementedError`` if the library cannot wait for a result)."""
        ...


class Adapter(Protocol):
    """One library, set up the way its README shows."""

    name: str
    distributions: tuple[str, ...]
    """PyPI names whose installed versions are reported."""
    config: dict[str, str]
    """How the library is set up here (enqueue path, prefetch, polling, logging)."""

    def producer(self, url: str) -> AbstractAsyncContextManager[Producer]:
        """A connected producer, closed on exit."""
        ...

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        """Run one worker whose handlers report to ``recorder``; call ``await
        recorder.begin()`` just before it starts taking jobs; return once ``recorder.done``
        is set (or, with ``burst``, once the queue is empty) and the worker has stopped."""
        ...


async def gather_chunked(calls: Iterable[Callable[[], Awaitable[T]]]) -> None:
    """Await ``calls`` concurrently, ``GATHER_CHUNK`` at a time."""
    batch: list[Awaitable[T]] = []
    for call in calls:
        batch.append(call())
        if len(batch) >= GATHER_CHUNK:
            await asyncio.gather(*batch)
            batch = []
    if batch:
        await asyncio.gather(*batch)


def versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``distributions`` (and Python)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = {"python": sys.version.split()[0]}
    for name in distributions:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


async def _enqueue(adapter: Adapter, args: argparse.Namespace) -> None:
    async with adapter.producer(args.url) as producer:
        started = time.perf_counter()
        for start in range(0, args.count, ENQUEUE_SLICE):
            await producer.enqueue_bulk(args.task, start, min(ENQUEUE_SLICE, args.count - start))
        emit({"enqueue_s": time.perf_counter() - started, "count": args.count})


async def _stamps(adapter: Adapter, args: argparse.Namespace) -> None:
    async with adapter.producer(args.url) as producer:
        started = time.perf_counter()
        for i in range(args.count):
            await producer.enqueue_stamp(i, time.time())
            await asyncio.sleep(args.gap)
        emit({"enqueue_s": time.perf_counter() - started, "count": args.count})


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, int(len(ordered) * share) - 1)]


def _calls(latencies_s: list[float], seconds: float, cpu_s: float) -> dict[str, Any]:
    """Rate and latency of ``len(latencies_s)`` calls that took ``seconds`` of wall time."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"calls": 0}
    return {
        "calls": len(ordered),
        "seconds": round(seconds, 3),
        "per_s": round(len(ordered) / seconds, 1),
        "p50_ms": round(_percentile(ordered, 0.5) * 1000, 3),
        "p99_ms": round(_percentile(ordered, 0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "client_cpu_us_per_call": round(cpu_s / len(ordered) * 1e6, 1),
    }


@dataclass
class _Failures:
    """Calls that raised: timeouts apart, and the first other error's text."""

    timeouts: int = 0
    errors: int = 0
    first_error: str = ""

    def add(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            self.timeouts += 1
            return
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:500]

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timeouts": self.timeouts, "errors": self.errors}
        if self.first_error:
            out["first_error"] = self.first_error
        return out


async def _web_enqueue(adapter: Adapter, args: argparse.Namespace) -> None:
    async with adapter.producer(args.url) as producer:
        # One call per producer first, untimed: connections, pools and scripts are warm, as
        # they are in a web app that has served a request.
        await asyncio.gather(*(producer.enqueue_noop(-1 - n) for n in range(args.producers)))
        jobs = iter(range(args.count))
        latencies: list[float] = []
        failures = _Failures()

        async def one_producer() -> None:
            for i in jobs:
                started = time.perf_counter()
                try:
                    await producer.enqueue_noop(i)
                except Exception as exc:  # counted, and the run goes on
                    failures.add(exc)
                    continue
                latencies.append(time.perf_counter() - started)

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one_producer() for _ in range(args.producers)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        emit({"producers": args.producers, **_calls(latencies, seconds, cpu), **failures.record()})


async def _roundtrip(adapter: Adapter, args: argparse.Namespace) -> None:
    async with adapter.producer(args.url) as producer:
        try:
            await producer.roundtrip(-1, args.call_timeout)  # untimed: warm, and supported?
        except NotImplementedError as exc:
            emit({"skipped": str(exc) or "no result wait"})
            return
        jobs = itertools.count()
        latencies: list[float] = []
        failures = _Failures()
        deadline = time.perf_counter() + args.seconds

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await producer.roundtrip(next(jobs), args.call_timeout)
                except Exception as exc:  # counted, and the run goes on
                    failures.add(exc)
                    continue
                latencies.append(time.perf_counter() - started)

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        emit({"clients": args.clients, **_calls(latencies, seconds, cpu), **failures.record()})


async def _stop_on_line(recorder: Recorder) -> None:
    await asyncio.to_thread(sys.stdin.readline)
    recorder.stop_at = time.time()
    recorder.done.set()


async def _work(adapter: Adapter, args: argparse.Namespace) -> None:
    recorder = Recorder(
        expect=None if args.burst or args.until_stop else args.expect,
        gate=args.gate,
        ready_after=args.ready_after,
    )
    if args.until_stop:
        stopper = asyncio.ensure_future(_stop_on_line(recorder))
    work = asyncio.ensure_future(adapter.work(args.url, args.concurrency, recorder, args.burst))
    done = asyncio.ensure_future(recorder.done.wait())
    await asyncio.wait([work, done], timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED)
    if not work.done() and not done.done():
        _leave({"error": f"timed out after {args.timeout}s", **recorder.summary()})
    if not work.done():
        # The goal is reached: the worker has STOP_GRACE_S to stop before we leave without it.
        await asyncio.wait([work], timeout=STOP_GRACE_S)
        if not work.done():
            _leave({"stop_s": None, "stop_hung": True, **recorder.summary()})
    done.cancel()
    work.result()  # the worker failed: raise its error
    if args.until_stop:
        await stopper
    emit({"stop_s": time.time() - (recorder.stop_at or recorder.last_at), **recorder.summary()})


def _leave(record: dict[str, Any]) -> None:
    """Report and exit at once, abandoning a worker that does not stop."""
    emit(record)
    sys.stderr.flush()
    os._exit(0)


def main(adapter: Adapter, argv: list[str]) -> None:
    """The command line of one adapter (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=f"adapters {adapter.name}")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("info")
    for role in ("enqueue", "stamps", "web_enqueue", "roundtrip", "work"):
        p = sub.add_parser(role)
        p.add_argument("--url", required=True)
    sub.choices["enqueue"].add_argument("--task", choices=TASKS, default="noop")
    sub.choices["enqueue"].add_argument("--count", type=int, required=True)
    sub.choices["stamps"].add_argument("--count", type=int, required=True)
    sub.choices["stamps"].add_argument("--gap", type=float, default=0.005)
    sub.choices["web_enqueue"].add_argument("--producers", type=int, default=10)
    sub.choices["web_enqueue"].add_argument("--count", type=int, required=True)
    roundtrip = sub.choices["roundtrip"]
    roundtrip.add_argument("--clients", type=int, default=200)
    roundtrip.add_argument("--seconds", type=float, default=20.0)
    roundtrip.add_argument("--call-timeout", type=float, default=10.0, help="per round trip")
    work = sub.choices["work"]
    work.add_argument("--concurrency", type=int, default=100)
    work.add_argument("--expect", type=int, default=0)
    work.add_argument("--burst", action="store_true")
    work.add_argument("--gate", action="store_true")
    work.add_argument("--until-stop", action="store_true", help="run until a line on stdin")
    work.add_argument("--ready-after", type=float, default=1.0)
    work.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.role == "info":
        emit({"versions": versions(adapter.distributions), "config": adapter.config})
        return
    roles = {
        "enqueue": _enqueue,
        "stamps": _stamps,
        "web_enqueue": _web_enqueue,
        "roundtrip": _roundtrip,
        "work": _work,
    }
    asyncio.run(roles[args.role](adapter, args))
