"""LabArchives gets each page and entry once, across retries, waits, redeliveries and load.

Real worker processes, the test Redis and a fake LabArchives on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from destinations.toolkit.rate_limit import RedisCallLimiter
from tests.exactly_once_support import (
    call_names,
    export_call_names,
    labarchives_env,
    limiter_key,
    start_worker,
    write_record,
)
from tests.samples import make_context
from tests.support import RedisServer, wait_for
from worker.sandbox import FakeLabArchives

ERROR_4000 = (
    "<error><error-code>4000</error-code>"
    "<error-description>entry refused</error-description></error>"
)


@pytest.fixture
def fake() -> Iterator[FakeLabArchives]:
    with FakeLabArchives() as fake:
        yield fake
    assert fake.double_slash_paths == []


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def pages(fake: FakeLabArchives) -> list[dict[str, Any]]:
    return [n for n in fake.nodes.values() if not n["is_folder"]]


def kinds(fake: FakeLabArchives, pid: str) -> list[str]:
    return [e["part_type"] for e in fake.entries if e["pid"] == pid]


def enqueue(app: Any, record: Path, **overrides: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export({**make_context(record), **overrides}, destinations=["labarchives"],
                          app=app)  # fmt: skip


def test_a_retry_that_waited_for_call_slots_completes_the_same_page(
    app: Any, redis_server: RedisServer, client: redis.Redis, fake: FakeLabArchives,
    record: Path, tmp_path: Path,
) -> None:  # fmt: skip
    env = labarchives_env(
        redis_server.url, fake,
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0.2", NX_LABARCHIVES_MAX_CALL_WAIT="0.5",
    )  # fmt: skip
    # The page is created, then the entry is refused for now: retry in two seconds.
    fake.fail_next(429, on="add_entry", retry_after="2")
    worker = start_worker(env, tmp_path, "la-deferred")
    try:
        job = enqueue(app, record)
        wait_for(lambda: [r for r in fake.requests_to("add_entry") if r.status == 429], 30)
        # Other workers take the next seconds of calls: the retry has to wait for slots.
        RedisCallLimiter(client, limiter_key(fake), 0.2, 0.5).reserve(30)
        done = job.wait(timeout=90)
    finally:
        worker.stop()
    assert done.satisfied, done.destinations["labarchives"].error
    (page,) = pages(fake)
    assert kinds(fake, page["tree_id"]) == ["text entry", "Attachment"]
    assert any("waiting for a call slot" in str(h.get("error")) for h in
               done.destinations["labarchives"].history)  # fmt: skip


def test_the_inbox_gets_the_entry_once_when_the_attachment_is_retried(
    app: Any, redis_server: RedisServer, fake: FakeLabArchives, record: Path, tmp_path: Path
) -> None:
    fake.fail_next(503, on="add_attachment")
    worker = start_worker(
        labarchives_env(redis_server.url, fake, NX_LABARCHIVES_NOTEBOOK_ID=""), tmp_path, "inbox"
    )
    try:
        done = enqueue(app, record).wait(timeout=60)
    finally:
        worker.stop()
    assert done.satisfied, done.destinations["labarchives"].error
    assert fake.nodes == {}
    assert [(e["pid"], e["part_type"]) for e in fake.entries] == [
        ("0", "text entry"), ("0", "Attachment"),
    ]
    assert call_names(fake).count("add_attachment") == 2


def test_waiting_for_call_slots_uses_up_no_attempt(
    app: Any, redis_server: RedisServer, client: redis.Redis, fake: FakeLabArchives,
    record: Path, tmp_path: Path,
) -> None:  # fmt: skip
    env = labarchives_env(
        redis_server.url, fake,
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0.2", NX_LABARCHIVES_MAX_CALL_WAIT="0.5",
        NX_EXPORT_LABARCHIVES_MAX_ATTEMPTS="2", NX_EXPORT_LABARCHIVES_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    worker = start_worker(env, tmp_path, "la-waits")
    try:
        # A backlog of other records: about eight seconds of calls before this job's turn.
        RedisCallLimiter(client, limiter_key(fake), 0.2, 0.5).reserve(40)
        done = enqueue(app, record).wait(timeout=90)
    finally:
        worker.stop()
    status = done.destinations["labarchives"]
    assert done.satisfied, status.error
    waits = [h for h in status.history if "waiting for a call slot" in str(h.get("error"))]
    assert len(waits) >= 2  # more waits than attempts allowed: none of them counted
    (page,) = pages(fake)
    assert kinds(fake, page["tree_id"]) == ["text entry", "Attachment"]


def test_a_job_that_ends_while_waiting_hands_its_slots_back(
    app: Any, redis_server: RedisServer, client: redis.Redis, fake: FakeLabArchives,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = labarchives_env(
        redis_server.url, fake,
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0.2", NX_LABARCHIVES_MAX_CALL_WAIT="0.5",
        NX_EXPORT_LABARCHIVES_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    limiter = RedisCallLimiter(client, limiter_key(fake), 0.2, 0.5)
    record = write_record(tmp_path / "records" / "gone.xml")
    worker = start_worker(env, tmp_path, "la-gone")
    try:
        backlog = limiter.reserve(40)
        job = enqueue(app, record)
        wait_for(lambda: job.refresh().destinations["labarchives"].state == "RETRY", 30)
        record.unlink()  # the job fails at its next turn, without calling the service
        done = job.wait(timeout=60)
    finally:
        worker.stop()
    assert "cannot read the record file" in str(done.destinations["labarchives"].error)
    assert client.exists(f"{limiter_key(fake)}:ticket:{job.id}") == 0
    # Once the backlog is gone too, the service is idle: a new export does not wait.
    backlog.release()
    limiter.reserve(3, "after-the-backlog").release()


def test_a_backlog_drains_without_a_failed_job(
    app: Any, redis_server: RedisServer, fake: FakeLabArchives, tmp_path: Path
) -> None:
    env = labarchives_env(
        redis_server.url, fake,
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0.05", NX_LABARCHIVES_MAX_CALL_WAIT="0.3",
        NX_EXPORT_LABARCHIVES_MAX_ATTEMPTS="2", NX_EXPORT_LABARCHIVES_BACKOFF_MAX_SECONDS="0.5",
    )  # fmt: skip
    workers = [start_worker(env, tmp_path, f"la-backlog-{n}") for n in range(2)]
    try:
        records = [write_record(tmp_path / "records" / f"r{n}.xml") for n in range(40)]
        jobs = [enqueue(app, path) for path in records]
        done = [job.wait(timeout=180) for job in jobs]
    finally:
        for worker in workers:
            worker.stop()
    failed = [job.destinations["labarchives"].error for job in done if not job.satisfied]
    assert failed == []
    assert len(pages(fake)) == 40
    assert sorted(e["part_type"] for e in fake.entries) == ["Attachment"] * 40 + ["text entry"] * 40


def test_a_redelivered_export_resumes_from_its_call_log(
    app: Any, redis_server: RedisServer, fake: FakeLabArchives, record: Path, tmp_path: Path
) -> None:
    # The killed worker's call could be answered for 5 s: the survivor looks up after that.
    env = labarchives_env(redis_server.url, fake, NX_EXPORT_VISIBILITY_TIMEOUT="4",
                          NX_HTTP_TOTAL_TIMEOUT="5")  # fmt: skip
    # The entry is created while its worker dies waiting for the answer.
    fake.stall_next(3.0, on="add_entry")
    first = start_worker(env, tmp_path, "la-doomed")
    job = enqueue(app, record)
    wait_for(lambda: fake.requests_to("add_entry"), 30)
    first.kill()
    killed_at = len(fake.requests)
    second = start_worker(env, tmp_path, "la-survivor")
    try:
        done = job.wait(timeout=120)
    finally:
        second.stop()
    assert done.satisfied, done.destinations["labarchives"].error
    (page,) = pages(fake)
    assert kinds(fake, page["tree_id"]) == ["text entry", "Attachment"]
    after = export_call_names(fake, killed_at)
    # The page came from the call log: no search of the notebook's tree.
    assert "get_tree_level" not in after and "insert_node" not in after
    assert after[-1] == "add_attachment"


def test_nx_export_retry_reuses_the_page_of_the_first_run(
    app: Any, redis_server: RedisServer, fake: FakeLabArchives, record: Path, tmp_path: Path
) -> None:
    from tasks.jobs import retry_failed

    fake.fail_next(400, on="add_entry", body=ERROR_4000, content_type="text/xml")
    worker = start_worker(labarchives_env(redis_server.url, fake), tmp_path, "la-rerun")
    try:
        first = enqueue(app, record).wait(timeout=60)
        assert not first.satisfied
        before = len(fake.requests)
        again = retry_failed(first.id, app=app).wait(timeout=60)
    finally:
        worker.stop()
    assert again.satisfied, again.destinations["labarchives"].error
    (page,) = pages(fake)
    assert kinds(fake, page["tree_id"]) == ["text entry", "Attachment"]
    second_run = call_names(fake, before)
    assert "get_tree_level" not in second_run and "insert_node" not in second_run
