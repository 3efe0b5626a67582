"""The NexusLIMS outcome bridge: each finished run of a job, written into NexusLIMS's database.

``export.finish`` offers every finished run (the first, and each ``nx-export
retry``) to the bridge. Only workers that can reach NexusLIMS's database
(``NX_DB_PATH`` set, NexusLIMS importable) are bridge workers: they consume the
queue ``nx-export.nexuslims`` and say on every heartbeat that a bridge exists.
Once one has, a run is sent to that queue with the job's results as they are
at that moment; before any has (or after none has for the retention period),
the run waits in a sorted set of the job store, trimmed to the retention
period like the jobs, and the next bridge worker's heartbeat sends it. So a
facility without a bridge keeps no growing queue, and one that starts a bridge
later still has every run written, as long as its job is kept.

The task ``export.nexuslims`` writes the ``upload_log`` rows not yet written
and sets the session's ``record_status``: ``COMPLETED`` when the results
satisfy the job's strategy (as ``was_successfully_exported`` decides),
``BUILT_NOT_EXPORTED`` otherwise. A run is written once, however often its
message is delivered: a Redis key per (job, run) set after the database commit,
and no row written twice if the worker died between the two.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task, shared_task
from celery.result import AsyncResult

from destinations.contract import ExportResult
from destinations.names import NEXUSLIMS_TASK
from destinations.plan import is_satisfied
from tasks.messages import result_from_json
from tasks.nexuslims.database import (
    NexusLIMSDatabaseError,
    bridge_available,
    mark_session,
    session_lock,
    write_results,
)
from tasks.runtime import job_store
from tasks.store.keys import NEXUSLIMS_BRIDGE_SEEN as BRIDGE_SEEN
from tasks.store.keys import NEXUSLIMS_WAITING as WAITING
from tasks.store.keys import nexuslims_done_key
from tasks.store.model import JobRecord, StoredJob

BRIDGE_TASK = NEXUSLIMS_TASK
BRIDGE_QUEUE = "nx-export.nexuslims"
# How many waiting runs a heartbeat reads at a time.
BATCH = 200


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


def offer_outcome(app: Celery, record: JobRecord) -> None:
    """Send this run's outcome to the bridge if a bridge worker exists; else keep it for one."""
    store = job_store(app)
    if store.client.exists(BRIDGE_SEEN):
        send_outcome(app, record.job.id, record)
        return
    now = time.time()
    with store.client.pipeline(transaction=False) as pipe:
        pipe.zadd(WAITING, {record.job.id: now})
        pipe.zremrangebyscore(WAITING, "-inf", now - store.retention)
        pipe.expire(WAITING, store.retention)
        pipe.execute()


def bridge_heartbeat(app: Celery) -> int:
    """A bridge worker's heartbeat: say a bridge exists, then send the runs kept waiting.

    Returns how many were sent. A job retried since is left to its next finish;
    two bridge workers sending one run is harmless (it is written once).
    """
    store = job_store(app)
    store.client.set(BRIDGE_SEEN, "1", ex=store.retention)
    sent = 0
    while job_ids := store.due(WAITING, time.time(), BATCH):
        for job_id, record in zip(job_ids, store.load_many(job_ids), strict=True):
            if record is not None and record.job.finished_at is not None:
                send_outcome(app, job_id, record)
                sent += 1
        store.client.zrem(WAITING, *job_ids)
    return sent


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
    done = nexuslims_done_key(outcome["job_id"], outcome["run"])
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
