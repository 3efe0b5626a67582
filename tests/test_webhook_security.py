"""The webhook tells only the truth: it is built from the job store, signed with a timestamp.

Anyone who can publish a task could otherwise make the LIMS receive a correctly
signed "satisfied" for a session that was never exported.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from werkzeug.datastructures import Headers

from tests.conftest import WEBHOOK_SECRET, make_context, wait_for
from tests.webhook_receiver import WebhookReceiver, verify_signature


def webhook_outcome(app: Any, *args: Any) -> Any:
    """Publish ``export.webhook`` as any client could, and wait until the worker ran it."""
    result = app.send_task("export.webhook", args=args, queue="nx-export")
    result.get(timeout=30, propagate=False)
    return result


def test_a_forged_summary_is_refused_and_nothing_is_delivered(
    app: Any, webhook_receiver: WebhookReceiver
) -> None:
    forged_id = uuid.uuid4().hex
    forged = {
        "id": forged_id,
        "satisfied": True,
        "state": "finished",
        "session_identifier": "never-exported",
        "destinations": {"cdcs": {"state": "SUCCESS"}},
    }
    result = webhook_outcome(app, forged)
    assert result.state == "FAILURE"
    assert "job id" in str(result.result)
    assert webhook_receiver.for_job(forged_id) == []
    assert not [d for d in webhook_receiver.deliveries if b"never-exported" in d["body"]]


def test_an_unknown_job_is_refused(app: Any, webhook_receiver: WebhookReceiver) -> None:
    unknown = uuid.uuid4().hex
    result = webhook_outcome(app, unknown)
    assert result.state == "FAILURE"
    assert unknown in str(result.result) and "unknown" in str(result.result)
    assert webhook_receiver.for_job(unknown) == []


def test_a_job_not_finished_is_refused(
    app: Any, record: Path, webhook_receiver: WebhookReceiver
) -> None:
    from worker import enqueue_export

    job = enqueue_export(make_context(record, alpha="sleep:3"), app=app, destinations=["alpha"])
    result = webhook_outcome(app, job.id)
    assert result.state == "FAILURE"
    assert "not finished" in str(result.result), result.result
    assert job.wait(timeout=30).satisfied
    # Only the job's own webhook, sent once it finished, reaches the receiver.
    (delivery,) = wait_for(lambda: webhook_receiver.for_job(job.id))
    assert delivery["summary"]["state"] == "finished"


def test_a_finished_jobs_webhook_is_signed_over_timestamp_and_body(
    app: Any, record: Path, webhook_receiver: WebhookReceiver
) -> None:
    from worker import enqueue_export, get_job

    job = enqueue_export(make_context(record), app=app, destinations=["alpha"]).wait(timeout=30)
    (delivery,) = wait_for(lambda: webhook_receiver.for_job(job.id))
    headers, body = delivery["headers"], delivery["body"]
    assert abs(int(headers["X-NexusLIMS-Timestamp"]) - time.time()) < 300
    assert verify_signature(WEBHOOK_SECRET, headers, body)
    assert not verify_signature("another-secret", headers, body)
    # The body alone, or another timestamp, does not carry the signature.
    older = Headers(headers)
    older["X-NexusLIMS-Timestamp"] = str(int(headers["X-NexusLIMS-Timestamp"]) - 1)
    assert not verify_signature(WEBHOOK_SECRET, older, body)
    # A delivery replayed later than five minutes is refused by the receiver.
    assert not verify_signature(WEBHOOK_SECRET, headers, body, now=time.time() + 301)
    assert json.loads(body) == get_job(job.id, app=app).to_dict()

    # The same job id sent again by anyone delivers the stored truth, freshly signed.
    assert webhook_outcome(app, job.id).state == "SUCCESS"
    first, again = wait_for(
        lambda: len(webhook_receiver.for_job(job.id)) == 2 and webhook_receiver.for_job(job.id)
    )
    assert verify_signature(WEBHOOK_SECRET, again["headers"], again["body"])
    assert again["summary"] == first["summary"]
