"""The admin layer: see, search and repair a queue's jobs; see its workers, crons, and every
queue of the server. What the CLI, the dashboard and the metrics are built on."""

from queue_async.admin.admin import Admin

__all__ = ["Admin"]
