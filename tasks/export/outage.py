"""An export through its destination's breaker (``tasks.store.breaker``).

A destination that is down is probed, not hammered: an export that may not
call it raises ``DestinationDownError``, a deferral (like a wait for call
slots: no attempt used, the task comes back near the next probe). A call
that finds the service down says so here; a stored success closes the breaker
in the round trip that stores it (``tasks.store.index``); the probe hands its
key back whatever it found. So the breaker opens after the configured failures
in a row and closes at the first answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from celery import Celery, Task

from destinations.contract import ExportResult
from destinations.errors import DeferredExportError, ServiceUnavailableError
from destinations.redaction import redact_message
from tasks.runtime import job_store
from tasks.store.breaker import Admission, Breaker, BreakerPolicy
from tasks.store.failover import retrying

logger = logging.getLogger(__name__)

T = TypeVar("T")


# A first attempt trusts, for this long, that a destination its process found up is
# still up: one round trip fewer per export; at worst a few calls go out just after
# the breaker opened. A task coming back (a retry, a wait) always asks.
UP_REMEMBERED_SECONDS = 1.0
_up_until: dict[str, float] = {}


class DestinationDownError(DeferredExportError):
    """The destination is down and another export probes it: come back after ``retry_after``."""


def breaker_of(app: Celery, name: str) -> Breaker:
    """``name``'s breaker, with this process's policy for it (the defaults if it has none)."""
    policy = (app.conf.get("nx_export_retry") or {}).get(name)
    return Breaker(job_store(app).client, name, policy.breaker if policy else BreakerPolicy())


def breaker_states(app: Celery, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each named destination's breaker (``Breaker.state``): what operators are shown."""
    return {name: breaker_of(app, name).state() for name in names}


def export_through_breaker(
    task: Task, name: str, export: Callable[[], ExportResult]
) -> ExportResult:
    """Run ``export`` if the breaker lets it call; tell the breaker what the call found."""
    breaker = breaker_of(task.app, name)
    token = str(task.request.id)
    lease = float(task.app.conf.get("nx_export_lease_seconds") or 60)
    if task.request.retries == 0 and time.monotonic() < _up_until.get(name, 0.0):
        admission = Admission(True)  # up a moment ago, in this process: no round trip
    else:
        admission = retrying(lambda: breaker.admit(token, probe_seconds=lease),
                             "asking a breaker")  # fmt: skip
        if admission.go and not admission.probe:
            _up_until[name] = time.monotonic() + UP_REMEMBERED_SECONDS
    if not admission.go:
        state = breaker.state()
        since = datetime.fromtimestamp(state["down_since"] or 0, UTC).isoformat(timespec="seconds")
        raise DestinationDownError(
            f"{name} is down since {since} ({state['last_error'] or 'no answer'}): waiting for "
            f"its probe, back in {admission.wait:.0f} s",
            retry_after=admission.wait,
        )
    try:
        outcome = export()
    except ServiceUnavailableError as error:
        _up_until.pop(name, None)
        found = redact_message(str(error))
        if _told(lambda: breaker.failed(found, token), name):
            logger.warning("destination %s is down: %d calls in a row found it so; exports "
                           "now wait for a probe", name, breaker.policy.failures)  # fmt: skip
        raise
    except BaseException:
        if admission.probe:  # neither an answer nor an outage: the next probe may go
            _told(lambda: breaker.release_probe(token), name)
        raise
    # A stored success closes the breaker with the result (``index``); a probe hands its
    # key back here, whatever the service answered.
    if admission.probe and _told(lambda: breaker.answered(token), name):
        logger.warning("destination %s answers again: its waiting exports resume", name)
    return outcome


def _told(tell: Callable[[], T], name: str) -> T | None:
    """Tell the breaker what a call found; never at the cost of the outcome, which matters more."""
    try:
        return retrying(tell, "telling a breaker")
    except redis.RedisError as error:
        logger.warning("could not tell %s's breaker what a call found: %r", name, error)
        return None
