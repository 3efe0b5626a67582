"""The export ledger: a session is exported to a service once, whatever enqueued it and when.

Real worker processes, the test Redis and fake CDCS and eLabFTW services: the
sessions go out with ``nx-export enqueue``, then come back through ``backfill``,
``enqueue_export``, a bare ``send_task("export.record")`` and ``retry``, before
and after their job records expired.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.exactly_once_support import service_env, start_worker
from tests.samples import session_record_text
from tests.support import RedisServer, WorkerProcess, nx_export
from worker.sandbox import FakeCDCS, FakeELabFTW

BOTH = ("--destination", "cdcs", "--destination", "elabftw")


@pytest.fixture
def services(
    app: Any, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[FakeCDCS, FakeELabFTW, WorkerProcess]]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        worker = start_worker(service_env(redis_server.url, cdcs, elab), tmp_path, "ledger")
        try:
            yield cdcs, elab, worker
        finally:
            worker.stop()


def write_sessions(folder: Path, count: int = 2) -> list[tuple[str, Path]]:
    """``count`` NexusLIMS records of fresh sessions, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    sessions = []
    for index in range(count):
        session = f"ledger-{os.getpid()}-{uuid.uuid4().hex[:8]}-{index}"
        path = folder / f"{session}.xml"
        path.write_text(session_record_text(session), encoding="utf-8")
        sessions.append((session, path))
    return sessions


def enqueue_cli(record: Path, *extra: str) -> str:
    done = nx_export("enqueue", str(record), *BOTH, "--wait", "--json", *extra, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(json.loads(done.stdout)["id"])


def backfill(folder: Path, *extra: str) -> dict[str, Any]:
    done = nx_export("backfill", str(folder), "--destination", "elabftw", "--json", *extra,
                     timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def result_of(app: Any, job_id: str, name: str) -> dict[str, Any]:
    from tasks.runtime import job_store

    record = job_store(app).require(job_id)
    return dict(record.destinations[name].result or {})


def wait_all(app: Any, report: dict[str, Any]) -> None:
    from tasks.jobs import get_job

    for entry in report["enqueued"]:
        assert get_job(entry["job_id"], app=app).wait(timeout=90).satisfied


def expire_jobs(app: Any, job_ids: list[str]) -> None:
    """What the retention period does to these jobs: every key of theirs gone."""
    client = app.backend.client
    doomed = set(job_ids)
    for key in client.scan_iter("nxexport:key:*"):
        if (client.get(key) or b"").decode() in doomed:
            client.delete(key)
    for job_id in job_ids:
        for key in client.scan_iter(f"nxexport:*{job_id}*"):
            client.delete(key)
        for key in client.scan_iter("nxexport:idx:*"):
            if client.type(key) == b"zset":
                client.zrem(key, job_id)
        client.zrem("nxexport:jobs", job_id)
        assert client.exists(f"nxexport:job:{job_id}") == 0


def test_enqueue_then_backfill_exports_each_session_once(
    app: Any, services: tuple[FakeCDCS, FakeELabFTW, WorkerProcess], tmp_path: Path
) -> None:
    cdcs, elab, _ = services
    sessions = write_sessions(tmp_path / "records")
    jobs = [enqueue_cli(path) for _, path in sessions]
    assert len(cdcs.records) == 2 and len(elab.experiments) == 2

    done = backfill(tmp_path / "records")
    wait_all(app, done)
    assert len(elab.experiments) == 2 and len(cdcs.records) == 2
    assert done["enqueued"] == [] and len(done["already_exported"]) == 2

    planned = backfill(tmp_path / "records", "--dry-run")
    assert planned["enqueued"] == []
    assert sorted(e["session"] for e in planned["already_exported"]) == sorted(
        s for s, _ in sessions
    )
    for entry in planned["already_exported"]:
        (held,) = entry["destinations"].values()
        assert held["job_id"] in jobs and str(held["record_id"]) in map(str, elab.experiments)
    text = nx_export("backfill", str(tmp_path / "records"), "--destination", "elabftw",
                     "--dry-run")  # fmt: skip
    assert "already exported: 2" in text.stdout, text.stdout

    # Backfill without its pre-check: the destination tasks find the ledger themselves.
    from worker import enqueue_export
    from worker.record_input import context_from_record

    _, path = sessions[0]
    again = enqueue_export(context_from_record(path, {}), destinations=["cdcs", "elabftw"],
                           app=app, job_key=f"other-{uuid.uuid4()}").wait(timeout=90)  # fmt: skip
    assert again.satisfied
    result = result_of(app, again.id, "elabftw")
    assert result["metadata"]["already_exported"] is True
    assert result["metadata"]["exported_by_job"] == jobs[0]
    assert result["record_id"] == result_of(app, jobs[0], "elabftw")["record_id"]
    assert result_of(app, again.id, "cdcs")["record_url"] == result_of(app, jobs[0], "cdcs")[
        "record_url"
    ]
    assert len(elab.experiments) == 2 and len(cdcs.records) == 2


def test_after_the_retention_nothing_is_exported_twice_unless_forced(
    app: Any, services: tuple[FakeCDCS, FakeELabFTW, WorkerProcess], tmp_path: Path
) -> None:
    cdcs, elab, _ = services
    sessions = write_sessions(tmp_path / "records")
    jobs = [enqueue_cli(path) for _, path in sessions]
    expire_jobs(app, jobs)
    calls_before = len(elab.requests)

    wait_all(app, backfill(tmp_path / "records"))
    from worker.record_input import context_from_record

    session, path = sessions[1]
    message = context_from_record(path, {})
    both = ["cdcs", "elabftw"]
    job_id = app.send_task(
        "export.record", kwargs={"context": message, "destinations": both}
    ).get(timeout=30)["job_id"]
    from tasks.jobs import get_job

    assert get_job(job_id, app=app).wait(timeout=90).satisfied
    assert result_of(app, job_id, "elabftw")["metadata"]["already_exported"] is True
    assert len(elab.experiments) == 2 and len(cdcs.records) == 2
    assert len(elab.requests) == calls_before  # not even a search

    # On purpose: --force, a forced send_task, and once an entry is forgotten.
    forced = backfill(tmp_path / "records", "--force")
    assert len(forced["enqueued"]) == 2 and forced["already_exported"] == []
    wait_all(app, forced)
    assert len(elab.experiments) == 4
    job_id = app.send_task(
        "export.record", kwargs={"context": message, "destinations": ["cdcs"], "force": True}
    ).get(timeout=30)["job_id"]
    assert get_job(job_id, app=app).wait(timeout=90).satisfied
    assert "already_exported" not in result_of(app, job_id, "cdcs")["metadata"]
    done = nx_export("forget", session, "--destination", "elabftw", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forgotten"]["elabftw"]["record_id"] is not None
    again = backfill(tmp_path / "records")
    assert [e["session"] for e in again["enqueued"]] == [session]
    wait_all(app, again)
    assert len(elab.experiments) == 5


def test_a_changed_record_is_a_new_version_and_retry_force_exports_again(
    app: Any, services: tuple[FakeCDCS, FakeELabFTW, WorkerProcess], tmp_path: Path
) -> None:
    from tasks.jobs import get_job, retry_failed

    cdcs, elab, _ = services
    assert not elab.experiments
    ((session, path),) = write_sessions(tmp_path / "records", 1)
    first = enqueue_cli(path)
    old_id = result_of(app, first, "cdcs")["record_id"]

    path.write_text(session_record_text(session, title="Rebuilt"), encoding="utf-8")
    second = enqueue_cli(path)
    result = result_of(app, second, "cdcs")
    assert "already_exported" not in result["metadata"]
    assert result["record_id"] != old_id and result["metadata"]["supersedes"] == old_id
    assert "Rebuilt" in cdcs.records[str(result["record_id"])]["xml_content"]
    assert len(cdcs.records) == 2

    # The same record again is reported; `enqueue --force` exports it again.
    third = enqueue_cli(path)
    assert result_of(app, third, "cdcs")["metadata"]["exported_by_job"] == second
    assert result_of(app, third, "elabftw")["metadata"]["already_exported"] is True
    fourth = enqueue_cli(path, "--force")
    assert "already_exported" not in result_of(app, fourth, "cdcs")["metadata"]
    assert len(cdcs.records) == 3

    # A retry of a destination the ledger holds reports it; with force it exports again.
    retried = retry_failed(second, ["cdcs"], app=app).wait(timeout=90)
    assert result_of(app, retried.id, "cdcs")["metadata"]["already_exported"] is True
    forced = retry_failed(second, ["cdcs"], app=app, force=True).wait(timeout=90)
    assert forced.satisfied and "already_exported" not in result_of(app, second, "cdcs")["metadata"]
    assert get_job(second, app=app).runs == 3
    # The forced retry ran the destination, which resumed from the job's own call log.
    assert result_of(app, second, "cdcs")["metadata"]["found_existing"] is True
    assert len(cdcs.records) == 3
