"""CDCS and eLabFTW: a retry resumes from the call log, and never adopts another session's record.

Real worker processes, the test Redis and fake services on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.exactly_once_support import service_env, start_worker, write_record
from tests.samples import make_context
from tests.support import RedisServer, wait_for
from worker.sandbox import FakeCDCS, FakeELabFTW


@pytest.fixture
def cdcs() -> Iterator[FakeCDCS]:
    with FakeCDCS() as fake:
        yield fake
    assert fake.double_slash_paths == []


@pytest.fixture
def elab() -> Iterator[FakeELabFTW]:
    with FakeELabFTW() as fake:
        yield fake
    assert fake.double_slash_paths == []


def enqueue(app: Any, record: Path, names: list[str], **overrides: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export({**make_context(record), **overrides}, destinations=names, app=app)


@pytest.mark.parametrize("kind", ["identical files", "nexuslims records"])
def test_a_retry_never_adopts_another_sessions_record(
    app: Any, redis_server: RedisServer, cdcs: FakeCDCS, tmp_path: Path, kind: str
) -> None:
    sessions = ["2026-03-04_titan_0001", "2026-03-05_titan_0002"]
    files = []
    for session, folder in zip(sessions, ("a", "b"), strict=True):
        owner = session if kind == "nexuslims records" else None
        files.append(write_record(tmp_path / folder / "record.xml", "Lamella", owner))
    worker = start_worker(service_env(redis_server.url, cdcs), tmp_path, "cdcs-names")
    try:
        first = enqueue(app, files[0], ["cdcs"], session_identifier=sessions[0]).wait(timeout=60)
        # The second session's upload is refused once, so its retry looks for an earlier one.
        cdcs.fail_next(503, on="POST /rest/data/")
        second = enqueue(app, files[1], ["cdcs"], session_identifier=sessions[1]).wait(timeout=60)
    finally:
        worker.stop()
    assert first.satisfied and second.satisfied
    ids = [job.destinations["cdcs"].record_id for job in (first, second)]
    assert ids[0] != ids[1]
    assert sorted(cdcs.records) == sorted(ids)
    assert cdcs.records[str(ids[1])]["xml_content"] == files[1].read_text()


def test_a_record_rebuilt_before_the_retry_is_uploaded(
    app: Any, redis_server: RedisServer, cdcs: FakeCDCS, tmp_path: Path
) -> None:
    record = write_record(tmp_path / "record.xml", "First build")
    # The upload works; assigning it to the workspace fails for two seconds.
    cdcs.fail_next(429, on="/assign/", retry_after="2")
    worker = start_worker(service_env(redis_server.url, cdcs), tmp_path, "cdcs-rebuilt")
    try:
        job = enqueue(app, record, ["cdcs"])
        wait_for(lambda: [r for r in cdcs.requests_to("/assign/") if r.status == 429], 30)
        write_record(record, "Second build")  # NexusLIMS rebuilt the record meanwhile
        done = job.wait(timeout=60)
    finally:
        worker.stop()
    status = done.destinations["cdcs"]
    assert done.satisfied, status.error
    uploaded = cdcs.records[str(status.record_id)]
    assert "Second build" in uploaded["xml_content"]
    assert uploaded["workspace"] == "ws-public"
    (older,) = [r for r in cdcs.records.values() if r["id"] != status.record_id]
    assert "First build" in older["xml_content"]


def test_a_cdcs_retry_resumes_from_the_call_log_without_searching(
    app: Any, redis_server: RedisServer, cdcs: FakeCDCS, record: Path, tmp_path: Path
) -> None:
    cdcs.fail_next(503, on="/assign/")
    worker = start_worker(service_env(redis_server.url, cdcs), tmp_path, "cdcs-resume")
    try:
        done = enqueue(app, record, ["cdcs"]).wait(timeout=60)
    finally:
        worker.stop()
    assert done.satisfied, done.destinations["cdcs"].error
    (uploaded,) = cdcs.records.values()
    assert uploaded["id"] == done.destinations["cdcs"].record_id
    assert uploaded["workspace"] == "ws-public"
    assert cdcs.requests_to("/rest/data/query/") == []
    assert len(cdcs.requests_to("/assign/")) == 2


def test_an_elabftw_retry_resumes_from_the_call_log_without_searching(
    app: Any, redis_server: RedisServer, elab: FakeELabFTW, record: Path, tmp_path: Path
) -> None:
    elab.fail_next(503, on="/uploads")
    worker = start_worker(service_env(redis_server.url, elab=elab), tmp_path, "elab-resume")
    try:
        done = enqueue(app, record, ["elabftw"]).wait(timeout=60)
    finally:
        worker.stop()
    assert done.satisfied, done.destinations["elabftw"].error
    (experiment,) = elab.experiments.values()
    assert [u["comment"] for u in experiment["uploads"]] == ["NexusLIMS XML record"]
    # The experiment came from the call log: no search. (The upload that failed is
    # checked for on the experiment before it is sent again.)
    assert [r for r in elab.requests if "q" in r.query] == []
    assert [r.path for r in elab.requests if r.method == "GET" and not r.query] == [
        "/api/v2/experiments/1"
    ]
    assert len(elab.requests_to("POST /api/v2/experiments")) == 3  # create, upload twice
