"""The NexusLIMS outcome bridge: each finished run of a job, written into NexusLIMS's database.

``export.finish`` sends every finished run (the first, and each ``nx-export
retry``) to the queue ``nx-export.nexuslims``, with the job's results as they
are at that moment. Only workers that can reach NexusLIMS's database
(``NX_DB_PATH`` set, NexusLIMS importable) consume that queue; without such a
worker the messages wait there. The task writes the ``upload_log`` rows not yet
written and sets the session's ``record_status``: ``COMPLETED`` when the
results satisfy the job's strategy (as ``was_successfully_exported`` decides),
``BUILT_NOT_EXPORTED`` otherwise. A run is written once, however often its
message is delivered: a Redis key per (job, run) set after the database commit,
and no row written twice if the worker died between the two.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task, shared_task
from celery.result import AsyncResult

from destinations.contract import ExportResult
from destinations.names import NEXUSLIMS_TASK
from destinations.plan import is_satisfied
from tasks.job_model import JobRecord, StoredJob
from tasks.job_store import KEY_PREFIX
from tasks.messages import result_from_json
from tasks.nexuslims_db import (
    NexusLIMSDatabaseError,
    bridge_available,
    mark_session,
    session_lock,
    write_results,
)
from tasks.runtime import job_store

BRIDGE_TASK = NEXUSLIMS_TASK
BRIDGE_QUEUE = "nx-export.nexuslims"


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
    results = {
        name: entry.result for name, entry in record.planned().items() if entry.result
    }
    return record.job, results


def send_outcome(app: Celery, job_id: str, record: JobRecord | None = None) -> AsyncResult:
    """Queue this run's outcome for the bridge; called once the run finished."""
    job, results = _stored_results(app, job_id, record)
    outcome = {
        "job_id": job_id,
        "run": job.runs,
        "session_identifier": job.context.get("session_identifier"),
        "strategy": job.strategy,
        # As stored: secret-free JSON, the same as Redis and Flower show.
        "results": list(results.values()),
    }
    return app.send_task(
        BRIDGE_TASK,
        args=(outcome,),
        queue=BRIDGE_QUEUE,
        argsrepr=(
            f"(job={job_id} run={outcome['run']} session={outcome['session_identifier']} "
            f"results={len(results)})"
        ),
    )


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
def record_outcome(self: Task, outcome: dict[str, Any]) -> dict[str, Any]:
    """Write one finished run into NexusLIMS's database, once."""
    client = self.app.backend.client
    done = f"{KEY_PREFIX}:nexuslims:done:{outcome['job_id']}:{outcome['run']}"
    if client.exists(done):
        return {"written": 0, "already_written": True}
    if not bridge_available():
        raise BridgeUnavailableError(
            f"worker {self.request.hostname} cannot reach NexusLIMS's database "
            "(NX_DB_PATH unset, or nexusLIMS not importable)"
        )
    session = outcome["session_identifier"]
    results = [result_from_json(data) for data in outcome["results"]]
    exported = is_satisfied(
        outcome["strategy"],
        [r.destination_name for r in results],
        {r.destination_name: r.success for r in results},
    )
    with session_lock(client, session):
        written = write_results(session, results)
        marked = mark_session(session, exported)
    client.set(done, "1", ex=job_store(self.app).retention)
    return {"written": written, "sessions_marked": marked, "exported": exported}
