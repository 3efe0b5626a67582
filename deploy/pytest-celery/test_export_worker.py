"""The project's worker image under pytest-celery: ping, a task by name, one export."""

from __future__ import annotations

from typing import Any

from conftest import RECORDS_PATH, SAMPLE
from pytest_celery import CeleryTestSetup

CONTEXT = {
    "xml_file_path": f"{RECORDS_PATH}/{SAMPLE}",
    "session_identifier": "pytest-celery-jeol",
    "instrument_pid": "JEOL-JEM3010-TEM-565989",
    "dt_from": "2026-11-04T08:00:00+00:00",
    "dt_to": "2026-11-04T09:00:00+00:00",
}


def test_the_worker_answers_ping(celery_setup: CeleryTestSetup) -> None:
    worker = celery_setup.worker_cluster[0]
    replies = celery_setup.app.control.ping(timeout=10)
    assert replies, "no worker answered"
    names = [name for reply in replies for name in reply]
    assert worker.hostname() in names, names
    assert all(answer == {"ok": "pong"} for reply in replies for answer in reply.values())


def test_a_task_sent_by_name_returns_its_result(celery_setup: CeleryTestSetup) -> None:
    # Celery's own accumulate task, by name only: the client imports nothing of it.
    result = celery_setup.app.send_task("celery.accumulate", args=(1, "two", [3]))
    assert result.get(timeout=30) == [1, "two", [3]]


def test_one_record_exports_through_the_canvas(celery_setup: CeleryTestSetup) -> None:
    from tasks.jobs import get_job

    app = celery_setup.app
    started: dict[str, Any] = app.send_task(
        "export.record", kwargs={"context": CONTEXT, "strategy": "all", "destinations": ["local"]}
    ).get(timeout=60)
    assert started["existing"] is False
    job = get_job(started["job_id"], app=app).wait(timeout=120)
    assert job.state.value == "finished", job.to_dict()
    assert job.satisfied, job.to_dict()
    assert list(job.destinations) == ["local"]
    assert job.destinations["local"].succeeded, job.to_dict()
    archived = celery_setup.worker_cluster[0].container.exec_run(["find", "/archive", "-type", "f"])
    assert archived.exit_code == 0
    assert archived.output.decode().strip(), "nothing in the archive"
