"""Prometheus metrics for workers and queues: ``pip install 'queue-async[metrics]'``.

::

    metrics = Metrics()
    worker = qa.Worker(queue, observers=[metrics])
    metrics.watch_worker(worker)        # running, prefetched, lease losses, outages
    metrics.watch_queue(queue)          # counts per state, latency, workers, read at scrape
    metrics.serve(9100)                 # or: app.mount("/metrics", metrics.asgi_app())

Per-job figures are kept in plain counters by the worker's event loop and turned into metric
families only when Prometheus scrapes (one custom collector), so a job pays a few dict
updates, not the locks of prometheus_client's own metric objects. Queue figures are read from
the admin stats at scrape time (one script call per queue), never counted in the worker.

Multi-process: each worker process serves its own endpoint (``queue-async worker
--metrics-port``); Prometheus adds them up by ``sum by (queue, task)``. The queue figures are
the same from every process of a queue (read from Redis): use ``max by (queue)`` for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "queue_async.contrib.prometheus needs prometheus_client: pip install 'queue-async[metrics]'"
    ) from exc

import queue_async as qa

__all__ = ["DURATION_BUCKETS", "WAIT_BUCKETS", "Metrics"]

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
"""Upper bounds (seconds) of the run-time histogram's buckets."""
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
"""Upper bounds (seconds) of the queue-wait histogram's buckets."""
_STATS_TIMEOUT = 5.0


class _Histogram:
    """Bucket counts of one label set (not cumulative; made cumulative at scrape)."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.total = 0.0

    def family_buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets


class _TaskFigures:
    """What the observer counts for one (queue, task): one object, found with two dict
    lookups per job and no tuple made."""

    __slots__ = ("ended", "runs", "started", "timeouts", "waits")

    def __init__(self, duration_buckets: int, wait_buckets: int) -> None:
        self.started = 0
        self.timeouts = 0
        self.ended: dict[str, int] = {}
        self.runs = _Histogram(duration_buckets)
        self.waits = _Histogram(wait_buckets)


class Metrics(Collector):
    """The metrics of the workers it observes and the queues it watches; also a
    ``qa.JobObserver`` (pass it to ``Worker(observers=[...])``)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        duration_buckets: Iterable[float] = DURATION_BUCKETS,
        wait_buckets: Iterable[float] = WAIT_BUCKETS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._duration_bounds = tuple(sorted(duration_buckets))
        self._wait_bounds = tuple(sorted(wait_buckets))
        self._figures: dict[str, dict[str, _TaskFigures]] = {}
        """queue name -> task name -> its figures."""
        self._last_queue: qa.Queue | None = None
        self._last_task: str | None = None
        self._last = _TaskFigures(0, 0)
        self._workers: list[qa.Worker] = []
        self._queues: dict[tuple[str, str], qa.Queue] = {}
        self._stats: dict[tuple[str, str], qa.QueueStats] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.registry.register(self)

    # -- the observer (on the worker's event loop, for every job) ---------------------------

    def _of(self, ctx: qa.JobContext) -> _TaskFigures:
        queue, task = ctx.queue, ctx.task
        if task is self._last_task and queue is self._last_queue:
            return self._last  # the common case: one task after another of the same kind
        tasks = self._figures.get(queue.name)
        if tasks is None:
            tasks = self._figures[queue.name] = {}
        figures = tasks.get(task)
        if figures is None:
            figures = tasks[task] = _TaskFigures(len(self._duration_bounds), len(self._wait_bounds))
        self._last_queue, self._last_task, self._last = queue, task, figures
        return figures

    def job_started(self, ctx: qa.JobContext, waited: float) -> None:
        figures = self._of(ctx)
        figures.started += 1
        waits = figures.waits
        waits.counts[bisect_left(self._wait_bounds, waited)] += 1
        waits.total += waited

    def job_ended(self, ctx: qa.JobContext, outcome: str, duration: float, timed_out: bool) -> None:
        figures = self._of(ctx)
        ended = figures.ended
        ended[outcome] = ended.get(outcome, 0) + 1
        runs = figures.runs
        runs.counts[bisect_left(self._duration_bounds, duration)] += 1
        runs.total += duration
        if timed_out:
            figures.timeouts += 1

    # -- what else to report ----------------------------------------------------------------

    def watch_worker(self, worker: qa.Worker) -> None:
        """Report the worker's running and prefetched jobs, concurrency, lease losses, and
        the process's Redis outages; and observe its jobs (if not passed in ``observers``)."""
        if self not in worker.observers:
            worker.observe(self)
        self._workers.append(worker)

    def watch_queue(self, queue: qa.Queue) -> None:
        """Report the queue's counts per state, latency and live workers, read from Redis
        (``queue.stats()``) when Prometheus scrapes. Call it on the event loop the queue
        is used on."""
        self._queues[(queue.prefix, queue.name)] = queue
        self._note_loop()

    def _note_loop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    # -- serving ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the stats of every watched queue now (the scrape reads what this got)."""
        for key, queue in list(self._queues.items()):
            try:
                self._stats[key] = await queue.stats()
            except qa.QueueAsyncError:
                self._stats.pop(key, None)  # shown as missing rather than stale

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - metrics are scraped from outside
        """Serve ``/metrics`` on ``port`` from a thread (prometheus_client's server). Call it
        on the event loop the watched queues use: each scrape reads their stats there."""
        self._note_loop()
        start_http_server(port, addr=addr, registry=self.registry)

    def asgi_app(self) -> Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]:
        """An ASGI app that serves the metrics, for a web app to mount (``/metrics``)."""

        async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await self.refresh()
            body = generate_latest(self.registry)
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return app

    # -- the collector (at scrape time) -----------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        self._refresh_from_thread()
        labels = ["queue", "task"]
        started = CounterMetricFamily(
            "queue_async_jobs_started", "Tries started, by queue and task.", labels=labels
        )
        figures = [
            (queue, task, each)
            for queue, tasks in list(self._figures.items())
            for task, each in list(tasks.items())
        ]
        for queue, task, each in figures:
            started.add_metric([queue, task], each.started)
        yield started
        ended = CounterMetricFamily(
            "queue_async_jobs",
            "Tries ended, by outcome: succeeded, retry (failed, another try follows), dead, "
            "aborted, lost (its lease was lost first), unrecorded.",
            labels=[*labels, "outcome"],
        )
        for queue, task, each in figures:
            for outcome, count in list(each.ended.items()):
                ended.add_metric([queue, task, outcome], count)
        yield ended
        timeouts = CounterMetricFamily(
            "queue_async_job_timeouts", "Tries that ran past their timeout.", labels=labels
        )
        for queue, task, each in figures:
            timeouts.add_metric([queue, task], each.timeouts)
        yield timeouts
        yield self._histogram(
            "queue_async_job_duration_seconds",
            "Run time of one try (handler start to end).",
            [(queue, task, each.runs) for queue, task, each in figures],
            self._duration_bounds,
        )
        yield self._histogram(
            "queue_async_job_wait_seconds",
            "Queue wait: from when the job became ready (enqueue, due time, requeue) to its start.",
            [(queue, task, each.waits) for queue, task, each in figures],
            self._wait_bounds,
        )
        yield from self._worker_families()
        yield from self._queue_families()

    def _histogram(
        self,
        name: str,
        documentation: str,
        histograms: list[tuple[str, str, _Histogram]],
        bounds: tuple[float, ...],
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["queue", "task"])
        for queue, task, histogram in histograms:
            family.add_metric(
                [queue, task], histogram.family_buckets(bounds), sum_value=histogram.total
            )
        return family

    def _worker_families(self) -> Iterator[Metric]:
        labels = ["worker"]
        gauges = {
            "running": GaugeMetricFamily(
                "queue_async_worker_running_jobs", "Jobs whose handlers run now.", labels=labels
            ),
            "prefetched": GaugeMetricFamily(
                "queue_async_worker_prefetched_jobs",
                "Jobs leased ahead, waiting for a free slot.",
                labels=labels,
            ),
            "concurrency": GaugeMetricFamily(
                "queue_async_worker_concurrency",
                "Jobs the worker runs at once at most.",
                labels=labels,
            ),
        }
        losses = CounterMetricFamily(
            "queue_async_worker_lease_losses",
            "Leases the worker found lost (its jobs recovered elsewhere).",
            labels=labels,
        )
        outages = CounterMetricFamily(
            "queue_async_redis_outages",
            "Times this process lost Redis (or was refused) and began backing off.",
        )
        for worker in self._workers:
            gauges["running"].add_metric([worker.id], worker.busy)
            gauges["prefetched"].add_metric([worker.id], worker.prefetched)
            gauges["concurrency"].add_metric([worker.id], worker.settings.concurrency)
            losses.add_metric([worker.id], worker.lease_losses)
        outages.add_metric([], qa.Worker.redis_outages())
        yield from gauges.values()
        yield losses
        yield outages

    def _queue_families(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "queue_async_queue_jobs",
            "Jobs of the queue by state (read from Redis at scrape time).",
            labels=["queue", "state"],
        )
        latency = GaugeMetricFamily(
            "queue_async_queue_latency_seconds",
            "How long the next job to be leased has waited since it became ready.",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "queue_async_queue_workers", "Workers with a live heartbeat.", labels=["queue"]
        )
        for stats in list(self._stats.values()):
            for state in (
                "ready",
                "scheduled",
                "delayed",
                "retrying",
                "active",
                "prefetched",
                "held",
                "dead",
            ):
                jobs.add_metric([stats.queue, state], getattr(stats, state))
            latency.add_metric([stats.queue], stats.latency)
            workers.add_metric([stats.queue], stats.workers)
        yield jobs
        yield latency
        yield workers

    def _refresh_from_thread(self) -> None:
        """From the HTTP server's thread: read the stats on the queues' own event loop."""
        loop = self._loop
        if not self._queues or loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            return  # on the loop itself (asgi_app refreshed before generating)
        future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=_STATS_TIMEOUT)
