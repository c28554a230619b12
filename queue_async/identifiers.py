"""What can name a queue, a key prefix, a task or a job: checked before any key is built."""

from __future__ import annotations

import re

from queue_async.exceptions import ConfigurationError

__all__ = ["check_job_id", "check_name", "check_task_name"]

# Braces would move the hash tag; whitespace and control characters make keys unreadable in
# redis-cli. Everything else that people name queues with is allowed.
_NAME = re.compile(r"[A-Za-z0-9_.\-:]{1,100}")
_JOB_ID_MAX = 200
_TASK_NAME_MAX = 200


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid queue name or key prefix, else raise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigurationError(
            f"{kind} {value!r} is not valid: use 1 to 100 characters from letters, digits "
            "and '_.-:' (no braces, spaces or control characters)"
        )
    return value


def check_task_name(name: str) -> str:
    """Return ``name`` if it can name a task, else raise."""
    if not isinstance(name, str) or not 0 < len(name) <= _TASK_NAME_MAX or not name.isprintable():
        raise ConfigurationError(
            f"task name {name!r} is not valid: use 1 to {_TASK_NAME_MAX} printable characters"
        )
    return name


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it can be a job id, else raise."""
    if (
        not isinstance(job_id, str)
        or not 0 < len(job_id) <= _JOB_ID_MAX
        or not job_id.isprintable()
        or any(c.isspace() for c in job_id)
    ):
        raise ConfigurationError(
            f"job id {job_id!r} is not valid: use 1 to {_JOB_ID_MAX} printable characters "
            "without spaces"
        )
    return job_id
