"""One Celery task per destination, named ``export.<destination name>``.

A destination's failure is a result, not a task failure: a chord or chain only
goes on when its tasks return, and a failed destination must not stop its
siblings, its dependents or the job's completion. So is anything raised around
the export (a bad stored result, a Redis error, a bug): the task records it as
the destination's failure and returns. Only an unreachable Redis makes the task
come back later instead, since nothing could be recorded. The job's
``export.finish`` task carries the failure to Flower.

One copy of a destination's export runs at a time (``tasks.lease``); a copy of
a task whose result is stored returns that result again without exporting, so
the chord counts it (Celery keeps one part per task id) and nothing runs twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import redis
from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, Retry

from destinations.errors import TransientExportError
from destinations.names import task_name
from tasks.job_model import DestinationEntry, JobNotFoundError, JobRecord
from tasks.job_store import job_key
from tasks.lease import Lease, lease_key
from tasks.messages import (
    InvalidContextError,
    context_from_message,
    describe_context,
    failure,
    result_from_json,
    result_to_json,
)
from tasks.retry_policy import RetryPolicy, retry_delay
from tasks.runtime import job_store, local_registry

logger = logging.getLogger(__name__)


T = TypeVar("T")

# Redis unreachable: nothing can be recorded, so the task is retried once it is back.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# How long a finished export waits for Redis to store its result, rather than run again.
REDIS_PATIENCE_SECONDS = 300.0


class DestinationTask(Task):
    """Acknowledged only once the result is stored, so a crash hands the task to another worker."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the policy below decides, per destination
    destination = ""  # the destination's name, set by declare_destination_task
    autoretry_for = REDIS_DOWN
    retry_backoff = 1
    retry_backoff_max = 30
    # Sending the retry waits for Redis too, instead of failing the task at once.
    retry_kwargs: ClassVar[dict[str, Any]] = {
        "retry_policy": {"max_retries": None, "interval_start": 1, "interval_step": 1,
                         "interval_max": 5},
    }  # fmt: skip


def declare_destination_task(name: str) -> None:
    """Declare ``export.<name>``; idempotent per process."""
    shared_task(name=task_name(name), bind=True, base=DestinationTask, destination=name)(
        run_destination
    )


def run_destination(
    self: DestinationTask, job_id: str, context: dict[str, Any], strategy: str = "all"
) -> dict[str, Any]:
    name = self.destination
    try:
        return _run_once(self, name, job_id, context, strategy)
    except (Retry, Reject, Ignore, *REDIS_DOWN):
        raise
    except Exception as error:
        logger.exception("export.%s of job %s failed outside the export", name, job_id)
        summary = str(error).splitlines()[0] if str(error) else ""
        result = result_to_json(
            failure(name, f"{name} failed outside its export: {type(error).__name__}: {summary}"),
            name,
        )
        if not isinstance(error, JobNotFoundError):
            try:
                job_store(self.app).record_result(job_id, name, result)
            except Exception:  # Redis refuses writes too: the result still goes to the chord
                logger.exception("could not record export.%s's failure for job %s", name, job_id)
        return result


def _run_once(
    self: DestinationTask, name: str, job_id: str, context: dict[str, Any], strategy: str
) -> dict[str, Any]:
    store = job_store(self.app)
    seconds = float(self.app.conf.get("nx_export_lease_seconds") or 60)
    lease = Lease(store.client, lease_key(job_id, name), seconds)
    with store.client.pipeline(transaction=False) as pipe:
        lease.request(pipe)
        pipe.hgetall(job_key(job_id))
        answer, raw = pipe.execute()
    if not lease.granted(answer):
        # Another copy is exporting (a slow task handed out again, an earlier run):
        # come back when it should be done; this costs no attempt.
        visibility = float(self.app.conf.broker_transport_options.get("visibility_timeout", 3600))
        raise self.retry(countdown=max(0.5, min(seconds / 2, visibility / 4)), max_retries=None)
    try:
        stored = store.record_from(job_id, raw)
        if stored is None:  # expired, or never written: a failure result, no job to tell
            raise JobNotFoundError(f"no job {job_id} (unknown, or older than the retention period)")
        entry = stored.destinations.get(name) or DestinationEntry()
        if entry.result and (
            entry.succeeded or (entry.state.has_outcome and entry.task_id == self.request.id)
        ):
            # This task ran to its result already (delivered again after Redis or its
            # worker went away), or an earlier run succeeded: the same result again.
            if entry.succeeded:
                _stop_chain_after_success(self, strategy)
            return dict(entry.result)
        attempt = store.start_attempt(job_id, name, self.request.id, entry)
        result = _export(self, name, job_id, context, strategy, attempt, stored)
        record = _patiently(
            lambda: store.record_result(job_id, name, result, entry, also=lease.release)
        )
        lease.released_by_pipeline()
        if record is not None and _settled(record, strategy):
            # Every destination has its outcome: if the chord never runs the finish
            # (Redis went away while it counted), the sweep sends it.
            _patiently(lambda: store.mark_settled(job_id))
    finally:
        lease.release()
    if result["success"]:
        _stop_chain_after_success(self, strategy)
    return result


def _settled(record: JobRecord, strategy: str) -> bool:
    outcomes = record.outcomes()
    if strategy == "first_success" and any(outcomes.values()):
        return True
    return len(outcomes) == len(record.job.destinations)


def _patiently(action: Callable[[], T]) -> T:
    """Run ``action``, waiting out a Redis restart: the export it records must not run again."""
    deadline = time.monotonic() + REDIS_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return action()
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            logger.warning("Redis unreachable; storing the result again in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _export(
    self: Task,
    name: str,
    job_id: str,
    message: dict[str, Any],
    strategy: str,
    attempt: int,
    stored: JobRecord,
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
        other: result_from_json(entry.result)
        for other, entry in stored.destinations.items()
        if other != name and entry.result
    }
    context.metadata = {**context.metadata, "export_job_id": job_id, "export_attempt": attempt}
    try:
        outcome = destination.export(context)
    except TransientExportError as error:
        _retry_or_give_up(self, name, job_id, error, attempt)
        return result_to_json(failure(name, f"gave up after {attempt} attempts: {error}"), name)
    except Exception as error:  # the contract says export never raises; a plugin broke it
        logger.exception(
            "destination %s raised while exporting %s", name, describe_context(message)
        )
        return result_to_json(failure(name, f"{name} raised {type(error).__name__}: {error}"), name)
    return result_to_json(outcome, name)


def _retry_or_give_up(
    self: Task, name: str, job_id: str, error: TransientExportError, attempt: int
) -> None:
    """Raise Celery's Retry while attempts remain; return when they are used up."""
    policy: RetryPolicy = self.app.conf.nx_export_retry[name]
    if attempt >= policy.max_attempts:
        return
    countdown = retry_delay(
        self.request.retries, policy.backoff, policy.backoff_max, error.retry_after
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
