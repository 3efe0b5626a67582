"""What starts when a destination of a job finishes: its dependents, or the next one to try.

Each is added to the job's chord with Celery's ``add_to_chord`` by the task that
finished, before that task is counted, so the chord never completes while
something still has to start (see ``canvas``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Task

from destinations.plan import ExportPlan
from tasks.canvas import destination_step
from tasks.runtime import job_store
from tasks.store.decode import text
from tasks.store.keys import started_key
from tasks.store.model import JobRecord


@dataclass(frozen=True)
class JobRun:
    """One run of a job as its destination tasks see it: the plan travels in every message."""

    job_id: str
    message: dict[str, Any]
    plan: ExportPlan
    number: int


def start_followers(task: Task, name: str, job_run: JobRun, succeeded: bool) -> None:
    """Start what waited for ``name``: under ``first_success`` the next one after a failure."""
    if job_run.plan.strategy == "first_success":
        following = None if succeeded else job_run.plan.after(name)
        if following is not None:
            _add_once(task, following, job_run)
        return
    for dependent in job_run.plan.dependents_of(name):
        start_if_ready(task, dependent, job_run)


def start_if_ready(task: Task, name: str, job_run: JobRun) -> None:
    """Start ``name`` once each destination it waits for has an outcome and it is prepared.

    Every task that could be the last to finish checks after writing its own
    outcome, so at least one of them sees all done; ``_add_once`` keeps it to one.
    """
    store = job_store(task.app)
    record = store.require(job_run.job_id)
    if any(not _has_outcome(record, dep) for dep in job_run.plan.waits_for(name)):
        return
    if name in job_run.plan.prepared and store.prepared(job_run.job_id, name) is None:
        return
    _add_once(task, name, job_run)


def _has_outcome(record: JobRecord, name: str) -> bool:
    entry = record.destinations.get(name)
    return entry is not None and entry.state.has_outcome


def _add_once(task: Task, name: str, job_run: JobRun) -> None:
    """Add ``name`` to the chord once, even if this task's worker dies while adding it.

    The key names the task that claimed the add, then says it is done. A task
    delivered again after its worker died finds its own id there: it may have
    died before the chord counted ``name`` or before ``name`` was sent, and
    nothing else would ever add it, so it adds it again. Sending it twice is
    harmless (one part per task id, and a stored outcome is never exported
    again); if the chord had counted it already, the chord waits for one part
    too many and the sweep sends the job's finish once every outcome is in.
    """
    client = task.app.backend.client
    key = started_key(job_run.job_id, job_run.number, name)
    retention = job_store(task.app).retention
    owner = task.request.id or "1"
    if not client.set(key, owner, nx=True, ex=retention):
        claimed_by = client.get(key)
        if claimed_by is None or text(claimed_by) != owner:
            return  # another task started it, or an earlier delivery of this one finished adding
    step = destination_step(
        task.app, name, job_run.job_id, job_run.message, job_run.plan, job_run.number
    )
    task.add_to_chord(step)
    client.set(key, f"{owner}:added", ex=retention)

