"""Plain-text tables and times for people (stdlib only): aligned columns, long cells cut."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Column", "ago", "iso", "one_line", "render"]

_ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its header, whether it is numeric (right-aligned), the widest its cells are
    shown (None: never cut, for ids people copy), and whether it may shrink to fit a terminal."""

    header: str
    numeric: bool = False
    max_width: int | None = 40
    shrinks: bool = False


def one_line(value: object) -> str:
    """A cell's text on one line: newlines and tabs become spaces; None is empty."""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + _ELLIPSIS


def render(columns: Sequence[Column], rows: Sequence[Sequence[object]], *, tty: bool) -> str:
    """The rows under their headers, columns two spaces apart.

    Cells longer than their column's ``max_width`` end in an ellipsis; on a terminal, the
    columns that ``shrinks`` give up width (widest first) until the table fits.
    """
    cells = [[one_line(value) for value in row] for row in rows]
    widths = [len(column.header) for column in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    for i, column in enumerate(columns):
        if column.max_width is not None:
            widths[i] = min(widths[i], max(column.max_width, len(column.header)))
    if tty:
        _fit(columns, widths, shutil.get_terminal_size((120, 24)).columns)
    lines = [_line([c.header for c in columns], columns, widths)]
    lines.extend(_line(row, columns, widths) for row in cells)
    return "\n".join(lines)


def _fit(columns: Sequence[Column], widths: list[int], available: int) -> None:
    excess = sum(widths) + 2 * (len(widths) - 1) - available
    shrinkable = [i for i, column in enumerate(columns) if column.shrinks]
    while excess > 0 and shrinkable:
        widest = max(shrinkable, key=lambda i: widths[i])
        floor = max(len(columns[widest].header), 8)
        if widths[widest] <= floor:
            shrinkable.remove(widest)
            continue
        step = min(excess, widths[widest] - floor)
        widths[widest] -= step
        excess -= step


def _line(texts: Sequence[str], columns: Sequence[Column], widths: Sequence[int]) -> str:
    parts = []
    for text, column, width in zip(texts, columns, widths, strict=True):
        cut = _cut(text, width)
        parts.append(cut.rjust(width) if column.numeric else cut.ljust(width))
    return "  ".join(parts).rstrip()


def iso(moment: datetime | None) -> str:
    """``2025-01-31T09:30:00Z`` (UTC, to the second); empty for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago (``5s ago``, ``3h ago``) or how far ahead (``in 2m``); empty for None."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    span = _span(abs(seconds))
    if abs(seconds) < 1:
        return "now"
    return f"{span} ago" if seconds > 0 else f"in {span}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
