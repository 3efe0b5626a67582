"""Telling the LIMS a job finished: a signed webhook and/or a Celery task of its own.

Both fire once per finished run of a job, whether or not its strategy was
satisfied, so the LIMS can mark a session COMPLETED or BUILT_NOT_EXPORTED.

The webhook's message carries only the job id: anyone who can publish a task
can send one, so the worker builds the body from the job store and signs that,
never a summary it was handed. The signature covers a timestamp too
(``sha256=HMAC(secret, b"<timestamp>." + body)``), so a receiver can refuse
a delivery replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from functools import lru_cache
from typing import Any

import httpx
from celery import Celery, Task, shared_task
from pydantic import Field, SecretStr

from destinations.names import JOB_QUEUE, WEBHOOK_TASK
from destinations.settings import NxSettings
from tasks.jobs import JobNotFoundError, get_job

SIGNATURE_HEADER = "X-NexusLIMS-Signature"
TIMESTAMP_HEADER = "X-NexusLIMS-Timestamp"


class NotifySettings(NxSettings):
    """Read in the worker at send time: the secret never travels in a message."""

    webhook_url: str | None = Field(None, validation_alias="NX_EXPORT_WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(None, validation_alias="NX_EXPORT_WEBHOOK_SECRET")
    callback_task: str | None = Field(None, validation_alias="NX_EXPORT_CALLBACK_TASK")
    callback_queue: str | None = Field(None, validation_alias="NX_EXPORT_CALLBACK_QUEUE")


class WebhookRejectedError(Exception):
    """The receiver answered with an error status; the delivery is retried."""


class WebhookRefusedError(Exception):
    """Nothing true to deliver: not a job id, an unknown job, or one not finished. Never retried."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of b"<timestamp>." + body>``."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


@lru_cache(maxsize=1)
def notify_settings() -> NotifySettings:
    """Read once per worker process: the environment does not change under it."""
    return NotifySettings()


def notify_finished(app: Celery, summary: dict[str, Any]) -> None:
    settings = notify_settings()
    label = (
        f"(job={summary['id']} session={summary.get('session_identifier')} "
        f"satisfied={summary['satisfied']})"
    )
    if settings.webhook_url:
        app.send_task(WEBHOOK_TASK, args=(summary["id"],), queue=JOB_QUEUE, argsrepr=label)
    if settings.callback_task:
        app.send_task(
            settings.callback_task,
            args=(summary,),
            queue=settings.callback_queue or JOB_QUEUE,
            argsrepr=label,
        )


@shared_task(
    name=WEBHOOK_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=(httpx.HTTPError, WebhookRejectedError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=10,
)
def deliver_webhook(self: Task, job_id: str) -> dict[str, Any]:
    """POST the finished job's summary as stored; the signature lets the receiver trust it."""
    summary = finished_summary(self.app, job_id)
    settings = notify_settings()
    if not settings.webhook_url:
        return {"delivered": False, "reason": "NX_EXPORT_WEBHOOK_URL is not set on this worker"}
    body = json.dumps(summary, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-NexusLIMS-Event": "job.finished",
        "X-NexusLIMS-Job": summary["id"],
        TIMESTAMP_HEADER: timestamp,
    }
    if settings.webhook_secret:
        secret = settings.webhook_secret.get_secret_value()
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    response = httpx.post(settings.webhook_url, content=body, headers=headers, timeout=30)
    if response.status_code >= 300:
        raise WebhookRejectedError(f"webhook answered HTTP {response.status_code}")
    return {"delivered": True, "status": response.status_code}


def finished_summary(app: Celery, job_id: Any) -> dict[str, Any]:
    """The stored summary of a finished job; anything else is refused."""
    if not isinstance(job_id, str):
        # Never echo the argument: it is whatever a publisher chose to send.
        raise WebhookRefusedError(
            "export.webhook takes a job id; the summary is read from the job store, never sent"
        )
    named = job_id[:100]  # a publisher's string, named in the error: kept short
    try:
        job = get_job(job_id, app=app)
    except JobNotFoundError:
        raise WebhookRefusedError(
            f"job {named} is unknown (or older than the retention period); nothing delivered"
        ) from None
    if not job.finished:
        raise WebhookRefusedError(f"job {named} is {job.state}, not finished; nothing delivered")
    return job.to_dict()
