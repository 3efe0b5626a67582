"""A destination's retry and rate policy, and how long to wait before trying it again.

Exponential backoff with equal jitter — a random delay between half the doubled
delay and all of it, so retries spread out yet never come at once — never longer
than the configured maximum (kept below a quarter of the visibility timeout) —
except that a service's ``Retry-After`` is honoured up to its own ceiling
(``NX_EXPORT_RETRY_AFTER_MAX_SECONDS``, kept below half the visibility timeout,
so a retry countdown never outlives it). Retrying sooner than a service asked
only earns another refusal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

# Redis restarting or failing over, as redis-py (the store) and kombu (a publish) say it.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    """How one destination's task retries transient errors, and how often it may start.

    ``rate_limit`` is Celery's form ("10/m"); None runs the task as often as it comes.
    """

    max_attempts: int
    backoff: float
    backoff_max: float
    retry_after_max: float | None = None  # the longest Retry-After honoured; backoff_max if None
    rate_limit: str | None = None


def retry_delay(
    retries: int,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    retry_after_max: float | None = None,
) -> float:
    """Delay before retry number ``retries + 1`` (``retries`` counts the retries done).

    ``retry_after`` wins over the backoff up to ``retry_after_max`` (``maximum``
    when not given).
    """
    ceiling = min(maximum, base * (2**retries))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        honoured = maximum if retry_after_max is None else retry_after_max
        delay = max(delay, min(retry_after, honoured))
    return delay


def unsent_retry_requeued(refused: Reject) -> Reject:
    """The task back in its queue when its retry could not be sent for want of Redis.

    Celery rejects (drops) a task whose retry message it could not publish. A
    publish that met a failover (kombu wraps the old primary's refusal while it
    declares the queue: an ``OperationalError`` its own retry does not catch) must
    not lose the task: requeued, it runs again, and its lease and stored outcome
    keep the export single if the retry was sent after all.
    """
    if isinstance(refused.reason, REDIS_AWAY):
        return Reject(refused.reason, requeue=True)
    return refused
