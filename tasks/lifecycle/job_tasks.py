"""The job's own tasks: ``export.record`` starts a job, ``export.finish`` closes it."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task

from destinations.names import FINISH_TASK, RECORD_TASK
from destinations.plan import is_satisfied
from tasks.identifiers import for_log
from tasks.jobs import create_job_from_context, job_from_record
from tasks.lifecycle.announce import announce
from tasks.messages import describe_context, failure, result_to_json
from tasks.runtime import job_store, local_registry
from tasks.store.keys import ANNOUNCE
from tasks.store.ledger import with_force
from tasks.store.model import JobRecord

logger = logging.getLogger(__name__)


# A telling is announced by one finish; if that worker dies, the sweep announces it.
ANNOUNCE_CLAIM = 300


def _telling(record: JobRecord) -> str:
    return f"announcing:{record.job.id}:{record.job.runs}:{record.job.telling}"


class JobFailedError(Exception):
    """At least one destination of the job failed; the message names them and why."""


@shared_task(name=RECORD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def export_record(
    self: Task,
    context: dict[str, Any],
    strategy: str | None = None,
    destinations: list[str] | None = None,
    job_key: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Start a job from a plain Celery client: ``send_task("export.record", kwargs=...)``.

    The job's id derives from this task's id, so the same message delivered
    again (its worker died) gives the same job, whose canvas is sent if it was
    not. ``job_key`` returns the job enqueued earlier with that key; ``force``
    exports even what the export ledger holds (as ``enqueue_export``). A
    malformed context, a bad record or an impossible plan fails this task once,
    with the reason; it is never retried.
    """
    job_id, written = create_job_from_context(
        self.app, with_force(context, force), strategy, destinations, local_registry(),
        job_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"nexuslims-export:record:{self.request.id}")),
        job_key=job_key, on_worker=True,
    )  # fmt: skip
    return {"job_id": job_id, "existing": written is None}


class FinishTask(Task):
    """Announces the run it finished once its own result is stored (see ``announce``)."""

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        finished = getattr(self.request, "finished_record", None)
        if isinstance(finished, JobRecord):
            announce(self.app, finished)


@shared_task(
    name=FINISH_TASK, bind=True, base=FinishTask, acks_late=True, reject_on_worker_lost=True,
    # Expected: each failed destination's own task is the ERROR line in the worker log;
    # the job's FAILURE (Flower, the result) says it again, logged at INFO.
    throws=(JobFailedError,),
)
def finish_job(self: Task, job_id: str) -> dict[str, Any]:
    """Decide the job's outcome once every destination that will run has run.

    Runs once per run of the job: a copy of it (redelivered, or sent by the
    sweep) or the finish of a run a retry replaced changes nothing.
    """
    store = job_store(self.app)
    record = store.require(job_id)
    if record.job.finish_task_id not in (None, self.request.id):
        return job_from_record(record).to_dict()  # a retry replaced this run
    planned = record.job.destinations
    strategy = record.job.strategy
    never_ran = [name for name in planned if name not in record.outcomes()]
    if record.job.finished_at is None and never_ran:
        if strategy == "first_success":
            store.mark_skipped(
                job_id, never_ran, "an earlier destination succeeded (first_success)"
            )
        else:
            # Only a lost task leaves one without an outcome here: say so, and let
            # `nx-export retry` send it, instead of calling it skipped.
            lost = f"it never ran: its task was lost before it started (retry job {job_id})"
            store.end_unfinished(
                job_id, {n: result_to_json(failure(n, lost), n) for n in never_ran}
            )
        record = store.require(job_id)
    outcomes = record.outcomes()
    satisfied = is_satisfied(strategy, planned, outcomes)
    summary = job_from_record(record).to_dict()
    finished = None
    if record.job.finished_at is None:
        finished = store.mark_finished(job_id, satisfied, self.request.id, record)
    elif record.job.retold and store.scheduled(ANNOUNCE, job_id) and store.claim(
        _telling(record), ANNOUNCE_CLAIM
    ):
        # Told again (an outcome arrived after the deadline ended the run): announced by
        # one of the copies sent since. (A first telling is announced by the copy that
        # finished the run, or by the sweep: never by a copy that finds it finished.)
        finished = record
    if finished is not None:
        summary = job_from_record(finished).to_dict()
        self.request.finished_record = finished  # for after_return
    entries = record.planned()
    failed = {name: entries[name].error for name, ok in outcomes.items() if not ok}
    if failed:
        verdict = "satisfied" if satisfied else "not satisfied"
        details = "; ".join(
            str(error) if str(error).startswith(f"{name}: ") else f"{name}: {error}"
            for name, error in failed.items()
        )
        about = for_log(record.job.summary or describe_context(record.job.context))
        raise JobFailedError(
            f"{len(failed)} of {len(planned)} destinations failed "
            f"(strategy {strategy} {verdict}) for {about}: {details}"
        )
    return summary
