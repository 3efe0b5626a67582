"""Hearing back: a signed webhook and the LIMS's own task fire once per finished job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.samples import make_context
from tests.support import WEBHOOK_SECRET, wait_for
from tests.webhook_receiver import verify_signature


def enqueue(app: Any, context: dict[str, Any], **options: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, app=app, **options)


def test_webhook_receives_one_signed_summary_per_job(
    app: Any, record: Path, webhook_receiver: Any
) -> None:
    job = enqueue(app, make_context(record), destinations=["alpha"]).wait(timeout=30)
    (delivery,) = wait_for(lambda: webhook_receiver.for_job(job.id))
    assert verify_signature(WEBHOOK_SECRET, delivery["headers"], delivery["body"])
    assert delivery["summary"]["satisfied"] is True
    assert delivery["summary"]["destinations"]["alpha"]["state"] == "SUCCESS"


def test_webhook_also_fires_for_unsatisfied_jobs(
    app: Any, record: Path, webhook_receiver: Any
) -> None:
    job = enqueue(app, make_context(record), destinations=["failing"]).wait(timeout=30)
    (delivery,) = wait_for(lambda: webhook_receiver.for_job(job.id))
    assert delivery["summary"]["satisfied"] is False
    assert delivery["summary"]["destinations"]["failing"]["error"] == "failing refused the record"
    # The chord's body and its error callback are two copies of the finish: one announces.
    time.sleep(1.5)
    assert len(webhook_receiver.for_job(job.id)) == 1


def test_refused_webhook_is_delivered_again(app: Any, record: Path, webhook_receiver: Any) -> None:
    context = make_context(record)
    context["session_identifier"] = "refuse-first-webhook-" + context["session_identifier"]
    job = enqueue(app, context, destinations=["alpha"]).wait(timeout=30)
    deliveries = wait_for(
        lambda: len(webhook_receiver.for_job(job.id)) >= 2 and webhook_receiver.for_job(job.id),
        timeout=30,
    )
    assert [d["summary"]["id"] for d in deliveries] == [job.id, job.id]


def test_lims_callback_task_gets_the_summary(app: Any, record: Path, callback_log: Path) -> None:
    job = enqueue(app, make_context(record, alpha="fail"), destinations=["alpha"]).wait(timeout=30)

    def delivered() -> list[dict[str, Any]]:
        if not callback_log.exists():
            return []
        summaries = [json.loads(line) for line in callback_log.read_text().splitlines()]
        return [s for s in summaries if s["id"] == job.id]

    (summary,) = wait_for(delivered)
    assert summary["satisfied"] is False
    assert summary["session_identifier"] == job.session_identifier
