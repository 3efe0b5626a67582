"""One Celery task per destination, named ``export.<destination name>``.

A destination's failure is a result, not a task failure: a chord or chain only
goes on when its tasks return, and a failed destination must not stop its
siblings, its dependents or the job's completion. The job's ``export.finish``
task carries the failure to Flower.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from destinations.errors import SlotsDeferredError, TransientExportError
from tasks.call_log import RedisCallLog
from tasks.messages import (
    InvalidContextError,
    context_from_message,
    describe_context,
    failure,
    result_from_json,
    result_to_json,
)
from tasks.retry_policy import retry_delay
from tasks.runtime import job_store, local_registry
from tasks.slot_waits import slot_waits, wait_for_slots

logger = logging.getLogger(__name__)


class DestinationTask(Task):
    """Acknowledged only once the result is stored, so a crash hands the task to another worker."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the policy below decides, per destination


def declare_destination_task(name: str) -> None:
    """Declare ``export.<name>``; idempotent per process."""
    shared_task(name=f"export.{name}", bind=True, base=DestinationTask)(run_destination)


def run_destination(
    self: Task, job_id: str, context: dict[str, Any], strategy: str = "all"
) -> dict[str, Any]:
    name = self.name.removeprefix("export.")
    store = job_store(self.app)
    stored = store.load(job_id)
    if stored is None:
        # The job record expired or was never written: nothing to report to.
        raise InvalidContextError(f"job {job_id} is unknown; its record may have expired")
    earlier = stored["destinations"].get(name, {})
    if earlier.get("state") == "SUCCESS" and earlier.get("result"):
        # Redelivered after the result was stored but before the message was acknowledged.
        _stop_chain_after_success(self, strategy)
        return dict(earlier["result"])

    attempt = store.start_attempt(job_id, name, self.request.id)
    result = _export(self, name, job_id, context, strategy, attempt, stored)
    store.record_result(job_id, name, result)
    if result["success"]:
        _stop_chain_after_success(self, strategy)
    return result


def _export(
    self: Task,
    name: str,
    job_id: str,
    message: dict[str, Any],
    strategy: str,
    attempt: int,
    stored: dict[str, Any],
) -> dict[str, Any]:
    destination = local_registry().get(name)
    if destination is None:
        return result_to_json(
            failure(
                name, f"destination {name!r} is not installed on worker {self.request.hostname}"
            ),
            name,
        )
    try:
        context = context_from_message(message)
    except InvalidContextError as error:
        return result_to_json(failure(name, str(error)), name)
    context.previous_results = {
        other: result_from_json(entry["result"])
        for other, entry in stored["destinations"].items()
        if other != name and entry.get("result")
    }
    context.metadata = {**context.metadata, "export_job_id": job_id, "export_attempt": attempt}
    store = job_store(self.app)
    context.call_log = RedisCallLog(store.client, job_id, name, store.retention)
    try:
        outcome = destination.export(context)
    except SlotsDeferredError as error:
        wait_for_slots(self, name, job_id, error)  # waiting for call slots costs no attempt
    except TransientExportError as error:
        waited, waited_in_run = slot_waits(self.app, job_id, name, self.request.id)
        attempt -= waited
        _retry_or_give_up(self, name, job_id, error, attempt, waited_in_run)
        return result_to_json(failure(name, f"gave up after {attempt} attempts: {error}"), name)
    except Exception as error:  # the contract says export never raises; a plugin broke it
        logger.exception(
            "destination %s raised while exporting %s", name, describe_context(message)
        )
        return result_to_json(failure(name, f"{name} raised {type(error).__name__}: {error}"), name)
    return result_to_json(outcome, name)


def _retry_or_give_up(
    self: Task, name: str, job_id: str, error: TransientExportError, attempt: int, waited: int
) -> None:
    """Raise Celery's Retry while attempts remain; return when they are used up."""
    policy = self.app.conf.nx_export_retry[name]
    if attempt >= int(policy["max_attempts"]):
        return
    countdown = retry_delay(
        self.request.retries - waited,
        float(policy["backoff"]),
        float(policy["backoff_max"]),
        error.retry_after,
    )
    job_store(self.app).record_retry(job_id, name, str(error), countdown)
    raise self.retry(exc=error, countdown=countdown, max_retries=None)


def _stop_chain_after_success(self: Task, strategy: str) -> None:
    """For first_success: drop the remaining destinations, keep the job's finish task.

    The chain's remaining signatures are stored in reverse, so the finish task
    (the last step) is the first element.
    """
    if strategy == "first_success" and self.request.chain:
        self.request.chain = self.request.chain[:1]


__all__ = ["DestinationTask", "declare_destination_task", "run_destination"]
