"""The Celery app, configured from ``WorkerSettings``.

Importing this module builds the app and declares every task, one per
discovered destination; it starts nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

import tasks.lifecycle.job_tasks  # noqa: F401  (declares export.record, export.finish, export.webhook)
from destinations.names import (
    CELERY_DEFAULT_QUEUE,
    JOB_QUEUE,
    destination_of,
    queue_name,
    task_name,
)
from tasks.export.destination_task import declare_destination_task
from tasks.nexuslims.bridge import BRIDGE_QUEUE
from tasks.nexuslims.database import bridge_available
from tasks.runtime import local_registry
from worker import broker_close, log_safety
from worker.housekeeping import Housekeeping
from worker.settings import WorkerSettings, destination_policy, load_settings

logger = logging.getLogger(__name__)


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    transport = {"visibility_timeout": settings.visibility_timeout}
    broker_transport = {
        **transport,
        # Sweep for the unacknowledged tasks of dead workers often enough that
        # they come back soon after the visibility timeout, not minutes later.
        "unacked_restore_interval": max(1, min(60, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.effective_broker_url,
        "result_backend": settings.effective_result_backend,
        # JSON only: a worker that accepts pickle runs whatever anyone who reaches Redis sends.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "result_expires": timedelta(days=settings.retention_days),
        "result_extended": True,
        "broker_transport_options": broker_transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A task delivered again after it succeeded runs again: ours return the
        # stored result without exporting, and the chord keeps one part per task
        # id, so it never counts twice; skipping it instead would lose its part
        # when Redis restarted between storing the result and counting it.
        "worker_deduplicate_successful_tasks": False,
        "task_default_queue": JOB_QUEUE,
        "task_routes": (route_task,),
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "nx_export_strategy": settings.strategy,
        "nx_export_plugins": settings.plugins,
        "nx_export_max_record_bytes": settings.max_record_bytes,
        "nx_records_path": str(settings.records_path) if settings.records_path else None,
        "nx_export_record_schema": str(settings.record_schema) if settings.record_schema else None,
        "nx_export_job_deadline": settings.job_deadline,
        "nx_export_heartbeat_seconds": settings.heartbeat_seconds,
        "nx_export_lease_seconds": settings.lease_seconds,
        "nx_export_lost_task_seconds": settings.lost_task_seconds,
    }


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any
) -> dict[str, str]:
    """``export.<destination>`` to its own queue, the job's tasks to the job queue."""
    destination = destination_of(name)
    return {"queue": queue_name(destination) if destination else JOB_QUEUE}


def create_app(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or load_settings()
    broker_close.install()
    log_safety.install()
    app = Celery("nexuslims_export", set_as_current=True)
    app.conf.update(celery_config(settings))
    policies = {
        name: destination_policy(name, settings)
        for name in local_registry().destinations
    }
    app.conf.nx_export_retry = policies
    app.conf.task_annotations = {
        task_name(name): {"rate_limit": policy.rate_limit}
        for name, policy in policies.items()
        if policy.rate_limit
    }
    for name in policies:
        declare_destination_task(name)
    # One direct exchange per queue, bound by its own name: sharing Celery's
    # default routing key would copy every message into every queue.
    app.conf.task_queues = [
        Queue(queue, Exchange(queue, type="direct"), routing_key=queue) for queue in all_queues()
    ]
    return app


def all_queues() -> list[str]:
    """The job queues and the queue of every destination this worker has enabled.

    A worker without a destination's settings leaves its tasks to workers that have them.
    Celery's default queue is consumed for clients that send ``export.record`` without
    naming a queue.
    """
    enabled = (queue_name(name) for name in local_registry().enabled())
    queues = [JOB_QUEUE, CELERY_DEFAULT_QUEUE, *enabled]
    # Only a worker that reaches NexusLIMS's database records outcomes there.
    return [*queues, BRIDGE_QUEUE] if bridge_available() else queues


@worker_ready.connect
def _start_housekeeping(sender: Any = None, **_: Any) -> None:
    """Publish the catalogue now, then heartbeat and sweep for as long as the worker runs."""
    app = sender.app if sender is not None else None
    if app is None:
        return
    Housekeeping(app, hostname=getattr(sender, "hostname", None)).start()


app = create_app()
