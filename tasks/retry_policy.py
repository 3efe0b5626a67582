"""A destination's retry and rate policy, and how long to wait before trying it again.

Exponential backoff with full jitter, at least what the service asked for in
``Retry-After``, never longer than the configured maximum (which the worker
keeps below the broker's visibility timeout).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How one destination's task retries transient errors, and how often it may start.

    ``rate_limit`` is Celery's form ("10/m"); None runs the task as often as it comes.
    """

    max_attempts: int
    backoff: float
    backoff_max: float
    rate_limit: str | None = None


def retry_delay(
    retries: int,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``retries + 1`` (``retries`` counts the retries done)."""
    ceiling = min(maximum, base * (2**retries))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, maximum)
