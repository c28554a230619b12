"""Log records as JSON lines, with the job fields queue_async puts on them.

::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])

Each line is one JSON object: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
every ``extra`` field of the record (queue_async's: ``job_id``, ``task``, ``queue``,
``attempt``, ``worker_id``, and ``outcome``/``duration`` where they apply), and ``exc_info``
(the formatted traceback) when the record has one. Standard library only (and orjson, a
core dependency).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter"]

# The attributes every LogRecord has: anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            (name, value)
            for name, value in vars(record).items()
            if name not in _STANDARD and not name.startswith("_")
        )
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()
