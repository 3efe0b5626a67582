"""An export through its destination's breaker (``tasks.store.breaker``).

A destination that is down is probed, not hammered: an export that may not
call it raises ``DestinationDownError``, a deferral (like a wait for call
slots: no attempt used, the task comes back near the next probe). The probe
and every other call report what they found, so the breaker opens after the
configured consecutive failures and closes at the first answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from celery import Celery, Task

from destinations.contract import ExportResult
from destinations.errors import DeferredExportError, ServiceUnavailableError
from destinations.redaction import redact_message
from tasks.runtime import job_store
from tasks.store.breaker import Breaker, BreakerPolicy

logger = logging.getLogger(__name__)


class DestinationDownError(DeferredExportError):
    """The destination is down and another export probes it: come back after ``retry_after``."""


def breaker_of(app: Celery, name: str) -> Breaker:
    policy = app.conf.get("nx_export_breaker") or BreakerPolicy()
    return Breaker(job_store(app).client, name, policy)


def export_through_breaker(
    task: Task, name: str, export: Callable[[], ExportResult]
) -> ExportResult:
    """Run ``export`` if the breaker lets it call; tell the breaker what the call found."""
    breaker = breaker_of(task.app, name)
    token = str(task.request.id)
    lease = float(task.app.conf.get("nx_export_lease_seconds") or 60)
    admission = breaker.admit(token, probe_seconds=lease)
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
        if breaker.failed(redact_message(str(error)), token):
            logger.warning("destination %s is down: %d calls in a row found it so; exports "
                           "now wait for a probe", name, breaker.policy.failures)  # fmt: skip
        raise
    except BaseException:
        if admission.probe:  # neither an answer nor an outage: the next probe may go
            breaker.release_probe(token)
        raise
    # An answer resets the count of failures in a row (none: no round trip).
    answered = admission.probe or (outcome.success and admission.failures > 0)
    if answered and breaker.answered(token, outcome.success):
        logger.warning("destination %s answers again: its waiting exports resume", name)
    return outcome
