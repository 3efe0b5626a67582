"""The job API: enqueue an export, read a job back, wait for it.

A job is one record sent to its destinations under one strategy. Its record in
Redis (see ``job_store``) outlives the processes that made it for the
retention period.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery, current_app
from celery.exceptions import TimeoutError as CeleryTimeoutError

from destinations.contract import ExportContext
from destinations.files.record import check_record
from destinations.plan import ExportPlan, ExportRequestError, is_satisfied, plan_export
from destinations.registry import DestinationInfo, Registry
from tasks import catalog
from tasks.canvas import build_canvas, finish_task_id
from tasks.messages import context_from_message, context_to_message, describe_context
from tasks.runtime import job_store, local_registry
from tasks.store.job_store import RunConflictError
from tasks.store.model import DestinationEntry, DestinationState, JobRecord, JobState, StoredJob
from tasks.store.model import JobNotFoundError as JobNotFoundError  # raised by get_job

logger = logging.getLogger(__name__)

# How long one sender may take to send a run's canvas before the sweep sends it instead.
CANVAS_CLAIM_SECONDS = 60


@dataclass
class DestinationStatus:
    """One destination of a job: where it stands and what it produced."""

    name: str
    state: DestinationState
    attempts: int = 0
    record_id: str | None = None
    record_url: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_entry(cls, name: str, entry: DestinationEntry) -> DestinationStatus:
        result = entry.result or {}
        return cls(
            name=name,
            state=entry.state,
            attempts=entry.attempts,
            record_id=result.get("record_id"),
            record_url=result.get("record_url"),
            error=entry.error,
            started_at=entry.started_at,
            finished_at=entry.finished_at,
            history=list(entry.history),
        )

    @property
    def succeeded(self) -> bool:
        return self.state == DestinationState.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        shown = {key: value for key, value in vars(self).items() if key != "name"}
        return {**shown, "state": self.state.value}


@dataclass
class ExportJob:
    """A job as stored: ``state`` is queued, running or finished."""

    id: str
    strategy: str
    state: JobState
    satisfied: bool
    destinations: dict[str, DestinationStatus]
    created_at: str | None
    finished_at: str | None
    session_identifier: str | None
    instrument_pid: str | None
    record: str | None
    finish_task_id: str | None = None
    runs: int = 1
    app: Celery | None = field(default=None, repr=False, compare=False)
    # Set by enqueue_export: True when its job_key named a job enqueued earlier.
    existing: bool = field(default=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state == JobState.FINISHED

    def refresh(self) -> ExportJob:
        return get_job(self.id, app=self.app)

    def wait(self, timeout: float | None = None) -> ExportJob:
        """Block until the job finished; TimeoutError after ``timeout`` seconds.

        Waits on the result of the job's finish task, which the Redis backend
        pushes to us, instead of polling the job record; that result is the
        finished job, so a successful job costs no read of it.
        """
        app = self.app or current_app
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self
        while not job.finished:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            finish = app.AsyncResult(job.finish_task_id) if job.finish_task_id else None
            if finish is not None and (job is self or not finish.ready()):
                with contextlib.suppress(CeleryTimeoutError):
                    summary = finish.get(timeout=min(remaining, 1.0), propagate=False,
                                         interval=0.01)  # fmt: skip
                    finished = _finished_summary(summary, job)
                    if finished is not None:
                        return finished
            else:
                # No finish task yet, or the chord's failure marker stored under its id
                # just before the finish itself runs: poll the job record briefly.
                time.sleep(min(remaining, 0.02))
            job = job.refresh()
        return job

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy": self.strategy,
            "state": self.state.value,
            "satisfied": self.satisfied,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "session_identifier": self.session_identifier,
            "instrument_pid": self.instrument_pid,
            "record": self.record,
            "runs": self.runs,
            "destinations": {name: status.to_dict() for name, status in self.destinations.items()},
        }


def enqueue_export(
    context: ExportContext | Mapping[str, Any],
    strategy: str | None = None,
    destinations: Sequence[str] | None = None,
    app: Celery | None = None,
    job_key: str | None = None,
) -> ExportJob:
    """Validate, plan and enqueue one record's export; return the queued job.

    ``job_key`` makes enqueuing idempotent: while a job enqueued with the same
    key is kept (the retention period), that job is returned (``existing`` is
    True) and nothing new runs. Raises ``InvalidContextError``, ``RecordError``
    or ``ExportRequestError`` (all ``ValueError``) before anything is enqueued.
    """
    app = app or current_app
    job_id, written = create_job_from_context(
        app, context, strategy, destinations, local_registry(), job_key=job_key
    )
    if written is None:
        job = get_job(job_id, app=app)
        job.existing = True
        return job
    return job_from_record(written, app)


def create_job_from_context(
    app: Celery,
    context: ExportContext | Mapping[str, Any],
    strategy: str | None,
    destinations: Sequence[str] | None,
    registry: Registry,
    job_id: str | None = None,
    job_key: str | None = None,
) -> tuple[str, JobRecord | None]:
    """Shared by ``enqueue_export`` and the ``export.record`` task.

    Returns the job's id and its record as written; None when it existed already.
    """
    checked = context_from_message(context)
    check_record(
        Path(checked.xml_file_path),
        max_bytes=int(app.conf.nx_export_max_record_bytes),
        records_root=_optional_path(app.conf.get("nx_records_path")),
        schema=_optional_path(app.conf.get("nx_export_record_schema")),
    )
    offered, disabled = catalog.available(app, registry, destinations or ())
    plan = plan_export(
        strategy or app.conf.nx_export_strategy, offered, destinations, known=sorted(disabled)
    )
    warn_unserved(app, plan.destinations)
    message = context_to_message(checked)
    return create_job_and_send_canvas(app, plan, message, job_id=job_id, job_key=job_key)


def warn_unserved(app: Celery, names: Sequence[str]) -> None:
    """Accepted anyway (workers may be restarting), but the operator should know."""
    for name in catalog.unserved(app, names):
        logger.warning(
            "no live worker serves %s: its tasks wait in queue export.%s until one starts "
            "(the job's deadline ends it otherwise)",
            name,
            name,
        )


def create_job_and_send_canvas(
    app: Celery,
    plan: ExportPlan,
    message: dict[str, Any],
    job_id: str | None = None,
    job_key: str | None = None,
) -> tuple[str, JobRecord | None]:
    """Write the job record, then send its canvas; return (job id, record as written).

    With ``job_id`` of a job written earlier (the same ``export.record`` message
    again), its canvas is sent if it was not. A ``job_key`` naming a kept job
    returns that job and sends nothing: then the record is None.
    """
    job_id = job_id or str(uuid.uuid4())
    finish_id = finish_task_id(job_id, 1)
    stored, written = job_store(app).create(
        StoredJob(
            id=job_id,
            strategy=plan.strategy,
            destinations=list(plan.destinations),
            context=message,
            summary=describe_context(message),
            finish_task_id=finish_id,
        ),
        job_key,
    )
    if stored == job_id:
        send_canvas(app, job_id, 1, plan, message, finish_id, check_sent=written is None)
    return stored, written


def send_canvas(
    app: Celery,
    job_id: str,
    run: int,
    plan: ExportPlan,
    message: dict[str, Any],
    finish_id: str,
    check_sent: bool = True,
) -> bool:
    """Send run ``run``'s canvas; True if sent.

    ``check_sent`` is for a sender that may not be the first (a redelivered
    ``export.record``, the sweep): it sends only if the canvas was not sent and
    no other sender claimed it.
    """
    store = job_store(app)
    if check_sent and (
        store.canvas_sent(job_id) >= run
        or not store.claim(f"canvas:{job_id}:{run}", CANVAS_CLAIM_SECONDS)
    ):
        return False
    build_canvas(app, plan, job_id, message, finish_id, run).apply_async()
    store.mark_canvas_sent(job_id, run)
    return True


def replan(app: Celery, record: JobRecord, names: Sequence[str]) -> ExportPlan:
    """The plan of a stored job over ``names``, from what the workers publish.

    A destination no worker publishes any more still gets its task, alone in its tier.
    """
    offered, _ = catalog.available(app, local_registry(), names)
    infos = {name: offered.get(name) or DestinationInfo(name, 0, ()) for name in names}
    return plan_export(record.job.strategy, infos, names)


def retry_failed(
    job_id: str, destinations: Sequence[str] | None = None, app: Celery | None = None,
    expected_runs: int | None = None,
) -> ExportJob:  # fmt: skip
    """Run again the destinations of a finished job that failed or never ran.

    Earlier runs' successes stay (a re-run notebook still links to the first
    run's CDCS record); each destination's history keeps every attempt. Of two
    retries at once one is accepted, the other raises ``ExportRequestError``, as
    does a job whose runs are no longer ``expected_runs`` (what its caller saw).
    """
    app = app or current_app
    job = get_job(job_id, app=app)
    if not job.finished or expected_runs not in (None, job.runs):
        if job.runs > 1:
            raise ExportRequestError(f"job {job_id} is already being retried (run {job.runs})")
        raise ExportRequestError(f"job {job_id} is still {job.state}; retry it once it finished")
    if destinations:
        unknown = sorted(set(destinations) - set(job.destinations))
        if unknown:
            raise ExportRequestError(f"job {job_id} has no destination {', '.join(unknown)}")
        names = list(dict.fromkeys(destinations))
    elif job.strategy == "first_success" and job.satisfied:
        names = []
    else:
        names = [name for name, status in job.destinations.items() if not status.succeeded]
    if not names:
        raise ExportRequestError(f"nothing to retry: job {job_id} has no failed destination")
    offered, disabled = catalog.available(app, local_registry(), names)
    plan = plan_export(job.strategy, offered, names, known=sorted(disabled))
    warn_unserved(app, plan.destinations)
    store = job_store(app)
    message = store.require(job_id).job.context
    run = job.runs + 1
    finish_id = finish_task_id(job_id, run)
    try:
        store.begin_run(job_id, names, finish_id, expected_runs=job.runs)
    except RunConflictError:
        raise ExportRequestError(f"job {job_id} is already being retried") from None
    send_canvas(app, job_id, run, plan, message, finish_id, check_sent=False)
    return get_job(job_id, app=app)


def list_jobs(
    since: datetime | None = None, failed_only: bool = False, app: Celery | None = None
) -> list[ExportJob]:
    """Jobs still within the retention period, oldest first.

    ``failed_only`` keeps the finished jobs whose strategy was not satisfied.
    """
    app = app or current_app
    store = job_store(app)
    jobs = []
    for job_id in store.job_ids(since):
        record = store.load(job_id)
        if record is None:
            continue  # expired between the index read and now
        job = job_from_record(record, app)
        if not failed_only or (job.finished and not job.satisfied):
            jobs.append(job)
    return jobs


def get_job(job_id: str, app: Celery | None = None) -> ExportJob:
    """The job as stored now; ``JobNotFoundError`` when unknown or expired."""
    app = app or current_app
    return job_from_record(job_store(app).require(job_id), app)


def _finished_summary(summary: Any, job: ExportJob) -> ExportJob | None:
    """The job as the finish of its run returned it, if that is this run, finished."""
    if not isinstance(summary, dict) or summary.get("id") != job.id:
        return None
    if summary.get("state") != JobState.FINISHED.value or summary.get("runs") != job.runs:
        return None
    try:
        statuses = {
            name: DestinationStatus(
                name=name, **{**status, "state": DestinationState(status["state"])}
            )
            for name, status in summary["destinations"].items()
        }
        shown = {key: value for key, value in summary.items() if key != "destinations"}
        return ExportJob(
            **{**shown, "state": JobState.FINISHED},
            destinations=statuses,
            finish_task_id=job.finish_task_id,
            app=job.app,
        )
    except (KeyError, TypeError, ValueError):  # another version's summary: read the job instead
        return None


def job_from_record(record: JobRecord, app: Celery | None = None) -> ExportJob:
    job = record.job
    statuses = {
        name: DestinationStatus.from_entry(name, entry) for name, entry in record.planned().items()
    }
    return ExportJob(
        id=job.id,
        strategy=job.strategy,
        state=record.state,
        satisfied=is_satisfied(job.strategy, list(statuses), record.outcomes()),
        destinations=statuses,
        created_at=job.created_at,
        finished_at=job.finished_at,
        session_identifier=job.context.get("session_identifier"),
        instrument_pid=job.context.get("instrument_pid"),
        record=job.context.get("xml_file_path"),
        finish_task_id=job.finish_task_id,
        runs=job.runs,
        app=app,
    )


def _optional_path(value: Any) -> Path | None:
    return Path(value) if value else None
