"""Waiting for a service's call slots: retried as often as needed, never counted as an attempt.

A destination raises ``SlotsDeferredError`` when its calls would wait longer
than it may sleep, ``AnswerPendingError`` when an earlier copy's create call
may still be answered (both ``DeferredExportError``); nothing was sent. The
task comes back after the error's ``retry_after`` (at most the destination's
longest backoff, which stays below the broker's visibility timeout). The job
record counts every run of a task as an attempt, so the waits are counted here
— per job and destination, and per task run — and taken off the attempt budget
and the backoff exponent.
"""

from __future__ import annotations

from typing import NoReturn, cast

from celery import Celery, Task

from destinations.errors import DeferredExportError
from tasks.runtime import job_store
from tasks.store.keys import waits_key
from tasks.store.lease import Lease

ALL_RUNS = "all"


def wait_for_slots(
    task: Task, name: str, job_id: str, error: DeferredExportError, lease: Lease | None = None
) -> NoReturn:
    """Count one wait and raise Celery's Retry for when the slots are near.

    With ``lease``, the retry is noted only while this copy holds it
    (``LeaseLostError`` otherwise, nothing counted).
    """
    policy = task.app.conf.nx_export_retry[name]
    countdown = min(max(0.0, error.retry_after or 0.0), policy.backoff_max)
    store = job_store(task.app)
    store.record_retry(job_id, name, str(error), countdown, lease)
    key = waits_key(job_id, name)
    with store.client.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, ALL_RUNS, 1)
        pipe.hincrby(key, str(task.request.id), 1)
        pipe.expire(key, store.retention)
        pipe.execute()
    raise task.retry(exc=error, countdown=countdown, max_retries=None)


def slot_waits(app: Celery, job_id: str, name: str, task_id: str | None) -> tuple[int, int]:
    """How many times this job's task for ``name`` waited: in all runs, and in this run."""
    values = cast(
        list[bytes | None],
        job_store(app).client.hmget(waits_key(job_id, name), [ALL_RUNS, str(task_id)]),
    )
    every, this_run = (int(value or 0) for value in values)
    return every, this_run
