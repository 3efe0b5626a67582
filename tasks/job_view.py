"""A job as callers see it: ``ExportJob``, read back from the job store, waited on.

The job API (``tasks.jobs``) returns these; the command line, the dashboard and
``worker.compat`` show them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery, current_app
from celery.exceptions import TimeoutError as CeleryTimeoutError

from destinations.plan import is_satisfied
from tasks.runtime import job_store
from tasks.store.model import DestinationEntry, DestinationState, JobRecord, JobState
from tasks.store.model import JobNotFoundError as JobNotFoundError  # raised by get_job


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
    next_attempt_at: str | None = None
    failing_since: str | None = None

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
            next_attempt_at=entry.next_attempt_at,
            failing_since=entry.failing_since,
        )

    @property
    def retrying(self) -> str | None:
        """"retrying, next attempt at …, failing since …" while it waits for its next attempt."""
        if self.state != DestinationState.RETRY or not self.next_attempt_at:
            return None
        since = f", failing since {self.failing_since[:19]}Z" if self.failing_since else ""
        return f"retrying, next attempt at {self.next_attempt_at[:19]}Z{since}"

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
    # How often the finished run was told again (an outcome that arrived after its deadline).
    retold: int = 0
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
            "retold": self.retold,
            "destinations": {name: status.to_dict() for name, status in self.destinations.items()},
        }


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
        retold=job.retold,
        app=app,
    )
