"""Destination tasks whose message is gone, found in minutes and sent again.

A message can vanish outside the worker's control: ``celery purge``, a Redis
that lost its last writes, an operator deleting a queue. Its job then waits for
a task that will never run, until its deadline (a day by default). A
destination of an unfinished run is *lost* when, for longer than the grace
period (``NX_EXPORT_LOST_TASK_SECONDS``), it has no outcome, no live lease (no
worker exports it), and its task is neither in its queue nor held by a worker
(the broker's unacknowledged messages, which hold reserved tasks and retries
waiting for their countdown). A lost task is sent again with its own id into
the chord it belongs to: if a copy turns up after all, the lease lets one
export and the chord counts the task once.

A dependent, or the next destination under ``first_success``, is looked for
only once the task that starts it has added it to the chord; before that it is
not lost, just not due.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from celery import Celery

from destinations.names import destination_of, queue_name
from destinations.plan import ExportPlan
from tasks.canvas import EXPORT, PREPARE, chord_options, destination_step, step_task_id
from tasks.jobs import replan
from tasks.runtime import job_store
from tasks.store import index as job_index
from tasks.store.decode import text
from tasks.store.job_store import JobStore
from tasks.store.keys import lease_key, started_key
from tasks.store.model import JobRecord

logger = logging.getLogger(__name__)

# kombu's Redis transport: the key of the broker's unacknowledged messages, and the
# keys of a queue's priority levels besides the queue itself (its default steps).
UNACKED = "unacked"
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
# Jobs looked at per sweep: the oldest unfinished ones first.
BATCH = 100


def resend_lost(app: Celery, grace: float, now: float | None = None) -> list[tuple[str, str]]:
    """Send again every lost destination task of the unfinished jobs; return (job, destination).

    ``grace`` 0 (``nx-export resend-lost``) sends what is lost now.
    """
    store = job_store(app)
    now = time.time() if now is None else now
    records = [
        record
        for record in store.load_many(_unfinished_older_than(store, now - grace))
        if record is not None and record.job.finished_at is None
    ]
    if not records:
        return []
    queues = {queue_name(name) for record in records for name in record.planned()}
    in_flight = messages_in_flight(app, queues)
    sent = []
    for record in records:
        plan = replan(app, record, list(record.planned()))
        for name, phase in _lost(store, record, plan, in_flight, now - grace):
            _send_again(app, record, plan, name, phase)
            sent.append((record.job.id, name if phase == EXPORT else f"{name} ({phase})"))
    return sent


def messages_in_flight(app: Celery, queues: Iterable[str]) -> set[str]:
    """The task ids of every message in ``queues`` or held by a worker, read in one transaction."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        keys = [key for queue in sorted(set(queues)) for key in _priority_keys(queue)]
        with client.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            pipe.hvals(UNACKED)
            *queued, unacked = cast(list[Any], pipe.execute())
    ids = {_task_id(raw) for messages in queued for raw in messages}
    ids |= {_task_id(raw, held=True) for raw in unacked}
    ids.discard(None)
    return {task_id for task_id in ids if task_id}


def _unfinished_older_than(store: JobStore, created_before: float) -> list[str]:
    found: list[str] = []
    for state in (job_index.QUEUED, job_index.RUNNING):
        members = store.client.zrangebyscore(
            job_index.state_key(state), "-inf", created_before, start=0, num=BATCH
        )
        found += [text(member) for member in cast(list[bytes], members)]
    return found[:BATCH]


def _lost(
    store: JobStore, record: JobRecord, plan: ExportPlan, in_flight: set[str], quiet_since: float
) -> list[tuple[str, str]]:
    """(destination, phase) of each task of the run that is due, not running, and nowhere."""
    job_id, run = record.job.id, record.job.runs
    if store.canvas_sent(job_id) < run:
        return []  # the sweep's unsent-canvas rule sends the whole canvas
    waiting = [
        name
        for name, entry in record.planned().items()
        if not entry.state.has_outcome and _last_activity(record, entry) < quiet_since
    ]
    if not waiting:
        return []
    with store.client.pipeline(transaction=False) as pipe:
        for name in waiting:
            pipe.exists(lease_key(job_id, name))
            pipe.get(started_key(job_id, run, name))
        answers = pipe.execute()
    lost = []
    for name, leased, started in zip(waiting, answers[::2], answers[1::2], strict=True):
        if leased:
            continue
        added = started is not None and text(started).endswith(":added")
        due = []
        if name in plan.roots() or added:
            due.append(EXPORT)
        elif name in plan.prepared and store.prepared(job_id, name) is None:
            due.append(PREPARE)
        lost += [
            (name, phase)
            for phase in due
            if step_task_id(job_id, run, name, phase) not in in_flight
        ]
    return lost


def _send_again(app: Celery, record: JobRecord, plan: ExportPlan, name: str, phase: str) -> None:
    job, run = record.job, record.job.runs
    step = destination_step(app, name, job.id, job.context, plan, run, phase)
    finish_id = job.finish_task_id or ""
    step.set(**chord_options(app, job.id, run, finish_id, job.summary or "", job.strategy))
    step.apply_async()
    logger.warning(
        "job %s: %s's %s task was in no queue and held by no worker; sent it again",
        job.id, name, phase,
    )  # fmt: skip


def _last_activity(record: JobRecord, entry: Any) -> float:
    moments = [record.job.created_at, entry.started_at]
    moments += [attempt.get("at") for attempt in entry.history[-1:]]
    stamps = [datetime.fromisoformat(m).timestamp() for m in moments if m]
    return max(stamps) if stamps else 0.0


def _priority_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def _task_id(raw: bytes | str, held: bool = False) -> str | None:
    """The task id of a stored message (held: kombu's [message, exchange, routing key])."""
    try:
        data = json.loads(raw)
        message = data[0] if held else data
        headers = message.get("headers") or {}
        if destination_of(str(headers.get("task", ""))) is None:
            return None
        return str(headers.get("id") or "") or None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
