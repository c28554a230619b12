"""queue_async against arq, saq, streaq and taskiq, on one private server, interleaved.

    python benchmarks/peers/driver.py [--rounds 3] [--scenarios throughput,latency,io,...]
        [--libs queue_async,arq,...] [--jobs 20000] [--latency-jobs 500]
        [--backlog-jobs 1000000] [--backlog-libs queue_async]
        [--web-producers 1,10,200] [--web-jobs 20000] [--roundtrip-seconds 20]

Run it with ``nox -s bench_peers``, which creates one virtualenv per peer under
``.nox/peers-<lib>`` and runs this driver under queue_async's own. Each round runs every
selected scenario for every library in turn (A B C D E, A B C D E, ...), each run a fresh
subprocess in the library's venv on a flushed server (web_enqueue once per producer count,
every library in turn). Every run is one JSON line on stdout
and in benchmarks/results/peers.jsonl; the medians go to benchmarks/peers/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import LIBRARIES, PEERS, AdapterError, Library, Server, run_role
from report import Meta, run_facts, write_report
from scenarios import SCALEOUT_WORKERS, SCENARIOS, WEB_PRODUCERS, Sizes, scaleout, web_enqueue

ROOT = Path(__file__).resolve().parents[2]
ALL_SCENARIOS = (
    "throughput",
    "latency",
    "io",
    "backlog",
    "scaleout",
    "web_enqueue",
    "web_roundtrip",
)
# Peers' 1M-job backlogs take minutes per run to enqueue (no bulk path or a slow one), which
# the default budget of one full run (~25 minutes on 2 cores) cannot hold.
DEFAULT_BACKLOG_LIBS = ("queue_async",)


def _names(value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if value == "all":
        return allowed
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(allowed)}")
    return names


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in value.split(",") if n.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {value}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"need one or more numbers >= 1, not {value}")
    return counts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scenarios",
        type=lambda v: _names(v, ALL_SCENARIOS),
        default=ALL_SCENARIOS,
        help=f"comma-separated, from {','.join(ALL_SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--libs",
        type=lambda v: _names(v, LIBRARIES),
        default=LIBRARIES,
        help=f"comma-separated, from {','.join(LIBRARIES)} (default: all)",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="throughput/io/scale-out jobs")
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--backlog-jobs", type=int, default=1_000_000)
    parser.add_argument(
        "--backlog-libs",
        type=lambda v: _names(v, LIBRARIES),
        default=DEFAULT_BACKLOG_LIBS,
        help="libraries that run the backlog scenario (default: queue_async; 'all' for every one)",
    )
    parser.add_argument(
        "--web-producers",
        type=_counts,
        default=WEB_PRODUCERS,
        help="web_enqueue's concurrent producers, one run each (default: 1,10,200)",
    )
    parser.add_argument("--web-jobs", type=int, default=20_000, help="web_enqueue jobs per run")
    parser.add_argument(
        "--web-single-jobs",
        type=int,
        default=None,
        help="web_enqueue jobs with one producer (default: --web-jobs)",
    )
    parser.add_argument(
        "--roundtrip-seconds", type=float, default=20.0, help="web_roundtrip's length per run"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per adapter process")
    parser.add_argument(
        "--venvs", type=Path, default=ROOT / ".nox", help="where the peers-<lib> venvs are"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "peers.jsonl"
    )
    parser.add_argument(
        "--report", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md"
    )
    parser.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    return parser.parse_args(argv)


@contextmanager
def server_url() -> Iterator[str]:
    """$REDIS_URL if set, else one private embedded server for the whole run."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from queue_async.embedded import EmbeddedServer  # noqa: PLC0415 - only when needed

    with EmbeddedServer() as server:
        yield server.url


class Run:
    """One invocation: its libraries, the records it wrote, and where it writes them."""

    def __init__(self, args: argparse.Namespace, server: Server) -> None:
        self.args = args
        self.server = server
        self.id = uuid.uuid4().hex[:12]
        self.records: list[dict[str, Any]] = []
        self.libs = {name: Library.find(name, args.venvs) for name in args.libs}
        self.info: dict[str, dict[str, Any]] = {}
        self.sizes = Sizes(
            jobs=args.jobs,
            latency_jobs=args.latency_jobs,
            backlog_jobs=args.backlog_jobs,
            timeout=args.timeout,
            web_jobs=args.web_jobs,
            web_single_jobs=args.web_single_jobs or args.web_jobs,
            roundtrip_seconds=args.roundtrip_seconds,
        )
        args.results.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, record: dict[str, Any]) -> None:
        record = {"run_id": self.id, "ts": round(time.time(), 3), **record}
        self.records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        with self.args.results.open("a") as out:
            out.write(line + "\n")

    def probe(self) -> None:
        """Each library's versions and configuration; a library that cannot even start is
        recorded as an error and left out of the scenarios."""
        for name, lib in list(self.libs.items()):
            if not lib.installed:
                reason = f"no virtualenv at {lib.python} (run: nox -s bench_peers)"
            else:
                try:
                    self.info[name] = run_role(lib, "info", timeout=120)
                    continue
                except AdapterError as exc:
                    reason = f"{exc} (if it did not install, the nox log has pip's error)"
            self.emit({"scenario": "setup", "library": name, "error": reason})
            del self.libs[name]

    def one(self, round_: int, scenario: str, lib: Library, **extra: Any) -> None:
        """One run of one scenario for one library, recorded whatever happens."""
        base = {"round": round_, "scenario": scenario, "library": lib.name, **extra}
        started = time.monotonic()
        try:
            if scenario == "scaleout":
                metrics = scaleout(lib, self.server, self.sizes, extra["workers"])
            elif scenario == "web_enqueue":
                metrics = web_enqueue(lib, self.server, self.sizes, extra["producers"])
            else:
                metrics = SCENARIOS[scenario](lib, self.server, self.sizes)
        except (AdapterError, RuntimeError, KeyError, ValueError) as exc:
            metrics = {"error": str(exc)[-1500:]}
        finally:
            self.server.flush()
        self.emit({**base, **metrics, "wall_s": round(time.monotonic() - started, 2)})

    def rounds(self) -> None:
        for round_ in range(1, self.args.rounds + 1):
            for scenario in self.args.scenarios:
                if scenario == "scaleout":
                    if "queue_async" in self.libs:
                        for workers in SCALEOUT_WORKERS:
                            self.one(round_, scenario, self.libs["queue_async"], workers=workers)
                    continue
                if scenario == "web_enqueue":
                    for producers in self.args.web_producers:
                        for lib in self.libs.values():
                            self.one(round_, scenario, lib, producers=producers)
                    continue
                for name, lib in self.libs.items():
                    if scenario == "backlog" and name not in self.args.backlog_libs:
                        continue
                    self.one(round_, scenario, lib)


def _command(argv: list[str]) -> str:
    """How this run was started, as the reader would type it."""
    if os.environ.get("NOX_CURRENT_SESSION") == "bench_peers":
        return " ".join(
            ["python3 -m nox -s bench_peers", *(["--", *map(shlex.quote, argv)] if argv else [])]
        )
    return " ".join(shlex.quote(a) for a in ["python", "benchmarks/peers/driver.py", *argv])


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the embedded server is stopped and its folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    with server_url() as url:
        server = Server(url)
        try:
            run = Run(args, server)
            run.probe()
            run.rounds()
            meta = Meta(
                command=_command(argv),
                server=server.version(),
                wall_s=time.monotonic() - started,
                load=(load_start, os.getloadavg()[0]),
                facts=run_facts(),
                info=run.info,
                backlog_libs=[n for n in args.backlog_libs if n in run.libs],
                skipped_backlog=[n for n in run.libs if n not in args.backlog_libs and n in PEERS],
                args={k: str(v) for k, v in vars(args).items()},
            )
            run.emit(meta.record())
        finally:
            server.close()
    if not args.no_report:
        write_report(args.report, run.records, meta)
        print(f"wrote {args.report} ({meta.wall_s / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
