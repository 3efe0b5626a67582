"""Riding out a Redis failover (or restart) inside one job-store call.

While Sentinel promotes a replica, a call fails: the connection to the old primary
breaks, no primary is known yet (``MasterNotFoundError``), or the old primary,
back as a replica, answers READONLY (redis-py's Sentinel connections turn that into
a ``ConnectionError`` and look the primary up again). ``retrying`` runs a call again
for up to about 30 s, which covers a failover and a socket timeout; the caller's own
recovery (a task retried later, the sweep) covers anything longer.

Only calls that may safely run twice go through it: a write whose repeat changes
nothing (writing the same fields, joining or leaving a sorted set), or one whose
repeat checks what the first did (``JobStore.create``, the compare-and-set). A call
that broke may have run — its answer lost with the connection — so anything that
would count twice, or would mistake its own earlier effect for someone else's, is
left to its caller.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis._parsers.base import BaseParser

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a failover looks like to a client: the connection broke, timed out, found no
# primary, or found the old primary demoted (READONLY on a plain redis:// connection).
FAILOVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
# Writes refused because the server is no primary any more: a primary that lost its
# replicas refuses them (NOREPLICAS, ``min-replicas-to-write``: the high-availability
# setup's guard against a paused primary that wakes after its replica was promoted),
# a demoted one too (READONLY). Redis says so at the start of a command's error, or
# inside a script's ("Error running script ...: -READONLY ..."), which redis-py
# leaves a plain ResponseError. A write refused so did not happen.
REFUSED_WRITES = ("NOREPLICAS", "-READONLY")


def recognise_refused_writes() -> None:
    """Make redis-py raise ``ReadOnlyError`` for every write a non-primary refused.

    redis-py's Sentinel connections turn ``ReadOnlyError`` into a ``ConnectionError``
    and ask the Sentinels for the primary again, as they do for a demoted one; every
    client in the process (kombu's broker channel, Celery's result backend, the job
    store's scripts) then treats the old primary's refusal as the failover it is.
    Idempotent.
    """
    original = BaseParser.__dict__["parse_error"].__func__
    if getattr(original, "recognises_refused_writes", False):
        return

    def parse_error(cls: type[BaseParser], response: str) -> redis.RedisError:
        error = original(cls, response)
        if type(error) is redis.ResponseError and any(w in str(error) for w in REFUSED_WRITES):
            return redis.ReadOnlyError(str(error))
        return error

    parse_error.recognises_refused_writes = True  # type: ignore[attr-defined]
    BaseParser.parse_error = classmethod(parse_error)  # type: ignore[method-assign,assignment]


recognise_refused_writes()

ATTEMPTS = 30
FIRST_DELAY = 0.1
MAX_DELAY = 2.0


def retrying(
    call: Callable[[], T],
    what: str,
    before_retry: Callable[[], None] | None = None,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, again after each failover error with equal-jitter backoff; the last one raises.

    ``before_retry`` runs before each new attempt (e.g. to read what the broken one did).
    """
    for attempt in range(1, attempts + 1):
        try:
            if attempt > 1 and before_retry is not None:
                before_retry()
            return call()
        except FAILOVER_ERRORS as error:
            if attempt == attempts:
                raise
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)
            logger.warning("Redis unavailable during %s (%r); again in %.1f s", what, error, delay)
            sleep(delay)
    raise AssertionError("unreachable")
