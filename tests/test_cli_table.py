"""The CLI's table and time formatting (no server), and that a worker's start-up skips it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from queue_async.cli_tools.table import Column, ago, iso, render


def test_columns_align_numbers_right_and_cut_long_cells() -> None:
    columns = [
        Column("ID", max_width=None),
        Column("N", numeric=True),
        Column("ERROR", max_width=8),
    ]
    text = render(
        columns, [["a-long-job-id", 5, "ValueError: boom"], ["b", 120, "line\nbreak"]], tty=False
    )
    assert text.splitlines() == [
        "ID               N  ERROR",
        "a-long-job-id    5  ValueEr…",
        "b              120  line br…",
    ]


def test_on_a_terminal_shrinkable_columns_give_way_but_ids_never_do(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    columns = [Column("ID", max_width=None), Column("ERROR", max_width=100, shrinks=True)]
    job_id = "x" * 25
    (_, row) = render(columns, [[job_id, "e" * 100]], tty=True).splitlines()
    assert len(row) == 40 and row.startswith(job_id + "  ") and row.endswith("…")


def test_times_read_as_iso_and_as_ages() -> None:
    now = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
    assert iso(now) == "2025-01-31T09:30:00Z"
    assert ago(now - timedelta(seconds=5), now) == "5s ago"
    assert ago(now - timedelta(hours=3, minutes=2), now) == "3h ago"
    assert ago(now + timedelta(minutes=2, seconds=1), now) == "in 2m"
    assert ago(now - timedelta(days=9), now) == "9d ago"
    assert ago(now, now) == "now"
    assert ago(None) == iso(None) == ""


def test_the_worker_command_does_not_import_the_admin_subcommands() -> None:
    code = "import sys, queue_async.cli; print(sorted(m for m in sys.modules if 'cli_tools' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=30)
    assert done.stdout.decode().strip() == "[]"


def test_help_documents_the_exit_codes_and_version_prints() -> None:
    cli = [sys.executable, "-m", "queue_async.cli"]
    shown = subprocess.run([*cli, "--help"], capture_output=True, check=True, timeout=30)
    help_text = shown.stdout.decode()
    for line in ("exit codes:", "3  the server cannot be reached", "4  refused"):
        assert line in help_text
    version = subprocess.run([*cli, "--version"], capture_output=True, check=True, timeout=30)
    assert version.stdout.decode().startswith("queue-async 0.")
