"""The one place Python builds Redis key names (lua/includes/keys.lua is the one place in Lua).

Every key of one queue starts with ``<prefix>:{<queue>}:``, so that the whole queue lives in
one hash slot and each script touches one slot only, as Redis Cluster requires: a queue's
scripts, transactions and blocking waits all go to the master of its slot, and different
queues spread over the masters. The registry of queues is the one key outside every queue's
slot; no script and no transaction touches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from queue_async.identifiers import check_name


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The key names of one queue."""

    prefix: str
    """``<prefix>:{<queue>}:``, the start of every key of this queue."""
    ready: str
    """Ready jobs of a priority other than 0 (sorted set; see lua/includes/ready.lua)."""
    fifo: str
    """Ready jobs of priority 0, oldest first (list)."""
    fresh: str
    """Jobs queued and not started yet, as compact records (hash: id -> record)."""
    scheduled: str
    active: str
    dead: str
    wake: str
    seq: str
    meta: str
    workers: str
    idle: str
    gates: str
    """Flow control settings: pause flags, task limits (see lua/includes/gates.lua)."""
    gated: str
    """The gates holding jobs back now."""
    cron: str
    """Cron schedules: name -> the last tick enqueued (epoch ms)."""
    retrying: str
    """The scheduled jobs that wait out a retry's backoff (sorted set, a subset of
    ``scheduled`` with the same scores): what tells a retry from a delayed job."""
    done: str
    """Finished jobs whose results are kept, by finish time (sorted set, trimmed; members
    whose hash expired are dropped as listings meet them)."""
    crons: str
    """The cron schedules workers run (hash: name -> JSON {spec, task, timezone, recorded}),
    written by each worker at start (see record_crons.lua)."""

    @classmethod
    def for_queue(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{check_name('key prefix', prefix)}:{{{check_name('queue name', queue)}}}:"
        return cls(
            prefix=base,
            ready=base + "ready",
            fifo=base + "fifo",
            fresh=base + "fresh",
            scheduled=base + "scheduled",
            active=base + "active",
            dead=base + "dead",
            wake=base + "wake",
            seq=base + "seq",
            meta=base + "meta",
            workers=base + "workers",
            idle=base + "idle",
            gates=base + "gates",
            gated=base + "gated",
            cron=base + "cron",
            retrying=base + "retrying",
            done=base + "done",
            crons=base + "crons",
        )

    @staticmethod
    def registry(prefix: str) -> str:
        """Every queue of a key prefix that was used on this server (set of names), kept by
        producers and workers so that no one needs ``KEYS`` to find them. Outside every
        queue's hash slot: no script touches it."""
        return f"{check_name('key prefix', prefix)}:queues"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def entry(self) -> str:
        """How a producer in another language calls enqueue here (docs/wire-format.md)."""
        return f"{self.prefix}entry"

    @property
    def done_channel(self) -> str:
        """Pub/sub channel on which a finishing script announces the id of an awaited job."""
        return f"{self.prefix}done"

    @property
    def ended_channel(self) -> str:
        """Pub/sub channel of ``result()`` waiters: one message per finishing script call,
        with the awaited jobs it finished, and the results it carries (see wire.ENDED_FIELDS)."""
        return f"{self.prefix}ended"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def held(self, gate: str) -> str:
        """Jobs a gate holds back, e.g. ``t:<task>`` (see lua/includes/gates.lua)."""
        return f"{self.prefix}held:{gate}"

    def alarm(self, worker_id: str) -> str:
        """A worker rings this list to end its own blocking wait at a job's due time."""
        return f"{self.prefix}alarm:{worker_id}"

    def inbox(self, worker_id: str) -> str:
        """Jobs handed straight to an idle worker by enqueue.lua (see lease.lua)."""
        return f"{self.prefix}inbox:{worker_id}"
