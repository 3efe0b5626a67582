"""A record reaches every destination once: slow exports, concurrent retries, redelivered
``export.record`` messages and repeated enqueues never run a destination twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from destinations.plan import ExportRequestError
from tests.private_cluster import Cluster, enqueue_arguments
from tests.samples import RECORD, make_context
from tests.support import PROJECT_ROOT, read_log, worker_env
from worker.sandbox import FakeCDCS

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes


def enqueue(app: Any, context: dict[str, Any], **options: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, app=app, **options)


def nx_export(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *arguments], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
        env=worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
    )  # fmt: skip


@pytest.fixture
def slow_cdcs() -> Iterator[FakeCDCS]:
    with FakeCDCS() as cdcs:
        # Longer than the visibility timeout below: Redis hands the task out again meanwhile.
        cdcs.create_latency = 6
        yield cdcs


def test_an_export_slower_than_the_visibility_timeout_runs_once(
    tmp_path: Path, slow_cdcs: FakeCDCS
) -> None:
    cluster = Cluster(
        tmp_path, None, NX_CDCS_URL=slow_cdcs.root_url, NX_CDCS_TOKEN=slow_cdcs.token,
        NX_EXPORT_VISIBILITY_TIMEOUT="2", NX_EXPORT_LEASE_SECONDS="1.5",
        NX_HTTP_READ_TIMEOUT="30",
    )  # fmt: skip
    record = tmp_path / "slow-upload.xml"
    record.write_text(RECORD.format(title="slow"), encoding="utf-8")
    try:
        cluster.worker("slow")
        done = cluster.cli(
            *enqueue_arguments(record, "slow-1", "--destination", "cdcs"),
            "--wait", "--json", "--timeout", "90",
        )  # fmt: skip
    finally:
        cluster.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["satisfied"] is True
    assert [r["title"] for r in slow_cdcs.records.values()] == ["slow-upload (slow-1)"]
    assert len(slow_cdcs.requests_to("POST /rest/data/")) == 1


def test_of_two_concurrent_retries_exactly_one_is_accepted(
    app: Any, record: Path, export_log: Path
) -> None:
    from tasks.jobs import get_job, retry_failed

    for _ in range(5):
        context = make_context(record, export_log, alpha="fail-first:1")
        job = enqueue(app, context, destinations=["alpha"]).wait(timeout=30)
        assert not job.satisfied
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def retry(
            job_id: str = job.id, start: threading.Barrier = start, outcomes: list[str] = outcomes
        ) -> None:
            start.wait()
            try:
                retry_failed(job_id, app=app)
                outcomes.append("accepted")
            except ExportRequestError as error:
                outcomes.append(str(error))

        threads = [threading.Thread(target=retry) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert outcomes.count("accepted") == 1, outcomes
        refused = next(outcome for outcome in outcomes if outcome != "accepted")
        assert f"job {job.id} is already being retried" in refused
        final = get_job(job.id, app=app).wait(timeout=30)
        assert final.satisfied and final.runs == 2
        runs = [line for line in read_log(export_log) if line["session"] == context[
            "session_identifier"]]  # fmt: skip
        assert [line["outcome"] for line in runs] == ["failure", "success"]


def test_the_losing_cli_retry_exits_2_saying_it_is_already_being_retried(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="sleep:2")
    job = enqueue(app, context, destinations=["alpha"]).wait(timeout=30)
    assert job.satisfied
    # --force: alpha succeeded, and the export ledger would report it without exporting.
    retries = [nx_export("retry", job.id, "--destination", "alpha", "--force") for _ in range(2)]
    outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in retries]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    refusal = next(err for code, err in outcomes if code == 2)
    assert f"job {job.id} is already being retried" in refusal
    assert "Traceback" not in refusal
    final = job.refresh().wait(timeout=30)
    assert final.runs == 2
    assert len(read_log(export_log)) == 2


def test_a_redelivered_export_record_gives_the_same_job(
    app: Any, record: Path, export_log: Path
) -> None:
    from tasks.jobs import get_job

    context = make_context(record, export_log)
    kwargs = {"context": context, "destinations": ["alpha", "beta"]}
    task_id = str(uuid.uuid4())
    first = app.send_task("export.record", kwargs=kwargs, task_id=task_id)
    first_job = first.get(timeout=30)["job_id"]
    first.forget()
    # The same message again, as Redis hands it out after its worker died.
    second = app.send_task("export.record", kwargs=kwargs, task_id=task_id).get(timeout=30)
    assert second["job_id"] == first_job
    job = get_job(first_job, app=app).wait(timeout=30)
    assert job.satisfied and job.runs == 1
    assert sorted(line["name"] for line in read_log(export_log)) == ["alpha", "beta"]


def test_the_same_job_key_returns_the_existing_job(
    app: Any, record: Path, export_log: Path
) -> None:
    key = f"lims-session-{uuid.uuid4()}"
    first = enqueue(app, make_context(record, export_log), destinations=["alpha"], job_key=key)
    again = enqueue(app, make_context(record, export_log), destinations=["alpha"], job_key=key)
    assert again.id == first.id
    assert (first.existing, again.existing) == (False, True)
    by_task = app.send_task(
        "export.record",
        kwargs={"context": make_context(record, export_log), "destinations": ["alpha"],
                "job_key": key},
    ).get(timeout=30)  # fmt: skip
    assert by_task["job_id"] == first.id
    assert first.wait(timeout=30).satisfied
    assert len(read_log(export_log)) == 1
    other = enqueue(app, make_context(record, export_log), destinations=["alpha"])
    assert other.id != first.id and not other.existing


def test_enqueue_with_a_job_key_prints_the_same_job_twice(app: Any, record: Path) -> None:
    key = f"cli-{uuid.uuid4()}"
    arguments = [
        "enqueue", str(record), "--session-id", f"key-{key}", "--instrument",
        "FEI-Titan-TEM-635816", "--start", "2026-03-04T09:00:00", "--end",
        "2026-03-04T10:00:00", "--destination", "alpha", "--job-key", key, "--json",
    ]  # fmt: skip
    ids = []
    for _ in range(2):
        done = nx_export(*arguments)
        out, err = done.communicate(timeout=60)
        assert done.returncode == 0, err
        ids.append(json.loads(out)["job_id"])
    assert ids[0] == ids[1]
