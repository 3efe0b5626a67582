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
from worker import broker_close, failure_log, log_safety
from worker.housekeeping import Housekeeping
from worker.settings import WorkerSettings, destination_policy, load_settings

logger = logging.getLogger(__name__)


# Every Redis connection — broker, result backend and the job store, which shares the
# backend's — gives up on a silent server after REDIS_SOCKET_TIMEOUT. It must exceed
# every blocking read: kombu's BRPOP waits 1 s on the server (its polling interval),
# Celery's result consumer polls its pub/sub for at most 1 s, and the job store's
# scripts run in milliseconds; so 10 s never cuts a live answer short, yet a primary
# that hangs (paused, or its host gone without a FIN) is left within 10 s, not after
# the kernel's TCP timeout (kombu#2590: a half-open pub/sub after a failover).
REDIS_SOCKET_TIMEOUT = 10.0
# A primary that is gone refuses or drops a connection at once; 5 s covers a slow network.
REDIS_CONNECT_TIMEOUT = 5.0
# A connection idle longer than this is PINGed before use, and kombu checks its BRPOP
# and pub/sub connections as often (a dead BRPOP connection is noticed within 1 + 2 * 10 s).
REDIS_HEALTH_CHECK_SECONDS = 10
# Storing a result retries a lost Redis this often, waiting between 0 and
# min(2 s, 0.1 s * 2^n) (full jitter) each time: about 30 s in all, enough for Sentinel's
# failover (about 2.5 s with down-after-milliseconds 1000, more with larger values) plus
# a socket timeout, and bounded, so a Redis gone for good fails the store instead of
# hanging the worker.
RESULT_BACKEND_MAX_RETRIES = 30
# Publishing a task (a follower, the sweep's finish, a client's enqueue) retries the same way.
PUBLISH_RETRY_POLICY = {"max_retries": 15, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 2.0}  # fmt: skip


# Socket options of every broker and backend connection (redis-py's names).
REDIS_CONNECTION = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    "socket_keepalive": True,
    "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
}


def connection_options(url: str) -> dict[str, Any]:
    """``REDIS_CONNECTION`` for a URL; a unix socket (the private Redis) has no TCP keepalive."""
    if "socket://" in url.split(";")[0]:
        return {k: v for k, v in REDIS_CONNECTION.items() if k != "socket_keepalive"}
    return REDIS_CONNECTION


def sentinel_options(settings: WorkerSettings) -> dict[str, Any]:
    """Transport options naming the primary, and how to talk to the Sentinels themselves.

    The Sentinels get the same timeouts (redis-py gives them none once ``sentinel_kwargs``
    is set, Celery's backend none at all) and their own password, if any; the primary's
    user and password come from the URL.
    """
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "socket_keepalive": True,
    }
    if settings.sentinel_password is not None:
        sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
    return {"master_name": settings.redis_master_name, "sentinel_kwargs": sentinel_kwargs}


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    settings.check_redis()
    transport = {"visibility_timeout": settings.visibility_timeout}
    backend_connection = connection_options(settings.effective_result_backend)
    broker_transport = {
        **transport,
        **connection_options(settings.effective_broker_url),
        **(sentinel_options(settings) if settings.broker_uses_sentinel else {}),
        # Sweep for the unacknowledged tasks of dead workers often enough that
        # they come back soon after the visibility timeout, not minutes later.
        "unacked_restore_interval": max(1, min(60, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        # The scan runs under a Redis lock that a worker killed inside it leaves held
        # until it expires: kombu's 5 minutes would hold every dead worker's tasks back.
        "unacked_mutex_expire": max(2, min(60, settings.visibility_timeout // 4)),
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
        "result_backend_transport_options": {
            **transport,
            **(sentinel_options(settings) if settings.backend_uses_sentinel else {}),
        },
        "redis_socket_timeout": REDIS_SOCKET_TIMEOUT,
        "redis_socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "redis_socket_keepalive": backend_connection.get("socket_keepalive", False),
        "redis_backend_health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
        # Never resend a command on a timeout inside redis-py: a script may have run.
        "redis_retry_on_timeout": False,
        # A result, a chord part or a state stored while Redis is away (a failover, a
        # restart) waits for it instead of failing the task — and with it the chord.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_BACKEND_MAX_RETRIES,
        "result_backend_base_sleep_between_retries_ms": 100,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
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
    failure_log.install()
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
