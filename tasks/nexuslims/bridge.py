"""The NexusLIMS outcome bridge: each finished run of a job, written into NexusLIMS's database.

``export.finish`` offers every finished run (the first, and each ``nx-export
retry``) to the bridge (``tasks.nexuslims.delivery``: kept in Redis until
written, sent again if its message is lost). Only workers that can reach
NexusLIMS's database (``NX_DB_PATH`` set, NexusLIMS importable) are bridge
workers: they consume the queue ``nx-export.nexuslims`` and say on every
heartbeat that a bridge exists.

The task ``export.nexuslims`` takes a job id and a run number, nothing else:
anyone who can publish a task can send one, so the session, the strategy and
the results are read from the job store, and a message naming an unknown job,
an unfinished run or a run that is not the job's latest is refused (logged,
nothing written, never retried). It writes the ``upload_log`` rows not yet
written and sets the session's ``record_status``: ``COMPLETED`` when the
results satisfy the job's strategy (as ``was_successfully_exported`` decides),
``BUILT_NOT_EXPORTED`` otherwise.

A run is written once per telling, however often it is delivered: a Redis key
per (job, run) holds the telling committed (a run is told again when an
outcome arrives after its deadline ended it, ``tasks.store.run_ending``), set
after the database commit, and no row is written twice if the worker died
between the two. A run older than the newest one written for its
job is never written after it (a per-job marker, compared under the session's
lock before the write and set with the ``done`` key after it): a delayed
delivery of run 1 cannot undo what run 2 wrote.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task, shared_task

from destinations.contract import ExportResult
from destinations.plan import is_satisfied
from tasks.messages import result_from_json
from tasks.nexuslims.database import (
    NexusLIMSDatabaseError,
    bridge_available,
    mark_session,
    session_lock,
    write_results,
)
from tasks.nexuslims.delivery import (
    BRIDGE_QUEUE,
    BRIDGE_SEEN,
    BRIDGE_TASK,
    WAITING,
    forget,
    newest_written,
    record_written,
    send_outcome,
    written_telling,
)
from tasks.runtime import job_store
from tasks.store.model import JobRecord, StoredJob

__all__ = ["BRIDGE_QUEUE", "BRIDGE_SEEN", "BRIDGE_TASK", "WAITING", "job_results", "record_outcome"]

logger = logging.getLogger(__name__)


class BridgeUnavailableError(Exception):
    """This worker took a bridge message but cannot reach NexusLIMS's database."""


def job_results(app: Celery, job_id: str) -> tuple[StoredJob, dict[str, ExportResult]]:
    """The job as stored and the result of each planned destination that has one, in plan order."""
    job, stored = _stored_results(app, job_id)
    return job, {name: result_from_json(data) for name, data in stored.items()}


def _stored_results(
    app: Celery, job_id: str, record: JobRecord | None = None
) -> tuple[StoredJob, dict[str, dict[str, Any]]]:
    """The one place the bridge and ``worker.compat`` read results from the job store.

    ``record`` is the job as its caller just read it, to save reading it again.
    """
    if record is None:
        record = job_store(app).load(job_id)
    if record is None:
        return StoredJob(id=job_id), {}
    results = {name: entry.result for name, entry in record.planned().items() if entry.result}
    return record.job, results


@shared_task(
    name=BRIDGE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # A locked or briefly missing database is retried; the key below keeps it written once.
    autoretry_for=(NexusLIMSDatabaseError, BridgeUnavailableError),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=20,
)
def record_outcome(self: Task, job_id: Any, run: Any = None) -> dict[str, Any]:
    """Write run ``run`` of job ``job_id``, as the job store has it, into NexusLIMS's database once.

    A message of an earlier version carried the outcome itself: only its job id
    and run are read from it.
    """
    if isinstance(job_id, dict):
        job_id, run = job_id.get("job_id"), job_id.get("run")
    if not isinstance(job_id, str) or not isinstance(run, int) or isinstance(run, bool):
        # Never echo the arguments: they are whatever a publisher chose to send.
        return _refused("export.nexuslims takes a job id and a run number; nothing written")
    client = self.app.backend.client
    store = job_store(self.app)
    record, refusal = _checked(store.load(job_id), job_id, run)
    if record is None:
        return _refused(refusal)
    if written_telling(client, job_id, run) >= record.job.telling:
        forget(client, job_id, run)
        return {"written": 0, "already_written": True}
    if not bridge_available():
        raise BridgeUnavailableError(
            f"worker {self.request.hostname} cannot reach NexusLIMS's database "
            "(NX_DB_PATH unset, or nexusLIMS not importable)"
        )
    session = str(record.job.context["session_identifier"])
    with session_lock(client, session):
        # Again under the lock: another delivery, or a later run, may have written meanwhile.
        newest = newest_written(client, job_id)
        if newest > run:
            return _superseded(client, job_id, run, newest)
        record, refusal = _checked(store.load(job_id), job_id, run)
        if record is None:
            return _refused(refusal)
        telling = record.job.telling
        if written_telling(client, job_id, run) >= telling:
            forget(client, job_id, run)
            return {"written": 0, "already_written": True}
        job, stored = _stored_results(self.app, job_id, record)
        results = [result_from_json(data) for data in stored.values()]
        exported = is_satisfied(
            job.strategy,
            [r.destination_name for r in results],
            {r.destination_name: r.success for r in results},
        )
        written = write_results(session, results)
        marked = mark_session(session, exported)
        newest, again = record_written(client, job_id, run, telling, store.retention)
    if newest > run or again:
        logger.warning(
            "job %s: run %d was written while run %d (telling %d) still wrote (its session "
            "lock expired); writing run %d again",
            job_id, max(newest, run), run, telling, max(newest, run),
        )  # fmt: skip
        send_outcome(self.app, job_id, max(newest, run), session, " written again")
    return {"written": written, "sessions_marked": marked, "exported": exported, "run": run,
            "telling": telling}  # fmt: skip


def _checked(record: JobRecord | None, job_id: str, run: int) -> tuple[JobRecord | None, str]:
    """The job's record if run ``run`` is its finished latest run; else None and why not."""
    named = job_id[:100]  # a publisher's string, named in the log: kept short
    if record is None:
        return None, f"job {named} is unknown (or older than the retention period)"
    job = record.job
    if run != job.runs:
        return None, f"job {named} has no run {run} to write: its latest run is {job.runs}"
    if job.finished_at is None:
        return None, f"run {run} of job {named} has not finished"
    if not job.context.get("session_identifier"):
        return None, f"job {named} names no session"
    return record, ""


def _refused(reason: str) -> dict[str, Any]:
    logger.warning("export.nexuslims refused: %s; nothing written", reason)
    return {"written": 0, "refused": reason}


def _superseded(client: Any, job_id: str, run: int, newest: int) -> dict[str, Any]:
    forget(client, job_id, run)
    logger.info(
        "job %s: run %d not written, run %d was written already (a later run wins)",
        job_id, run, newest,
    )  # fmt: skip
    return {"written": 0, "superseded_by": newest}
