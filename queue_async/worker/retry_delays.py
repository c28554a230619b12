"""Retry delays: pure functions of the attempt number."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["exponential_full_jitter"]


def exponential_full_jitter(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before try ``attempt + 1``.

    Uniform in ``[0, min(cap, base * 2**(attempt - 1))]``.

    "Full jitter" spreads retries of jobs that failed together, so they do not stampede the
    service that made them fail. ``attempt`` is the number of the try that just failed (1 for
    the first). ``rand`` is injectable so tests can pin the result.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    return ceiling * rand()
