"""A destination's retry and rate policy, and how long to wait before trying it again.

A transient error is retried until the job's deadline (``NX_EXPORT_JOB_DEADLINE``):
a retry whose countdown would end past it is not sent, and the destination
fails saying so. ``NX_EXPORT_MAX_ATTEMPTS`` is an optional cap on top.

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
import time
from dataclasses import dataclass, field
from typing import cast

import redis
from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from destinations.errors import TransientExportError
from destinations.redaction import redact_message
from tasks.runtime import job_store
from tasks.store.breaker import BreakerPolicy
from tasks.store.keys import DEADLINES
from tasks.store.lease import Lease

# Redis restarting or failing over, as redis-py (the store) and kombu (a publish) say it.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    """How one destination's task retries transient errors, and how often it may start.

    ``rate_limit`` is Celery's form ("10/m"); None runs the task as often as it comes.
    """

    max_attempts: int | None  # None: retried until the job's deadline
    backoff: float
    backoff_max: float
    retry_after_max: float | None = None  # the longest Retry-After honoured; backoff_max if None
    rate_limit: str | None = None
    # When the destination counts as down (tasks.store.breaker).
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


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


def retry_or_give_up(
    task: Task, name: str, job_id: str, error: TransientExportError, attempt: int, waited: int,
    lease: Lease,
) -> str:  # fmt: skip
    """Raise Celery's Retry until the job's deadline (or the optional cap); else return why not."""
    policy: RetryPolicy = task.app.conf.nx_export_retry[name]
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        return f"gave up after {attempt} attempts: {error}"
    countdown = retry_delay(
        task.request.retries - waited,
        policy.backoff,
        policy.backoff_max,
        error.retry_after,
        retry_after_max=policy.retry_after_max,
    )
    store = job_store(task.app)
    deadline = cast(float | None, store.client.zscore(DEADLINES, job_id))
    if deadline is not None and time.time() + countdown >= deadline:
        return f"gave up after {attempt} attempts: the job's deadline comes first: {error}"
    store.record_retry(job_id, name, str(error), countdown, lease)
    # Celery stores and logs the retry's exception: only its redacted message.
    safe = TransientExportError(redact_message(str(error)), error.retry_after)
    raise task.retry(exc=safe, countdown=countdown, max_retries=None)
