"""The scenarios. Each runs one library once on a flushed server and returns its metrics.

Processing rates are measured inside the worker process: from the start of the first job to
the end of the job that completed the set (``*_jobs_per_s``), and from the moment the worker
was started (``*_from_start_jobs_per_s``, which adds connecting and setting up).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import ConnectionPeak, CpuWindow, Library, Server, WorkerProcess, run_role

Metrics = dict[str, Any]

THROUGHPUT_CONCURRENCY = 100
LATENCY_CONCURRENCY = 100
IO_CONCURRENCY = 1_000
LATENCY_GAP_S = 0.005
ROUNDTRIP_CLIENTS = 200
ROUNDTRIP_CONCURRENCY = 200
ROUNDTRIP_CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (the driver's command-line options)."""

    jobs: int = 20_000
    latency_jobs: int = 500
    backlog_jobs: int = 1_000_000
    timeout: float = 900.0
    web_jobs: int = 20_000
    web_single_jobs: int = 20_000
    """web_enqueue's jobs with one producer (a slow single enqueue makes that run long)."""
    roundtrip_seconds: float = 20.0


def _rate(jobs: int, seconds: float) -> float:
    return round(jobs / seconds, 1) if seconds > 0 else 0.0


def _process(
    lib: Library, server: Server, sizes: Sizes, expect: int, concurrency: int
) -> tuple[Metrics, float]:
    """Run one worker until ``expect`` distinct jobs ran; its report and the server's CPU share."""
    worker = WorkerProcess(
        lib,
        *("--url", server.url, "--expect", str(expect), "--gate"),
        *("--concurrency", str(concurrency), "--timeout", str(sizes.timeout)),
    )
    cpu = CpuWindow(server)
    try:
        worker.wait_ready()
        cpu.start()
        worker.go()
        report = worker.result(timeout=sizes.timeout + 60)
    finally:
        worker.kill()
    return report, cpu.stop()


def _enqueue(lib: Library, server: Server, sizes: Sizes, task: str, count: int) -> float:
    report = run_role(
        lib,
        "enqueue",
        *("--url", server.url, "--task", task, "--count", str(count)),
        timeout=sizes.timeout,
    )
    return float(report["enqueue_s"])


def _processing(report: Metrics, jobs: int, prefix: str) -> Metrics:
    return {
        f"{prefix}_jobs_per_s": _rate(jobs, report["last_at"] - report["first_at"]),
        f"{prefix}_from_start_jobs_per_s": _rate(jobs, report["last_at"] - report["begin_at"]),
        **_stop(report),
    }


def _stop(report: Metrics) -> Metrics:
    """How the worker stopped once its last job ran (seconds; or abandoned)."""
    if report.get("stop_hung"):
        return {"duplicates": report["duplicates"], "stop_hung": True}
    return {"duplicates": report["duplicates"], "stop_s": round(report["stop_s"], 3)}


def _bulk(lib: Library, server: Server, sizes: Sizes, task: str, concurrency: int) -> Metrics:
    server.flush()
    enqueue_s = _enqueue(lib, server, sizes, task, sizes.jobs)
    report, cpu_share = _process(lib, server, sizes, sizes.jobs, concurrency)
    return {
        "jobs": sizes.jobs,
        "concurrency": concurrency,
        "enqueue_jobs_per_s": _rate(sizes.jobs, enqueue_s),
        **_processing(report, sizes.jobs, "process"),
        "server_cpu_share": round(cpu_share, 3),
    }


def throughput(lib: Library, server: Server, sizes: Sizes) -> Metrics:
    """20,000 no-op jobs enqueued up front, then one worker (concurrency 100) runs them."""
    return _bulk(lib, server, sizes, "noop", THROUGHPUT_CONCURRENCY)


def io(lib: Library, server: Server, sizes: Sizes) -> Metrics:
    """20,000 jobs that each await asyncio.sleep(0.01), one worker at concurrency 1,000."""
    return _bulk(lib, server, sizes, "io", IO_CONCURRENCY)


def latency(lib: Library, server: Server, sizes: Sizes) -> Metrics:
    """An idle worker; jobs enqueued one at a time, 5 ms apart: enqueue-to-start delay."""
    server.flush()
    worker = WorkerProcess(
        lib,
        *("--url", server.url, "--expect", str(sizes.latency_jobs)),
        *("--concurrency", str(LATENCY_CONCURRENCY), "--timeout", str(sizes.timeout)),
    )
    try:
        worker.wait_ready()
        run_role(
            lib,
            "stamps",
            *("--url", server.url, "--count", str(sizes.latency_jobs)),
            *("--gap", str(LATENCY_GAP_S)),
            timeout=sizes.timeout,
        )
        report = worker.result(timeout=sizes.timeout)
    finally:
        worker.kill()
    delays = sorted(report["latencies_ms"])
    return {
        "jobs": len(delays),
        "p50_ms": round(statistics.median(delays), 3),
        "p99_ms": round(delays[max(0, int(len(delays) * 0.99) - 1)], 3),
        "max_ms": round(delays[-1], 3),
        **_stop(report),
    }


def backlog(lib: Library, server: Server, sizes: Sizes) -> Metrics:
    """A backlog of ``backlog_jobs`` no-op jobs: its enqueue rate, its memory per job, and the
    processing rate of the first ``jobs`` of them (concurrency 100)."""
    server.flush()
    before = server.used_memory()
    enqueue_s = _enqueue(lib, server, sizes, "noop", sizes.backlog_jobs)
    after = server.used_memory()
    report, cpu_share = _process(lib, server, sizes, sizes.jobs, THROUGHPUT_CONCURRENCY)
    return {
        "backlog_jobs": sizes.backlog_jobs,
        "jobs": sizes.jobs,
        "enqueue_jobs_per_s": _rate(sizes.backlog_jobs, enqueue_s),
        "bytes_per_job": round((after - before) / sizes.backlog_jobs, 1),
        **_processing(report, sizes.jobs, "backlog_process"),
        "server_cpu_share": round(cpu_share, 3),
    }


def scaleout(lib: Library, server: Server, sizes: Sizes, workers: int) -> Metrics:
    """``workers`` processes in burst mode on one queue of ``jobs`` no-op jobs, released at the
    same moment: the combined rate, and the server's CPU share meanwhile."""
    server.flush()
    _enqueue(lib, server, sizes, "noop", sizes.jobs)
    procs = [
        WorkerProcess(
            lib,
            *("--url", server.url, "--burst", "--gate"),
            *("--concurrency", str(THROUGHPUT_CONCURRENCY), "--timeout", str(sizes.timeout)),
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            proc.wait_ready()
        cpu = CpuWindow(server)
        cpu.start()
        released = time.time()
        for proc in procs:
            proc.go()
        reports = [proc.result(timeout=sizes.timeout) for proc in procs]
        server_cpu_s = cpu.used()
    finally:
        for proc in procs:
            proc.kill()
    handled = sum(r["handled"] for r in reports)
    if handled != sizes.jobs:
        raise RuntimeError(f"{workers} workers ran {handled} distinct jobs of {sizes.jobs}")
    first = min(r["first_at"] for r in reports if r["first_at"])
    last = max(r["last_at"] for r in reports)
    return {
        "workers": workers,
        "jobs": sizes.jobs,
        "process_jobs_per_s": _rate(sizes.jobs, last - first),
        "process_from_start_jobs_per_s": _rate(sizes.jobs, last - released),
        "jobs_per_worker": [r["handled"] for r in reports],
        # CPU shares over the run, from the release to the last job's end (1.0 = one core):
        # the server's, and all worker processes' together.
        "server_cpu_share": round(server_cpu_s / (last - released), 3),
        "workers_cpu_share": round(
            sum(r.get("cpu_s", 0.0) for r in reports) / (last - released), 3
        ),
    }


def _calls(report: Metrics, rate: str) -> Metrics:
    """An adapter's call statistics (base._calls) under the report's names."""
    return {
        rate: report.get("per_s", 0.0),
        **{k: report[k] for k in ("p50_ms", "p99_ms", "max_ms") if k in report},
        "client_cpu_us_per_call": report.get("client_cpu_us_per_call"),
        "timeouts": report["timeouts"],
        "call_errors": report["errors"],
        **({"first_error": report["first_error"]} if "first_error" in report else {}),
    }


def web_enqueue(lib: Library, server: Server, sizes: Sizes, producers: int) -> Metrics:
    """``producers`` coroutines in one process, each awaiting one single enqueue at a time
    (the web pattern), no worker: the rate, one call's latency, the connections it opened."""
    server.flush()
    jobs = sizes.web_single_jobs if producers == 1 else sizes.web_jobs
    # A 20,000-job run of the fastest library lasts about a second: poll more often.
    with ConnectionPeak(server, interval=0.05) as connections:
        report = run_role(
            lib,
            "web_enqueue",
            *("--url", server.url, "--producers", str(producers), "--count", str(jobs)),
            timeout=sizes.timeout,
        )
    return {
        "producers": producers,
        "jobs": report["calls"],
        **_calls(report, "jobs_per_s"),
        "peak_connections": connections.peak,
    }


def web_roundtrip(lib: Library, server: Server, sizes: Sizes) -> Metrics:
    """200 clients in one process, each enqueueing a no-op job and awaiting its result, in a
    loop for ``roundtrip_seconds``, against one worker (concurrency 200)."""
    server.flush()
    seconds = sizes.roundtrip_seconds
    with ConnectionPeak(server) as connections:
        worker = WorkerProcess(
            lib,
            *("--url", server.url, "--until-stop", "--concurrency", str(ROUNDTRIP_CONCURRENCY)),
            *("--timeout", str(seconds + sizes.timeout)),
        )
        try:
            worker.wait_ready()
            worker_connections = connections.connected()
            report = run_role(
                lib,
                "roundtrip",
                *("--url", server.url, "--clients", str(ROUNDTRIP_CLIENTS)),
                *("--seconds", str(seconds), "--call-timeout", str(ROUNDTRIP_CALL_TIMEOUT_S)),
                timeout=seconds + sizes.timeout,
            )
            worker.stop()
            work = worker.result(timeout=60)
        finally:
            worker.kill()
    if "skipped" in report:
        return {"skipped": report["skipped"]}
    return {
        "clients": ROUNDTRIP_CLIENTS,
        "seconds": report.get("seconds"),
        "roundtrips": report["calls"],
        **_calls(report, "roundtrips_per_s"),
        "peak_connections": connections.peak,
        "worker_connections": worker_connections,
        "jobs_run": work["handled"],
        **_stop(work),
    }


SCENARIOS: dict[str, Callable[[Library, Server, Sizes], Metrics]] = {
    "throughput": throughput,
    "latency": latency,
    "io": io,
    "backlog": backlog,
    "web_roundtrip": web_roundtrip,
}
SCALEOUT_WORKERS = (1, 2, 4)
WEB_PRODUCERS = (1, 10, 200)
