"""RESULTS.md from one driver run: medians per library, and queue_async's ratio to each peer."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import LIBRARIES

Record = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]

# (scenario, metric, label, higher is better; None: no ratio)
ROWS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("throughput", "enqueue_jobs_per_s", "enqueue, jobs/s", True),
    ("throughput", "process_jobs_per_s", "process, jobs/s", True),
    ("throughput", "process_from_start_jobs_per_s", "process from worker start, jobs/s", True),
    ("latency", "p50_ms", "p50, ms", False),
    ("latency", "p99_ms", "p99, ms", False),
    ("latency", "max_ms", "max, ms", False),
    ("io", "process_jobs_per_s", "process, jobs/s", True),
    ("io", "process_from_start_jobs_per_s", "process from worker start, jobs/s", True),
    ("backlog", "enqueue_jobs_per_s", "enqueue, jobs/s", True),
    ("backlog", "bytes_per_job", "server memory, bytes/job", False),
    ("backlog", "backlog_process_jobs_per_s", "process first jobs, jobs/s", True),
    ("web_enqueue", "jobs_per_s", "enqueue, jobs/s", True),
    ("web_enqueue", "p50_ms", "p50 of one enqueue, ms", False),
    ("web_enqueue", "p99_ms", "p99 of one enqueue, ms", False),
    ("web_enqueue", "client_cpu_us_per_call", "client CPU per enqueue, us", False),
    ("web_enqueue", "peak_connections", "peak server connections", False),
    ("web_roundtrip", "roundtrips_per_s", "round trips/s", True),
    ("web_roundtrip", "p50_ms", "p50 of one round trip, ms", False),
    ("web_roundtrip", "p99_ms", "p99 of one round trip, ms", False),
    ("web_roundtrip", "peak_connections", "peak server connections (worker + clients)", False),
    ("web_roundtrip", "timeouts", "round trips timed out (10 s), per run", None),
)
# Scenarios run once per value of a parameter: the record field that holds it, and how a
# row names it. (Scale-out has a table of its own.)
VARIANTS = {"scaleout": "workers", "web_enqueue": "producers"}
VARIANT_LABEL: dict[str, Callable[[Any], str]] = {
    "scaleout": lambda n: f"x{n}",
    "web_enqueue": lambda n: f"{n} producer{'' if n == 1 else 's'}",
}
NOT_MEDIANS = {"round", "ts", "workers", "producers", "clients", "duplicates", "stop_hung"}


@dataclass
class Meta:
    """What the report says about the run besides its records (kept in the JSON lines as the
    run's ``"scenario": "meta"`` record, so a report can be rendered again later)."""

    command: str
    server: str
    wall_s: float
    info: dict[str, dict[str, Any]]
    backlog_libs: list[str]
    skipped_backlog: list[str]
    load: tuple[float, float] = (0.0, 0.0)
    """The 1-minute load average when the run started and when it ended."""
    facts: dict[str, str] = field(default_factory=dict)
    """Date, machine, Python and commit, taken when the run ended (``run_facts()``)."""
    args: dict[str, str] = field(default_factory=dict)

    def record(self) -> Record:
        return {"scenario": "meta", **asdict(self)}

    @classmethod
    def from_record(cls, record: Record) -> Meta:
        fields = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        fields["load"] = tuple(fields.get("load", (0.0, 0.0)))
        return cls(**fields)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def run_facts() -> dict[str, str]:
    """Date, machine, Python, and the commit of queue_async (with what is uncommitted)."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = [line.split(maxsplit=1)[-1] for line in status.splitlines()]
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if changed:
        commit += f" + uncommitted changes to {', '.join(changed)}"
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{os.cpu_count()} CPUs ({model}), {platform.platform()}",
        "python": platform.python_version(),
        "commit": commit,
    }


def medians(records: Iterable[Record]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """(scenario, library, workers) -> {metric: median, "runs": ok runs, "errors": [...]}."""
    groups: dict[tuple[str, str, Any], list[Record]] = defaultdict(list)
    for record in records:
        if record.get("scenario") in (None, "setup", "meta"):
            continue
        variant = VARIANTS.get(record["scenario"])
        key = (record["scenario"], record["library"], record.get(variant) if variant else None)
        groups[key].append(record)
    out: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for key, runs in groups.items():
        ok = [r for r in runs if "error" not in r and "skipped" not in r]
        summary: dict[str, Any] = {
            "runs": len(ok),
            "of": len(runs),
            "errors": [r["error"] for r in runs if "error" in r],
            "skipped": next((r["skipped"] for r in runs if "skipped" in r), None),
            "duplicates": sum(int(r.get("duplicates", 0)) for r in ok),
            "stop_hung": sum(bool(r.get("stop_hung")) for r in ok),
            "timeouts_total": sum(int(r.get("timeouts", 0)) for r in ok),
            "call_errors_total": sum(int(r.get("call_errors", 0)) for r in ok),
            "first_call_error": next((r["first_error"] for r in ok if "first_error" in r), None),
        }
        metrics = {k for r in ok for k, v in r.items() if isinstance(v, int | float)}
        for metric in metrics - NOT_MEDIANS:
            values = [r[metric] for r in ok if isinstance(r.get(metric), int | float)]
            if values:
                summary[metric] = statistics.median(values)
        out[key] = summary
    return out


def fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric.endswith("_ms"):
        return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"
    if metric.endswith("share"):
        return f"{value * 100:.0f}%"
    if metric == "bytes_per_job":
        return f"{value:,.0f}"
    return f"{value:,.0f}"


def _ratio(ours: float | None, theirs: float | None, higher_better: bool | None) -> str:
    if higher_better is None or not ours or not theirs:
        return ""
    ratio = ours / theirs if higher_better else theirs / ours
    return f" ({ratio:.1f}x)" if ratio < 10 else f" ({ratio:.0f}x)"


def _cell(summary: dict[str, Any] | None, metric: str) -> tuple[str, float | None]:
    if summary is None or summary["skipped"]:
        return "skipped", None
    if summary["runs"] == 0:
        return "failed", None
    value = summary.get(metric)
    text = fmt(value, metric)
    if summary["runs"] < summary["of"]:
        text += f" ({summary['runs']}/{summary['of']} runs)"
    return text, value


def main_table(stats: dict[tuple[str, str, Any], dict[str, Any]], libs: list[str]) -> list[str]:
    peers = [lib for lib in libs if lib != "queue_async"]
    lines = [
        "| scenario | metric | " + " | ".join(libs) + " |",
        "|---|---|" + "---:|" * len(libs),
    ]
    for scenario in dict.fromkeys(row[0] for row in ROWS):
        variants = sorted({k[2] for k in stats if k[0] == scenario}, key=lambda v: v or 0)
        for variant in variants:
            name = scenario
            if variant is not None:
                name += ", " + VARIANT_LABEL[scenario](variant)
            for _, metric, label, higher in (row for row in ROWS if row[0] == scenario):
                key = (scenario, "queue_async", variant)
                ours_text, ours = _cell(stats.get(key), metric)
                cells = [ours_text] if "queue_async" in libs else []
                for lib in peers:
                    text, theirs = _cell(stats.get((scenario, lib, variant)), metric)
                    cells.append(text + _ratio(ours, theirs, higher))
                lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return lines


def backlog_table(stats: dict[tuple[str, str, Any], dict[str, Any]], libs: list[str]) -> list[str]:
    lines = []
    for lib in libs:
        backlog = stats.get(("backlog", lib, None))
        empty = stats.get(("throughput", lib, None))
        if not backlog or not backlog["runs"]:
            continue
        with_backlog = backlog.get("backlog_process_jobs_per_s")
        without = empty.get("process_jobs_per_s") if empty and empty["runs"] else None
        ratio = f"{with_backlog / without:.2f}" if with_backlog and without else "-"
        lines.append(
            f"| {lib} | {fmt(backlog.get('backlog_jobs'), 'jobs')} "
            f"| {fmt(backlog.get('enqueue_jobs_per_s'), 'rate')} "
            f"| {fmt(backlog.get('bytes_per_job'), 'bytes_per_job')} "
            f"| {fmt(with_backlog, 'rate')} | {fmt(without, 'rate')} | {ratio} |"
        )
    if not lines:
        return []
    return [
        "| library | backlog jobs | enqueue, jobs/s | server memory, bytes/job "
        "| first jobs with backlog, jobs/s | same on an empty queue (throughput), jobs/s "
        "| with / without |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]


def scaleout_table(stats: dict[tuple[str, str, Any], dict[str, Any]]) -> list[str]:
    rows = sorted((k[2], v) for k, v in stats.items() if k[0] == "scaleout" and v["runs"])
    if not rows:
        return []
    base = rows[0][1].get("process_jobs_per_s") if rows[0][0] == 1 else None
    lines = [
        "| worker processes | process, jobs/s | speed-up vs 1 | server CPU | worker processes' CPU "
        "| both |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, summary in rows:
        rate = summary.get("process_jobs_per_s")
        speedup = f"{rate / base:.2f}x" if rate and base else "-"
        server, clients = summary.get("server_cpu_share"), summary.get("workers_cpu_share")
        both = server + clients if server is not None and clients is not None else None
        lines.append(
            f"| {workers} | {fmt(rate, 'rate')} | {speedup} | {fmt(server, 'share')} "
            f"| {fmt(clients, 'share')} | {fmt(both, 'share')} |"
        )
    cores = os.cpu_count() or 1
    lines += [
        "",
        f"CPU shares are of one core (100% = one core busy); the machine has {cores}. Where",
        "*both* reaches the machine's cores, more worker processes only share the same CPU: the",
        "limit is the machine, with the server at the share shown and the workers' Python",
        "(client CPU) taking the rest. Where the server's share nears 100% instead, the server",
        "is the limit (one core runs its commands and scripts).",
    ]
    return lines


RATE_METRIC = {
    "throughput": "process_jobs_per_s",
    "io": "process_jobs_per_s",
    "backlog": "backlog_process_jobs_per_s",
}


def cpu_table(stats: dict[tuple[str, str, Any], dict[str, Any]], libs: list[str]) -> list[str]:
    lines = ["| scenario | " + " | ".join(libs) + " |", "|---|" + "---:|" * len(libs)]
    for scenario in ("throughput", "io", "backlog"):
        if not any((scenario, lib, None) in stats for lib in libs):
            continue
        cells = []
        for lib in libs:
            summary = stats.get((scenario, lib, None))
            if not summary or not summary["runs"]:
                cells.append("-")
                continue
            share = summary.get("server_cpu_share")
            rate = summary.get(RATE_METRIC[scenario])
            per_job = f" ({share / rate * 1e6:,.0f} us/job)" if share and rate else ""
            cells.append(fmt(share, "share") + per_job)
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _machine(meta: Meta) -> list[str]:
    facts = meta.facts
    return [
        f"- Date: {facts.get('date', '?')}; total wall time {meta.wall_s / 60:.1f} min",
        f"- Machine: {facts.get('machine', '?')}",
        f"- Load average (1 min) at start / end: {meta.load[0]:.2f} / {meta.load[1]:.2f} "
        "(other processes on the machine perturb the numbers)",
        f"- Python: {facts.get('python', '?')} (driver and every venv)",
        f"- Server: {meta.server}, one private instance for every run, FLUSHALL between runs",
        f"- queue_async: commit {facts.get('commit', '?')}",
        f"- Command: `{meta.command}`",
    ]


def _versions(meta: Meta, libs: list[str]) -> list[str]:
    lines = [
        "| library | versions | enqueue path | prefetch | polling | per-job logging "
        "| single enqueue (web) | result wait (web) | other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lib in libs:
        info = meta.info.get(lib)
        if not info:
            continue
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k != "python")
        config = dict(info["config"])
        columns = ("enqueue", "prefetch", "polling", "logging", "single enqueue", "result wait")
        cells = [config.pop(k, "") for k in columns]
        other = "; ".join(f"{k}: {v}" for k, v in config.items())
        lines.append(f"| {lib} | {versions} | " + " | ".join([*cells, other]) + " |")
    return lines


def _problems(
    records: list[Record], stats: dict[tuple[str, str, Any], dict[str, Any]]
) -> list[str]:
    lines = [
        f"- {record['library']}: could not start: {record['error']}"
        for record in records
        if record.get("scenario") == "setup"
    ]
    for (scenario, lib, workers), summary in sorted(stats.items(), key=str):
        name = scenario
        if workers is not None:
            name += " " + VARIANT_LABEL[scenario](workers)
        if summary["errors"]:
            lines.append(
                f"- {lib} {name}: {len(summary['errors'])} of {summary['of']} runs failed; "
                f"first error: `{summary['errors'][0][:400]}`"
            )
        if summary["duplicates"]:
            lines.append(
                f"- {lib} {name}: {summary['duplicates']} job(s) ran twice "
                "(a handler saw a job index it had already seen), over all runs"
            )
        if summary["skipped"]:
            lines.append(f"- {lib} {name}: skipped: {summary['skipped']}")
        if summary["timeouts_total"] or summary["call_errors_total"]:
            first = summary["first_call_error"]
            lines.append(
                f"- {lib} {name}: {summary['timeouts_total']} call(s) timed out and "
                f"{summary['call_errors_total']} raised, over all {summary['runs']} runs"
                + (f"; first error: `{first[:300]}`" if first else "")
            )
        if summary["stop_hung"]:
            lines.append(
                f"- {lib} {name}: in {summary['stop_hung']} of {summary['of']} runs the worker "
                "did not stop within 10 s of its last job and was abandoned (its numbers "
                "stand: they were taken before the stop)"
            )
    return lines


NOTES = """\
## Notes on the peers

Seen while building this benchmark, from each library's installed source:

- arq has no blocking wait: an idle worker polls every `poll_delay` (0.5 s by default), which
  is what its latency shows. It has no bulk enqueue; each `enqueue_job` is a WATCH/MULTI
  transaction.
- saq 0.26.4 imports `typing_extensions` without declaring it (`requirements/saq.txt` pins it).
  Jobs that run twice: saq's sweep (at worker start, then every 60 s) re-queues any job on the
  active list whose stored status is not yet *active*, including one that a dequeue task of the
  same worker has just moved there and not yet marked.
- streaq runs on coredis, which reads environment variables on every command unless
  `COREDIS_OPTIMIZED=true` (or `python -O`); streaq's README does not set it, so neither do we
  (a profile of the worker showed a few percent of its CPU there).
- taskiq: the stream broker creates its consumer group at `$` in `startup()`, so the producer
  calls `broker.startup()` before kicking (jobs sent before any startup are never delivered).
  A stopping receiver sometimes hangs: it cancels its pending XREADGROUP read and waits for it
  forever (the `taskiq worker` command would need a second signal); the benchmark abandons
  such a worker 10 s after its last job, and the numbers taken before stand.
- Where a library has no bulk enqueue, the gather is cut into chunks of 1,000: unbounded,
  a gather of 20,000 opens a connection per job and can exceed the server's `maxclients`.

In the web scenarios every library keeps its defaults; these are what limit them:

- arq: `job.result()` polls (a GET and a ZSCORE) every `poll_delay`, 0.5 s by default, and
  its worker polls for new jobs every 0.5 s too, so a round trip takes 0.5 to 1 s whatever the
  load. Its pool (redis-py, unbounded) opens a connection per concurrent call.
- saq: one `Queue` lets at most `max_concurrent_ops` (default 20) operations run at once,
  enqueues and job reads alike; more producers queue behind that semaphore. The round trip
  uses the README's `job.refresh(until_complete=...)`, which listens on the queue's one
  pub/sub multiplexer (`Queue.apply` would poll every 0.5 s instead). Its worker opens a
  connection per concurrency slot (each blocks on its own BLMOVE).
- streaq: each `task.result()` opens a pub/sub subscription of its own, on a connection of
  the client's coredis pool, then needs a second connection for its GET. The pool has 64
  connections by default: with more than about 60 waiting calls every connection is held by
  a subscription, the GETs wait for a free one, and every wait ends at its timeout (a
  deadlock until then). So with 200 clients and its defaults streaq completes no round trip;
  `STREAQ_MAX_CONNECTIONS=1000` (an adapter switch, off in these runs) gives it a bigger pool,
  with which 200 concurrent round trips completed in about 1 s in a one-off check.
- taskiq: results need a result backend (the adapter configures taskiq-redis's
  `RedisAsyncResultBackend`, as its README does); `wait_result()` polls it every
  `check_interval`, 0.2 s by default. Its pools (redis-py BlockingConnectionPool, no
  `max_connection_pool_size` given) grow with the concurrent calls.
- queue_async: concurrent single enqueues in one process are coalesced into one script call;
  `handle.result()` waits on the process's one shared pub/sub subscription.
"""

METHOD = """\
## How it was measured

- One driver (`benchmarks/peers/driver.py`, under queue_async's venv) starts one private
  server (or uses `$REDIS_URL`) and runs every scenario for every library in turn, round after
  round (A B C D E, A B C D E, ...). Every run is a fresh set of subprocesses in the library's
  own venv (`benchmarks/peers/adapters/<lib>.py`), on a server flushed before and after.
  Numbers are medians over the rounds; `(Nx)` after a peer's number is how many times better
  queue_async is on that row (above 1: queue_async is faster / smaller; below 1: the peer is).
- throughput: `--jobs` no-op jobs enqueued up front through the library's fastest documented
  enqueue path (timed), then one worker process at concurrency 100. *process* counts from the
  start of the first job to the end of the job that completes the set, measured inside the
  worker (the moment the worker starts taking jobs); *from worker start* counts from the
  moment the worker was started (after imports), so it adds connecting and setup.
- latency: an idle worker at concurrency 100; `--latency-jobs` jobs enqueued one at a time,
  5 ms apart; each handler takes `time.time()` at its start minus the enqueue timestamp passed
  as its argument.
- io: like throughput, but each job awaits `asyncio.sleep(0.01)`, at concurrency 1,000.
- backlog: `--backlog-jobs` no-op jobs enqueued (in slices of 20,000 through the same bulk
  path); memory is the server's `used_memory` delta divided by the jobs; then one worker
  (concurrency 100) runs the first `--jobs` of them with the rest still queued.
- scale-out (queue_async only): `--jobs` no-op jobs, then 1, 2 and 4 worker processes in
  burst mode, released at the same moment; the server's CPU share is the delta of
  `used_cpu_sys + used_cpu_user` (INFO cpu), the workers' the sum of their processes' CPU
  time from release to their stop, each over the time from release to the last job's end
  (100% = one core).
- web_enqueue: `--web-producers` (default 1, 10 and 200; one run each) coroutines in one
  process, each awaiting the library's single enqueue call (no bulk path) for one no-op job
  at a time, `--web-jobs` jobs in all (`--web-single-jobs` with one producer); no worker
  runs. One call per producer goes first, untimed, so pools and scripts are warm. Latency is
  one awaited call (`time.perf_counter()` around it); client CPU is the producing process's
  CPU time per job; peak connections polls `INFO clients` every 0.05 s, less the driver's own.
- web_roundtrip: one worker process (concurrency 200); 200 clients in one other process,
  each in a loop enqueueing a no-op job and awaiting its result through the library's own
  result wait (10 s timeout per call), for `--roundtrip-seconds` (default 20); calls in
  flight at the end finish and count. Peak connections polls `INFO clients` every 0.2 s over
  the worker's and the clients' lives, less the driver's own connections.
- Every handler records which job index it ran, so lost or repeated jobs would show (see
  *Problems*). Per-job logging is off everywhere; prefetch and polling are at each library's
  defaults (table above).
- The machine has 2 cores shared by the server, the worker process(es) and nothing else
  (enqueue runs before the worker starts, except in the latency scenario).
"""


def write_report(path: Path, records: list[Record], meta: Meta) -> None:
    """Write RESULTS.md for this run's records."""
    stats = medians(records)
    libs = [lib for lib in LIBRARIES if lib in meta.info]
    lines = [
        "# queue_async vs. arq, saq, streaq, taskiq",
        "",
        "Generated by `nox -s bench_peers` (benchmarks/peers/driver.py); every run is also a "
        "JSON line in benchmarks/results/peers.jsonl.",
        "",
        *_machine(meta),
        "",
        "## Medians",
        "",
        *main_table(stats, libs),
        "",
    ]
    if backlog := backlog_table(stats, libs):
        lines += ["## Backlog", "", *backlog]
        if meta.skipped_backlog:
            lines += [
                "",
                f"Skipped for the backlog: {', '.join(meta.skipped_backlog)} (run with "
                "`--backlog-libs all` to include them; with no bulk enqueue or a slow one, "
                "their 1M-job enqueue alone takes minutes per run, past this run's budget; "
                "README.md points to a smaller run with them).",
            ]
        lines.append("")
    if scale := scaleout_table(stats):
        lines += ["## Scale-out (queue_async)", "", *scale, ""]
    if cpu := cpu_table(stats, libs):
        lines += [
            "## Server CPU while the worker ran",
            "",
            "Share of one core (and server CPU time per job processed, from the medians).",
            "",
            *cpu,
            "",
        ]
    lines += ["## Libraries and configuration", "", *_versions(meta, libs), ""]
    problems = _problems(records, stats)
    lines += ["## Problems", "", *(problems or ["- none"]), "", NOTES, METHOD]
    path.write_text("\n".join(lines))


def load_run(results: Path, run_id: str | None) -> tuple[list[Record], Meta]:
    """The records and meta of one run in a JSON-lines file (default: the last complete run)."""
    runs: dict[str, list[Record]] = defaultdict(list)
    metas: dict[str, Meta] = {}
    for line in results.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("scenario") == "meta":
            metas[record["run_id"]] = Meta.from_record(record)
        else:
            runs[record["run_id"]].append(record)
    if run_id is None:
        if not metas:
            raise SystemExit(f"{results} holds no complete run (no meta record)")
        run_id = list(metas)[-1]
    if run_id not in metas:
        raise SystemExit(f"{results} has no meta record for run {run_id}")
    return runs[run_id], metas[run_id]


def main(argv: list[str]) -> None:
    """Render RESULTS.md again from the JSON lines of a past run."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/peers.jsonl")
    parser.add_argument("--run", help="run_id (default: the last complete run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    records, meta = load_run(args.results, args.run)
    write_report(args.out, records, meta)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
