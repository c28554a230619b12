"""How values are shown: times, ages, durations, JSON; the chart's geometry."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from queue_async.dashboard.samples import Minute

__all__ = ["FILTERS", "chart"]


def iso(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float) -> str:
    """``42s``, ``3m 5s``, ``2h 10m``, ``3d 4h``."""
    value = max(0, int(value))
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m {value % 60}s"
    if value < 86400:
        return f"{value // 3600}h {value % 3600 // 60}m"
    return f"{value // 86400}d {value % 86400 // 3600}h"


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    delta = (datetime.now(UTC) - moment).total_seconds()
    return f"in {seconds(-delta)}" if delta < 0 else f"{seconds(delta)} ago"


def pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def first_line(text: str | None) -> str:
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def chart(minutes: list[Minute], *, width: int = 600, height: int = 80) -> dict[str, Any]:
    """Bars for an SVG: completed (up) and failed tries, scaled to the busiest minute."""
    top = max([m.processed for m in minutes] + [m.failed for m in minutes] + [1])
    step = width / max(1, len(minutes))
    bars = []
    for i, m in enumerate(minutes):
        x = i * step
        done_h = height * m.processed / top
        fail_h = height * m.failed / top
        bars.append({
            "x": round(x, 1), "w": round(step / 2 - 0.5, 1), "known": m.known,
            "done_y": round(height - done_h, 1), "done_h": round(done_h, 1),
            "fail_x": round(x + step / 2, 1), "fail_y": round(height - fail_h, 1),
            "fail_h": round(fail_h, 1), "processed": m.processed, "failed": m.failed,
            "at": datetime.fromtimestamp(m.start, UTC).strftime("%H:%M"),
        })  # fmt: skip
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "top": top,
        "processed": sum(m.processed for m in minutes),
        "failed": sum(m.failed for m in minutes),
        "watched": sum(1 for m in minutes if m.known),
    }


FILTERS: dict[str, Callable[..., Any]] = {
    "iso": iso,
    "ago": ago,
    "seconds": seconds,
    "pretty": pretty,
    "short": short,
    "first_line": first_line,
    "percent": percent,
}
