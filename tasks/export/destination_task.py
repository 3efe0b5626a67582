"""One Celery task per destination, named ``export.<destination name>``.

A destination that fails ends its task in FAILURE, with its error as the
exception, so Flower shows it as failed. Before that, successful or not, the
task starts whatever waited for it in the job's chord (see ``canvas``), so a
failure never stops a sibling, a dependent or the job's ``export.finish``. So
is anything raised around the export (a bad stored result, a bug): the task
records it as the destination's failure. Only an unreachable Redis makes the
task come back later instead, since nothing could be recorded. The same task
runs a destination's optional ``prepare`` step (``phase="prepare"``).

One copy of a destination's export runs at a time (``tasks.store.lease``); a copy of a
task whose outcome is stored ends with it again without exporting, so the chord
counts it once (Celery keeps one part per task id) and nothing runs twice.

Every write of a copy to its destination's entry and call log is fenced by its
lease. A copy that finds it lost the lease (paused or cut off past its lifetime)
makes no further call, stores nothing and logs a warning. If another copy took over
(the entry has an outcome, or more attempts than this copy knew) its task ends in
Celery's ``Ignore``: acknowledged, no state, no chord part, since the copies share
the task id and the chord must count the one that stores the result. If none did
(the lease merely expired), it comes back later, costing no attempt.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any, ClassVar, NoReturn

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, Retry

from destinations.errors import DeferredExportError, LeaseLostError, TransientExportError
from destinations.names import task_name
from destinations.plan import ExportPlan
from destinations.toolkit.call_deadline import calls_guarded_by
from tasks.canvas import EXPORT, PREPARE, send_finish
from tasks.export.followers import JobRun, start_followers, start_if_ready
from tasks.export.ledger_check import LedgerCheck
from tasks.export.outage import export_through_breaker
from tasks.export.patience import REDIS_DOWN, patiently
from tasks.export.retry_policy import retry_or_give_up, unsent_retry_requeued
from tasks.export.slot_waits import slot_waits, wait_for_slots
from tasks.messages import (
    InvalidContextError,
    context_from_message,
    describe_context,
    failure,
    redact_message,
    result_from_json,
    result_to_json,
)
from tasks.runtime import job_store, local_registry
from tasks.store.call_log import RedisCallLog
from tasks.store.job_store import STORED_LATE
from tasks.store.keys import lease_key
from tasks.store.lease import Lease
from tasks.store.model import DestinationEntry, JobNotFoundError, JobRecord

logger = logging.getLogger(__name__)


class DestinationFailedError(Exception):
    """The destination did not take the record; the message says why (never a secret)."""


# Flower shows a failed task's exception on one line in its task list: the start of
# the error, whole in the job (``nx-export status``).
FAILURE_SUMMARY_LENGTH = 120


def failure_summary(name: str, error: str | None) -> str:
    line = " ".join((error or f"{name} failed").split())
    if len(line) <= FAILURE_SUMMARY_LENGTH:
        return line
    return line[: FAILURE_SUMMARY_LENGTH - 1].rstrip() + "…"




class DestinationTask(Task):
    """Acknowledged only once the result is stored, so a crash hands the task to another worker."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the policy below decides, per destination
    destination = ""  # the destination's name, set by declare_destination_task

    def retry(self, *args: Any, **options: Any) -> Any:
        """Celery's retry, keeping the one-line summary Flower shows, not the context."""
        options.setdefault("argsrepr", self.request.argsrepr)
        options.setdefault("kwargsrepr", self.request.kwargsrepr)
        try:
            return super().retry(*args, **options)
        except Reject as refused:  # unsent (a failover): Celery would drop the task
            raise unsent_retry_requeued(refused) from None

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
    self: DestinationTask,
    job_id: str,
    context: dict[str, Any],
    strategy: str = "all",
    plan: dict[str, Any] | None = None,
    run: int = 1,
    phase: str = EXPORT,
) -> dict[str, Any]:
    name = self.destination
    export_plan = ExportPlan.from_message(plan) if plan else ExportPlan(strategy, ((name,),))
    this_run = JobRun(job_id, context, export_plan, run)
    if phase == PREPARE:
        return _prepare(self, name, this_run)
    try:
        result, late = _run_once(self, name, job_id, context, export_plan, run)
    except RunEndedError as ended:
        # Its run ended (the deadline) before this task started: it stays ended. Neither
        # an export nor its dependents start; ``nx-export retry`` runs it again.
        logger.warning(
            "export.%s of job %s: run %d ended before this task started; not exported",
            name, job_id, run,
        )  # fmt: skip
        if not ended.result.get("success"):
            raise DestinationFailedError(
                failure_summary(name, ended.result.get("error_message"))
            ) from None
        return ended.result
    except (Retry, Reject, Ignore, *REDIS_DOWN):
        raise
    except Exception as error:
        result, late = _failed_outside_export(self, name, job_id, error), False
    if late:  # its run ended while it exported: nothing waits for it, the run is told again
        _tell_again(self, name, job_id)
    else:  # an expired job has nothing waiting for this destination any more
        with contextlib.suppress(JobNotFoundError):
            patiently(lambda: start_followers(self, name, this_run, bool(result["success"])))
    if not result["success"]:
        raise DestinationFailedError(failure_summary(name, result.get("error_message")))
    return result


def _failed_outside_export(
    self: DestinationTask, name: str, job_id: str, error: Exception
) -> dict[str, Any]:
    """Anything raised around the export is the destination's failure, recorded if possible."""
    logger.exception("export.%s of job %s failed outside the export", name, job_id)
    # Blanked before it is cut to its first line, like every stored message.
    text = redact_message(str(error))
    summary = text.splitlines()[0] if text else ""
    result = result_to_json(
        failure(name, f"{name} failed outside its export: {type(error).__name__}: {summary}"),
        name,
    )
    if not isinstance(error, JobNotFoundError):
        try:
            job_store(self.app).record_result(job_id, name, result)
        except Exception:  # Redis refuses writes too: the outcome still goes to the chord
            logger.exception("could not record export.%s's failure for job %s", name, job_id)
    return result


def _prepare(self: DestinationTask, name: str, job_run: JobRun) -> dict[str, Any]:
    """Run ``prepare`` beside the dependencies; whatever happens, the export may then start."""
    job_id, message = job_run.job_id, job_run.message
    store = job_store(self.app)
    prepared: dict[str, Any] = {}
    destination = local_registry().get(name)
    step = getattr(destination, "prepare", None)
    if callable(step):
        try:
            context = context_from_message(message)
            # The ledger holds the session's very record: export calls nothing, so prepare neither.
            held = LedgerCheck(store.client, name, job_id, message).already_exported(context)
            context.metadata = {**context.metadata, "export_job_id": job_id}
            # What prepare creates is logged like export's calls, so export reuses it.
            context.call_log = RedisCallLog(store.client, job_id, name, store.retention)
            prepared = {} if held else dict(step(context) or {})
        except Exception as error:  # export does the work itself; prepare is an optimisation
            logger.warning(
                "destination %s: prepare failed for %s: %s",
                name, describe_context(message), redact_message(str(error)),
            )  # fmt: skip
            prepared = {}
    store.record_prepared(job_id, name, prepared)
    start_if_ready(self, name, job_run)
    return {"prepared": sorted(prepared)}


class RunEndedError(Exception):
    """The task's run was ended by the sweep before the task started; ``result`` is its outcome."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("the run ended before this task started")
        self.result = result


def _run_once(
    self: DestinationTask,
    name: str,
    job_id: str,
    context: dict[str, Any],
    export_plan: ExportPlan,
    run: int = 1,
) -> tuple[dict[str, Any], bool]:
    """The destination's result, and whether it was stored after its run ended."""
    store = job_store(self.app)
    seconds = float(self.app.conf.get("nx_export_lease_seconds") or 60)
    lease = Lease(store.client, lease_key(job_id, name), seconds)
    taken, stored, first = store.take_lease_and_start(job_id, name, self.request.id, lease)
    if not taken:
        # Another copy is exporting (a slow task handed out again, an earlier run):
        # come back when it should be done; this costs no attempt.
        raise self.retry(countdown=_lease_wait(self), max_retries=None)
    attempt = 0
    try:
        if stored is None:  # expired, or never written: a failure result, no job to tell
            raise JobNotFoundError(f"no job {job_id} (unknown, or older than the retention period)")
        entry = stored.destinations.get(name) or DestinationEntry()
        attempt = entry.attempts
        if first:
            pass  # attempt 1, started with the lease
        elif entry.result and (
            entry.succeeded or (entry.state.has_outcome and entry.task_id == self.request.id)
        ):
            # This task ran to its result already (delivered again after Redis or its
            # worker went away), or an earlier run succeeded: the same result again.
            return dict(entry.result), False
        elif entry.result and stored.job.finished_at is not None and stored.job.runs == run:
            raise RunEndedError(dict(entry.result))
        else:
            attempt = store.start_attempt(job_id, name, self.request.id, entry, lease)
        check = LedgerCheck(store.client, name, job_id, context)
        result = _export(self, name, job_id, context, export_plan, attempt, stored, lease, check)
        finished = replace(entry)
        finished.finish(result)  # built once: a write sent again after a Redis restart is equal
        also = check.also(result, lease.release)  # the ledger's entry, in the same round trip
        stored_as = patiently(lambda: store.record_result(job_id, name, result, finished,
                                                          also=also, lease=lease))  # fmt: skip
        lease.released_by_pipeline()
    except LeaseLostError as error:
        _fenced_out(self, name, job_id, attempt, error)
    finally:
        lease.release()
    return result, stored_as == STORED_LATE


def _tell_again(self: DestinationTask, name: str, job_id: str) -> None:
    """An outcome the deadline did not wait for is what happened at the service: tell it."""
    record = patiently(lambda: job_store(self.app).retell(job_id))
    logger.warning(
        "export.%s of job %s ended after its run did; the run is told again (satisfied: %s)",
        name, job_id, None if record is None else record.job.satisfied,
    )  # fmt: skip
    if record is not None:  # its finish announces it (the sweep does, should this send fail)
        job = record.job
        send_finish(self.app, job_id, job.finish_task_id, job.summary or "", "told again")


def _fenced_out(
    self: DestinationTask, name: str, job_id: str, attempt: int, error: LeaseLostError
) -> NoReturn:
    """End a copy that lost its lease: nothing stored; Ignore, or come back if nobody took over."""
    record = patiently(lambda: job_store(self.app).load(job_id))
    entry = record.destinations.get(name) if record else None
    # A job gone has nothing to come back for.
    taken_over = entry is None or entry.state.has_outcome or entry.attempts > attempt
    logger.warning(
        "export.%s of job %s lost its lease (%s); its result is not stored, %s",
        name, job_id, redact_message(str(error)),
        "the copy that took over ends the task" if taken_over else "coming back later",
    )  # fmt: skip
    if taken_over:
        raise Ignore()
    raise self.retry(countdown=_lease_wait(self), max_retries=None)


def _lease_wait(self: DestinationTask) -> float:
    """When to come back for a lease another copy holds: when it should be done."""
    seconds = float(self.app.conf.get("nx_export_lease_seconds") or 60)
    visibility = float(self.app.conf.broker_transport_options.get("visibility_timeout", 3600))
    return max(0.5, min(seconds / 2, visibility / 4))


def _export(
    self: DestinationTask,
    name: str,
    job_id: str,
    message: dict[str, Any],
    export_plan: ExportPlan,
    attempt: int,
    stored: JobRecord,
    lease: Lease,
    check: LedgerCheck,
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
    already = check.already_exported(context)  # the ledger has this session's very record
    if already is not None:
        return already
    store = job_store(self.app)
    context.previous_results = _previous_results(name, export_plan, stored)
    # Only a destination planned with a prepare step has one to read: no round trip otherwise.
    context.prepared = (store.prepared(job_id, name) or {}) if name in export_plan.prepared else {}
    context.metadata = {**context.metadata, "export_job_id": job_id, "export_attempt": attempt}
    # Fenced: the log records nothing, and no call goes out, once this copy lost its lease.
    context.call_log = RedisCallLog(store.client, job_id, name, store.retention, lease)
    context.lease_check = lease.still_held
    try:
        with calls_guarded_by(lease.still_held):
            outcome = export_through_breaker(self, name, lambda: destination.export(context))
    except LeaseLostError:
        raise
    except DeferredExportError as error:
        # Waiting (call slots, an earlier copy's call) costs no attempt.
        wait_for_slots(self, name, job_id, error, lease)
    except TransientExportError as error:
        if not lease.still_held():
            raise LeaseLostError(str(error)) from None
        waited, waited_in_run = slot_waits(self.app, job_id, name, self.request.id)
        attempt -= waited
        given_up = retry_or_give_up(self, name, job_id, error, attempt, waited_in_run, lease)
        return result_to_json(failure(name, given_up), name)
    except Exception as error:  # the contract allows only TransientExportError; a plugin broke it
        logger.exception(
            "destination %s raised while exporting %s", name, describe_context(message)
        )
        return result_to_json(failure(name, f"{name} raised {type(error).__name__}: {error}"), name)
    return check.exported(result_to_json(outcome, name))


def _previous_results(name: str, export_plan: ExportPlan, stored: JobRecord) -> dict[str, Any]:
    """The results of ``name``'s dependencies, and the successes of the job's earlier runs.

    Never a sibling's result that merely happened to be stored first: what a
    destination sees does not depend on timing.
    """
    this_run = set(export_plan.destinations)
    seen = {}
    for other, entry in stored.destinations.items():
        if other == name or not entry.result:
            continue
        if other in export_plan.waits_for(name) or (other not in this_run and entry.succeeded):
            seen[other] = result_from_json(entry.result)
    return seen


__all__ = ["DestinationFailedError", "DestinationTask", "declare_destination_task"]
