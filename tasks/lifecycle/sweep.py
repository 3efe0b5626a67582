"""The sweep every worker runs on its heartbeat, so that every job ends.

- A job past its deadline (``NX_EXPORT_JOB_DEADLINE``): each destination
  without an outcome ends FAILURE saying why (no worker took its task, or it is
  still running), then the run's ``export.finish`` is sent.
- A job whose every destination has its outcome, but whose finish has not run
  within the grace period (Redis restarted while its chord counted): its
  ``export.finish`` is sent.
- A run whose canvas is not known to be sent within the grace period (its
  sender died between writing the job and sending it): its canvas is sent.
- A finished run not announced within the grace period (its finish's worker
  died after finishing it): it is announced (``tasks.lifecycle.announce``).
- A destination task that is in no queue, held by no worker and not running
  for ``NX_EXPORT_LOST_TASK_SECONDS`` (a purged queue): it is sent again
  (``tasks.lifecycle.lost``), by one worker per heartbeat.
- A finished run not written to NexusLIMS's database within the grace period
  (its bridge message lost, or kept while no bridge worker existed): while a
  bridge worker is alive, it is sent to the bridge again
  (``tasks.nexuslims.delivery``).

Each comes from a sorted set of the job store, so a sweep reads only the jobs
that need it, and each job is claimed (``SET NX``) so two workers never act on
it at once. ``export.finish`` runs once per run, however often it is sent.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from destinations.names import task_name
from tasks.canvas import finish_task_id, send_finish
from tasks.jobs import replan, send_canvas
from tasks.lifecycle.announce import announce
from tasks.lifecycle.lost import resend_lost
from tasks.messages import failure, result_to_json
from tasks.nexuslims.delivery import reoffer_unwritten
from tasks.runtime import job_store
from tasks.store.job_store import JobStore
from tasks.store.keys import ANNOUNCE, DEADLINES, SETTLED, UNSENT
from tasks.store.model import DestinationState, JobRecord

logger = logging.getLogger(__name__)

# A settled job's finish is sent at most this many grace periods apart.
SETTLED_CLAIM_GRACES = 10
LOST_TASK_SECONDS = 300.0


def sweep(app: Celery, grace: float) -> None:
    """One pass over the overdue, settled and unsent jobs, and the runs not announced or written."""
    store = job_store(app)
    now = time.time()
    for job_id in store.due(DEADLINES, now):
        if store.claim(f"overdue:{job_id}", grace):
            _end_overdue(app, store, job_id)
    for job_id in store.due(SETTLED, now - grace):
        if store.claim(f"settled:{job_id}", grace * SETTLED_CLAIM_GRACES):
            record = _unfinished(store, SETTLED, job_id)
            if record is not None:
                logger.warning("job %s: every destination ended, its finish did not", job_id)
                _send_finish(app, record)
    for job_id in store.due(UNSENT, now - grace):
        _send_missing_canvas(app, store, job_id)
    for job_id in store.due(ANNOUNCE, now - grace):
        if store.claim(f"announce:{job_id}", grace):
            _announce_missed(app, store, job_id)
    lost_after = float(app.conf.get("nx_export_lost_task_seconds") or LOST_TASK_SECONDS)
    if store.claim("lost-tasks", grace / 2):
        resend_lost(app, lost_after, now)
    sent = reoffer_unwritten(app, grace)
    if sent:
        logger.info("sent %d finished runs not written to NexusLIMS yet to the bridge", sent)


def _announce_missed(app: Celery, store: JobStore, job_id: str) -> None:
    record = store.load(job_id)
    if record is None:
        store.unschedule(ANNOUNCE, job_id)
    elif record.job.finished_at is not None:  # else a retry runs it again: its finish announces
        logger.warning("job %s: its finished run was not announced; announcing it", job_id)
        announce(app, record)


def _end_overdue(app: Celery, store: JobStore, job_id: str) -> None:
    record = _unfinished(store, DEADLINES, job_id)
    if record is None:
        return
    seconds = f"{record.job.deadline_seconds or store.deadline:g}"
    results = {}
    for name, entry in record.planned().items():
        if entry.state.has_outcome or entry.state == DestinationState.SKIPPED:
            continue
        if entry.state == DestinationState.PENDING:
            reason = f"no worker took {task_name(name)} within {seconds} s"
        else:
            reason = f"still running after {seconds} s"
        results[name] = result_to_json(failure(name, reason), name)
    ended = store.end_unfinished(job_id, results)
    logger.warning("job %s passed its deadline; ended %s", job_id, ", ".join(ended) or "nothing")
    _send_finish(app, record)


def _send_missing_canvas(app: Celery, store: JobStore, job_id: str) -> None:
    record = _unfinished(store, UNSENT, job_id)
    if record is None:
        return
    run = record.job.runs
    names = [n for n, e in record.planned().items() if e.state == DestinationState.PENDING]
    if store.canvas_sent(job_id) >= run or not names:
        store.unschedule(UNSENT, job_id)
        return
    finish_id = record.job.finish_task_id or finish_task_id(job_id, run)
    plan = replan(app, record, names)
    if send_canvas(app, job_id, run, plan, record.job.context, finish_id):
        logger.warning("job %s: sent run %d's canvas, which its sender never sent", job_id, run)


def _unfinished(store: JobStore, schedule: str, job_id: str) -> JobRecord | None:
    """The job's record while it is unfinished; otherwise drop it from ``schedule``."""
    record = store.load(job_id)
    if record is None or record.job.finished_at is not None:
        store.unschedule(schedule, job_id)
        return None
    return record


def _send_finish(app: Celery, record: JobRecord) -> None:
    job = record.job
    send_finish(app, job.id, job.finish_task_id, job.summary or "", "sent by the sweep")
