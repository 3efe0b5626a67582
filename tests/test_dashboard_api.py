"""The dashboard's HTTP side against the real worker: auth, the JSON API, retry, metrics."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard_support import Dashboard
from tests.samples import make_context
from tests.support import PROJECT_ROOT, wait_for, worker_env


def enqueue(app: Any, context: dict[str, Any], destinations: list[str]) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, destinations=destinations, app=app)


def all_pages(dashboard: Dashboard, **params: Any) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = dashboard.get("/api/jobs", **params, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        jobs += body["jobs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return jobs


def test_strangers_get_401_and_healthz_stays_open(dashboard: Dashboard) -> None:
    for path in ("/", "/api/jobs", "/metrics", "/jobs/any", "/static/dashboard.js"):
        assert dashboard.get(path, auth=None).status_code == 401, path
        assert dashboard.get(path, auth=("ops", "wrong")).status_code == 401, path
    assert dashboard.get("/healthz", auth=None).status_code == 200
    assert dashboard.get("/api/jobs").status_code == 200


def test_without_credentials_the_dashboard_refuses_to_start(tmp_path: Path) -> None:
    env = worker_env("redis://127.0.0.1:1/0", None)
    for value in (None, "no-colon"):
        if value is not None:
            env["NX_EXPORT_DASHBOARD_AUTH"] = value
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "dashboard", "--port", "1"],
            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "NX_EXPORT_DASHBOARD_AUTH" in done.stderr


def test_failed_filter_lists_exactly_the_failed_jobs(
    dashboard: Dashboard, app: Any, record: Path
) -> None:
    from tasks.jobs import list_jobs

    since = datetime.now(UTC)
    instrument = f"TEST-{uuid.uuid4().hex[:8]}"
    created = []
    for index in range(6):
        context = {**make_context(record), "instrument_pid": instrument}
        names = ["alpha", "failing"] if index % 3 == 0 else ["alpha", "beta"]
        created.append(enqueue(app, context, names))
    created = [job.wait(timeout=30) for job in created]
    failed = [job for job in created if not job.satisfied]
    ok = [job for job in created if job.satisfied]
    assert len(failed) == 2

    listed = all_pages(dashboard, state="failed", since=since.isoformat(), limit=2)
    ids = [job["id"] for job in listed]
    assert len(ids) == len(set(ids))  # no job on two pages
    # The indexes find what the whole scan of every job finds, and nothing else.
    scanned = {job.id for job in list_jobs(since=since, failed_only=True, app=app)}
    assert set(ids) == scanned
    assert {job.id for job in failed} <= set(ids)
    assert not {job.id for job in ok} & set(ids)

    mine = all_pages(dashboard, instrument=instrument)
    assert [job["id"] for job in mine] == [job.id for job in reversed(created)]  # newest first
    by_failure = all_pages(dashboard, state="failed", destination="failing", instrument=instrument)
    assert {job["id"] for job in by_failure} == {job.id for job in failed}
    session = failed[0].session_identifier
    assert [job["id"] for job in all_pages(dashboard, session=session)] == [failed[0].id]
    assert dashboard.get("/api/jobs", state="sideways").status_code == 400


def test_one_job_by_id_without_secrets(dashboard: Dashboard, app: Any, record: Path) -> None:
    context = make_context(record)
    context["metadata"]["api_token"] = "token-that-must-not-show"
    job = enqueue(app, context, ["alpha"]).wait(timeout=30)
    answer = dashboard.get(f"/api/jobs/{job.id}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == job.id and body["satisfied"] is True
    assert body["destinations"]["alpha"]["record_url"].endswith(job.session_identifier)
    assert body["context"]["metadata"]["api_token"] == "***"
    assert "token-that-must-not-show" not in dashboard.get(f"/jobs/{job.id}").text
    assert dashboard.get(f"/api/jobs/{uuid.uuid4()}").status_code == 404


def test_a_retry_without_its_token_is_refused_and_runs_nothing(
    dashboard: Dashboard, app: Any, record: Path
) -> None:
    from tasks.jobs import get_job

    job = enqueue(app, make_context(record, alpha="fail-first:1"), ["alpha"]).wait(timeout=30)
    other = enqueue(app, make_context(record), ["failing"]).wait(timeout=30)
    assert not job.satisfied and not other.satisfied
    # No token, a made-up one, and the token of another job's form.
    for data in ({}, {"csrf": "0" * 64}, {"csrf": dashboard.retry_token(other.id)}):
        refused = dashboard.post(f"/jobs/{job.id}/retry", data)
        assert refused.status_code == 403
    unchanged = get_job(job.id, app=app)
    assert unchanged.runs == 1 and unchanged.destinations["alpha"].attempts == 1
    assert unchanged.state == "finished"

    accepted = dashboard.post(f"/jobs/{job.id}/retry", {"csrf": dashboard.retry_token(job.id)})
    assert accepted.status_code == 303
    assert accepted.headers["location"] == f"/jobs/{job.id}?retried=2"
    again = wait_for(lambda: (j := get_job(job.id, app=app)).finished and j.runs == 2 and j)
    assert again.satisfied and again.destinations["alpha"].attempts == 2


def test_metrics_are_labelled_by_destination_only(
    dashboard: Dashboard, app: Any, record: Path
) -> None:
    enqueue(app, make_context(record, gamma="transient:1"), ["alpha", "gamma"]).wait(timeout=30)
    enqueue(app, make_context(record), ["failing"]).wait(timeout=30)
    answer = dashboard.get("/metrics")
    assert answer.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    labels = {name for _, pairs in samples for name, _ in pairs}
    assert labels <= {"destination", "outcome", "state", "queue", "le"}

    def value(name: str, **wanted: str) -> float:
        return samples[(name, tuple(sorted(wanted.items())))]

    assert value("nx_export_exports_total", destination="alpha", outcome="success") >= 1
    assert value("nx_export_exports_total", destination="failing", outcome="failure") >= 1
    assert value("nx_export_retries_total", destination="gamma") >= 1
    assert value("nx_export_export_duration_seconds_count", destination="alpha") >= 1
    assert value("nx_export_export_duration_seconds_bucket", destination="alpha", le="+Inf") >= 1
    assert value("nx_export_last_success_timestamp_seconds", destination="alpha") > 1e9
    assert value("nx_export_jobs", state="finished-failed") >= 1
    assert value("nx_export_queue_length", queue="export.alpha") >= 0
    assert value("nx_export_queue_length", queue="nx-export") >= 0
