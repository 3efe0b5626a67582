"""Every way a LIMS enqueues works: here, a plain Celery client that knows only the task name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

from tests.samples import make_context


def test_a_plain_client_needs_no_queue_name(session_worker: Any, app: Any, record: Path) -> None:
    from tasks.jobs import get_job

    url = os.environ["NX_EXPORT_BROKER_URL"]
    client = Celery("lims", broker=url, backend=url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        result = client.send_task(
            "export.record",
            kwargs={"context": make_context(record), "destinations": ["alpha"]},
        )
        job_id = result.get(timeout=60)["job_id"]
    finally:
        client.close()
    job = get_job(job_id, app=app).wait(timeout=60)
    assert job.satisfied
    assert job.destinations["alpha"].record_id
