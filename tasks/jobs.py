"""The job API: enqueue an export, read a job back, wait for it.

A job is one record sent to its destinations under one strategy. Its record in
Redis (see ``job_store``) outlives the processes that made it for the retention period.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery, current_app

from destinations.contract import ExportContext
from destinations.files.confined import ConfinedReadError, worker_records_root
from destinations.files.record import RecordError, check_record
from destinations.plan import ExportPlan, ExportRequestError, plan_export
from destinations.registry import DestinationInfo, Registry
from tasks import catalog
from tasks.canvas import build_canvas, finish_task_id
from tasks.identifiers import check_name
from tasks.job_view import (
    DestinationStatus,
    ExportJob,
    JobNotFoundError,
    _finished_summary,
    get_job,
    job_from_record,
    list_jobs,
)
from tasks.messages import context_from_message, context_to_message, describe_context
from tasks.runtime import job_store, local_registry
from tasks.store.job_store import RunConflictError
from tasks.store.ledger import with_force
from tasks.store.model import JobRecord, StoredJob

logger = logging.getLogger(__name__)

# What callers import from here: the job API, with the job as they see it.
__all__ = [
    "DestinationStatus", "ExportJob", "JobNotFoundError", "_finished_summary",
    "create_job_from_context", "enqueue_export", "get_job", "job_from_record", "list_jobs",
    "replan", "retry_failed", "send_canvas",
]  # fmt: skip

# How long one sender may take to send a run's canvas before the sweep sends it instead.
CANVAS_CLAIM_SECONDS = 60


def enqueue_export(
    context: ExportContext | Mapping[str, Any],
    strategy: str | None = None,
    destinations: Sequence[str] | None = None,
    app: Celery | None = None,
    job_key: str | None = None,
    force: bool = False,
) -> ExportJob:
    """Validate, plan and enqueue one record's export; return the queued job.

    ``job_key`` makes enqueuing idempotent: while a job enqueued with the same
    key is kept (the retention period), that job is returned (``existing`` is
    True) and nothing new runs. ``force`` exports even what the export ledger holds.
    Raises ``InvalidContextError``, ``RecordError`` or ``ExportRequestError``
    (all ``ValueError``) before anything is enqueued.
    """
    app = app or current_app
    job_id, written = create_job_from_context(
        app, with_force(context, force), strategy, destinations, local_registry(), job_key=job_key
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
    on_worker: bool = False,
) -> tuple[str, JobRecord | None]:
    """Shared by ``enqueue_export`` and the ``export.record`` task (``on_worker``).

    On a worker the record is read under the worker's rule: inside
    ``NX_RECORDS_PATH``, and not at all without it unless opted out.
    Returns the job's id and its record as written; None when it existed already.
    """
    checked = context_from_message(context)
    check_name("job_key", job_key or "")
    records_root = _optional_path(app.conf.get("nx_records_path"))
    if on_worker and records_root is None:
        try:
            records_root = worker_records_root(checked.xml_file_path)
        except ConfinedReadError as error:
            raise RecordError(str(error)) from None
    check_record(
        Path(checked.xml_file_path),
        max_bytes=int(app.conf.nx_export_max_record_bytes),
        records_root=records_root,
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
    force: bool = False,
    expected_runs: int | None = None,
) -> ExportJob:  # fmt: skip
    """Run again the destinations of a finished job that failed or never ran.

    Earlier runs' successes stay (a re-run notebook still links to the first
    run's CDCS record); each destination's history keeps every attempt. Of two
    retries at once one is accepted, the other raises ``ExportRequestError``, as
    does a job whose runs are no longer ``expected_runs`` (what its caller saw).
    ``force``: see ``enqueue_export``.
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
    elif job.satisfied:
        # `jobs --failed` lists exactly the unsatisfied jobs: retry takes exactly those,
        # unless named destinations (a best_effort job's failed one) are asked for.
        names = []
    else:
        names = [name for name, status in job.destinations.items() if not status.succeeded]
    if not names and job.satisfied and job.strategy == "best_effort":
        raise ExportRequestError(
            f"nothing to retry: job {job_id} is satisfied (best_effort); name a failed "
            "destination (--destination) to run it again"
        )
    if not names:
        raise ExportRequestError(f"nothing to retry: job {job_id} has no failed destination")
    offered, disabled = catalog.available(app, local_registry(), names)
    plan = plan_export(job.strategy, offered, names, known=sorted(disabled))
    warn_unserved(app, plan.destinations)
    store = job_store(app)
    message = with_force(store.require(job_id).job.context, force)
    run = job.runs + 1
    finish_id = finish_task_id(job_id, run)
    try:
        store.begin_run(job_id, names, finish_id, expected_runs=job.runs)
    except RunConflictError:
        raise ExportRequestError(f"job {job_id} is already being retried") from None
    send_canvas(app, job_id, run, plan, message, finish_id, check_sent=False)
    return get_job(job_id, app=app)


def _optional_path(value: Any) -> Path | None:
    return Path(value) if value else None
