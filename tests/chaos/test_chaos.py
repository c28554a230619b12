"""The short chaos run, in every test session (the long one: ``nox -s chaos``)."""

from __future__ import annotations

import pytest

from tests.chaos.driver import ChaosConfig, run_chaos

pytestmark = pytest.mark.anyio


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_no_job_is_lost_or_recorded_twice_under_kills_drops_a_restart_and_oom() -> None:
    report = await run_chaos(ChaosConfig(jobs=1500, doomed=15, duration=12.0, workers=3))
    print(report)  # the figures, shown with -s or on failure

    assert report.problems() == []
    # The faults really happened...
    assert report.kills >= 8
    assert (report.sigterms, report.server_restarts, report.connection_drops) == (1, 1, 2)
    assert report.oom_phases == 1 and report.worker_exits == 0
    assert report.clients_dropped >= 3
    # ...and every job ran, the doomed ones went to dead, and nothing ran without a record.
    assert report.done == 1500
    assert report.completion_records == 1500
    assert report.executions == 1500 + 15 + report.extra_executions
