"""The audit log: every state-changing action the dashboard took (who, what, when).

Kept on the queue's server in one capped list per key prefix (``<prefix>:dashboard:audit``,
newest first, ``max_len`` entries), so that every dashboard process of a deployment writes to
and shows the same log; each entry is also logged on ``queue_async.dashboard.audit``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["AuditEntry", "AuditLog"]

logger = logging.getLogger("queue_async.dashboard.audit")


class AuditEntry(BaseModel):
    """One action taken from the dashboard."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    who: str
    action: str
    """``retry``, ``delete``, ``cancel``, ``abort``, ``retry_dead``, ``purge_dead``,
    ``pause``, ``resume``."""
    queue: str
    target: str = ""
    """The job id, the task, or the filter of a bulk action."""
    outcome: str = ""
    """What it did: ``ok``, ``nothing to do``, ``12 jobs``."""


class AuditLog:
    """A capped list of ``AuditEntry`` on the server: one ``LPUSH`` + ``LTRIM`` per action."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, *, max_len: int = 10_000) -> None:
        if max_len < 1:
            raise ValueError(f"the audit log keeps at least one entry, not {max_len}")
        self.client = client
        self.key = f"{prefix}:dashboard:audit"
        self.max_len = max_len

    async def record(
        self, *, who: str, action: str, queue: str, target: str = "", outcome: str = ""
    ) -> AuditEntry:
        entry = AuditEntry(
            at=datetime.now(UTC), who=who, action=action, queue=queue, target=target,
            outcome=outcome,
        )  # fmt: skip
        logger.info(
            "%s: %s on queue %r %s -> %s", who, action, queue, target or "-", outcome or "-"
        )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, entry.model_dump_json())
            pipe.ltrim(self.key, 0, self.max_len - 1)
            await pipe.execute()
        return entry

    async def page(self, offset: int = 0, limit: int = 50) -> list[AuditEntry]:
        """Entries ``offset`` to ``offset + limit`` from the newest (one ``LRANGE``)."""
        offset = max(0, min(offset, self.max_len))
        limit = max(1, min(limit, 500))
        raw: list[Any] = await self.client.lrange(self.key, offset, offset + limit - 1)
        entries = []
        for item in raw:
            try:
                entries.append(AuditEntry.model_validate_json(item))
            except ValidationError:
                continue  # a foreign entry: skipped, not fatal to the page
        return entries

    async def length(self) -> int:
        return int(await self.client.llen(self.key))
