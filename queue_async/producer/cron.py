"""Cron schedules: a task enqueued at every tick of a cron spec, once across all workers.

Every running worker fires every tick; cron.lua lets only the first one through, so a tick is
enqueued exactly once while at least one worker runs, whatever their number. A tick's job id
is ``cron:<name>:<tick in epoch ms>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from queue_async.exceptions import ConfigurationError
from queue_async.identifiers import check_job_id

if TYPE_CHECKING:
    from queue_async.producer.tasks import Task

__all__ = ["CronSchedule"]


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """One ``queue.cron(...)`` registration."""

    name: str
    spec: str
    task: Task[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    run_missed: bool = False
    """On worker start, enqueue the last tick missed while no worker ran."""

    @classmethod
    def build(
        cls,
        spec: str,
        task: Task[Any, Any],
        *,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timezone: str,
        name: str | None,
        run_missed: bool,
    ) -> CronSchedule:
        """Validate everything a schedule needs, so that mistakes fail at registration."""
        if not isinstance(spec, str) or len(spec.split()) not in (5, 6):
            raise ConfigurationError(
                f"cron spec {spec!r} is not valid: use 5 fields (minute hour day month weekday) "
                "or 6 with seconds first (second minute hour day month weekday)"
            )
        if not croniter.is_valid(spec, second_at_beginning=len(spec.split()) == 6):
            raise ConfigurationError(f"cron spec {spec!r} is not valid: {_explain(spec)}")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"unknown timezone {timezone!r} for cron {spec!r}") from exc
        cron_name = task.name if name is None else name
        check_job_id(f"cron:{cron_name}:0")
        return cls(cron_name, spec, task, tuple(args), dict(kwargs), zone, run_missed)

    def _iter(self, start: datetime) -> croniter:
        fields = len(self.spec.split())
        return croniter(self.spec, start.astimezone(self.timezone), second_at_beginning=fields == 6)

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``."""
        tick: datetime = self._iter(after).get_next(datetime)
        return tick.astimezone(UTC)

    def last_tick(self, at: datetime) -> datetime:
        """The last tick at or before ``at``."""
        tick: datetime = self._iter(at).get_prev(datetime)
        return tick.astimezone(UTC)

    def job_id(self, tick: datetime) -> str:
        return f"cron:{self.name}:{tick_ms(tick)}"


def tick_ms(tick: datetime) -> int:
    return round(tick.timestamp() * 1000)


def _explain(spec: str) -> str:
    try:
        croniter(spec, datetime.now(UTC), second_at_beginning=len(spec.split()) == 6)
    except Exception as exc:  # noqa: BLE001 - croniter raises several types for bad specs
        return str(exc)
    return "croniter refuses it"
