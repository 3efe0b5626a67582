"""Telling the LIMS a job finished: a signed webhook and/or a Celery task of its own.

Both fire once per finished run of a job, whether or not its strategy was
satisfied, so the LIMS can mark a session COMPLETED or BUILT_NOT_EXPORTED.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

import httpx
from celery import Celery, Task, shared_task
from pydantic import Field, SecretStr

from destinations.names import JOB_QUEUE, WEBHOOK_TASK
from destinations.settings import NxSettings

SIGNATURE_HEADER = "X-NexusLIMS-Signature"


class NotifySettings(NxSettings):
    """Read in the worker at send time: the secret never travels in a message."""

    webhook_url: str | None = Field(None, validation_alias="NX_EXPORT_WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(None, validation_alias="NX_EXPORT_WEBHOOK_SECRET")
    callback_task: str | None = Field(None, validation_alias="NX_EXPORT_CALLBACK_TASK")
    callback_queue: str | None = Field(None, validation_alias="NX_EXPORT_CALLBACK_QUEUE")


class WebhookRejectedError(Exception):
    """The receiver answered with an error status; the delivery is retried."""


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC of the body>``, as GitHub-style receivers expect."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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
        app.send_task(WEBHOOK_TASK, args=(summary,), queue=JOB_QUEUE, argsrepr=label)
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
def deliver_webhook(self: Task, summary: dict[str, Any]) -> dict[str, Any]:
    """POST the job summary; the signature lets the receiver trust it."""
    settings = notify_settings()
    if not settings.webhook_url:
        return {"delivered": False, "reason": "NX_EXPORT_WEBHOOK_URL is not set on this worker"}
    body = json.dumps(summary, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-NexusLIMS-Event": "job.finished",
        "X-NexusLIMS-Job": str(summary["id"]),
    }
    if settings.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(settings.webhook_secret.get_secret_value(), body)
    response = httpx.post(settings.webhook_url, content=body, headers=headers, timeout=30)
    if response.status_code >= 300:
        raise WebhookRejectedError(f"webhook answered HTTP {response.status_code}")
    return {"delivered": True, "status": response.status_code}
