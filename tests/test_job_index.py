"""The job indexes and export counters in a real Redis: how jobs move, retention, paging."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tasks.query import JobQuery, QueryError, find_jobs
from tasks.store import counters as job_metrics
from tasks.store import index as job_index
from tasks.store.job_store import JobStore
from tasks.store.keys import JOB_INDEX, job_key
from tasks.store.model import StoredJob
from tests.samples import make_context
from tests.support import StartRedis, wait_for

RETENTION = 600


@pytest.fixture
def client(start_redis: StartRedis) -> redis.Redis:
    """A Redis of its own: these tests write jobs no worker will run."""
    return start_redis().client()


def new_job(store: JobStore, destinations: list[str], **context: str) -> str:
    job_id = str(uuid.uuid4())
    message = {"session_identifier": f"s-{job_id[:8]}", "instrument_pid": "TEM-1", **context}
    store.create(StoredJob(id=job_id, destinations=destinations, context=message))
    return job_id


def states_of(client: redis.Redis, job_id: str) -> list[str]:
    return [s for s in job_index.STATES if client.zscore(job_index.state_key(s), job_id)]


def test_a_job_moves_between_state_sets_as_it_runs_finishes_and_is_retried(
    client: redis.Redis,
) -> None:
    store = JobStore(client, RETENTION)
    job_id = new_job(store, ["alpha"])
    assert states_of(client, job_id) == ["queued"]
    store.start_attempt(job_id, "alpha", "task-1")
    assert states_of(client, job_id) == ["running"]
    store.record_result(job_id, "alpha", {"success": False, "error_message": "refused"})
    assert client.zscore(job_index.destination_failure_key("alpha"), job_id)
    store.mark_finished(job_id, False, None)
    assert states_of(client, job_id) == ["finished-failed"]
    # A redelivered attempt after the finish does not make the job look running.
    store.start_attempt(job_id, "alpha", "task-1")
    assert states_of(client, job_id) == ["finished-failed"]

    store.begin_run(job_id, ["alpha"], "finish-of-run-2", expected_runs=1)  # as retry does
    assert states_of(client, job_id) == ["running"]
    store.start_attempt(job_id, "alpha", "task-2")
    store.record_result(job_id, "alpha", {"success": True})
    assert client.zscore(job_index.destination_failure_key("alpha"), job_id) is None
    store.mark_finished(job_id, True, "finish-of-run-2")
    assert states_of(client, job_id) == ["finished-ok"]

    counts = job_metrics.read(client)
    assert counts.exports == {("alpha", "failure"): 1, ("alpha", "success"): 1}
    assert counts.durations["alpha"].count == 2
    assert counts.last_success["alpha"] <= time.time()
    # The attempt's start time is dropped once its result is counted.
    assert not [f for f in client.hkeys(job_key(job_id)) if f.startswith(b"attempt_started:")]


def test_indexes_follow_the_retention_and_expire(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    old_id = str(uuid.uuid4())
    with client.pipeline() as pipe:
        long_ago = time.time() - RETENTION - 60
        pipe.zadd(JOB_INDEX, {old_id: long_ago})
        context = {"instrument_pid": "TEM-1"}
        job_index.on_create(pipe, old_id, context, ["alpha"], long_ago, RETENTION)
        pipe.execute()
    assert client.zscore(job_index.state_key("queued"), old_id)
    new_id = new_job(store, ["alpha"])
    for key in (job_index.state_key("queued"), job_index.destination_key("alpha"),
                job_index.instrument_key("TEM-1")):  # fmt: skip
        assert client.zscore(key, old_id) is None, key  # trimmed by the next write
        assert client.zscore(key, new_id) is not None, key
        assert 0 < client.ttl(key) <= RETENTION, key
    session = job_index.session_key(f"s-{new_id[:8]}")
    assert 0 < client.ttl(session) <= RETENTION
    # Metrics hashes are counters: a few fields per destination, never per job.
    for key in client.scan_iter("nxexport:metrics:*"):
        assert all(new_id.encode() not in field for field in client.hkeys(key))


def test_jobs_written_before_the_indexes_are_indexed_once(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    failed, running = new_job(store, ["alpha", "beta"]), new_job(store, ["alpha"])
    store.start_attempt(failed, "alpha", "t1")
    store.record_result(failed, "alpha", {"success": False, "error_message": "refused"})
    store.mark_finished(failed, False, None)
    store.start_attempt(running, "alpha", "t2")
    client.delete(*client.keys("nxexport:idx:*"))  # as an older version left them

    assert job_index.ensure_indexed(store) == 2
    assert states_of(client, failed) == ["finished-failed"]
    assert states_of(client, running) == ["running"]
    assert client.zscore(job_index.destination_failure_key("alpha"), failed)
    assert client.zscore(job_index.session_key(f"s-{failed[:8]}"), failed)
    assert [job.id for job in find_jobs(JobQuery(state="failed"), store=store).jobs] == [failed]
    assert job_index.ensure_indexed(store) == 0


def test_pages_cover_every_match_once_even_with_equal_times(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    ids = [new_job(store, ["alpha"]) for _ in range(12)]
    now = time.time()
    # Twenty more jobs created at the very same instant.
    with client.pipeline() as pipe:
        for _ in range(20):
            job_id = str(uuid.uuid4())
            ids.append(job_id)
            pipe.hset(job_key(job_id), "job", '{"strategy": "all", "destinations": ["alpha"]}')
            pipe.expire(job_key(job_id), RETENTION)
            pipe.zadd(JOB_INDEX, {job_id: now})
            job_index.on_create(pipe, job_id, {}, ["alpha"], now, RETENTION)
        pipe.execute()
    for query in (JobQuery(limit=7), JobQuery(state="queued", limit=5),
                  JobQuery(destination="alpha", limit=3)):  # fmt: skip
        seen: list[str] = []
        while True:
            page = find_jobs(query, store=store)
            seen += [job.id for job in page.jobs]
            if page.next_cursor is None:
                break
            query = JobQuery(**{**query.__dict__, "cursor": page.next_cursor})
        assert sorted(seen) == sorted(ids), query
        assert len(seen) == len(ids)
    assert find_jobs(JobQuery(state="running"), store=store).jobs == []
    with pytest.raises(QueryError):
        JobQuery(cursor="not-a-cursor")


def test_running_and_finished_jobs_are_found_by_state_through_the_worker(
    app: Any, record: Path
) -> None:
    from worker import enqueue_export

    since = datetime.now(UTC)
    job = enqueue_export(make_context(record, alpha="sleep:2"), destinations=["alpha"], app=app)

    def ids(state: str) -> set[str]:
        return {j.id for j in find_jobs(JobQuery(state=state, since=since), app=app).jobs}

    wait_for(lambda: job.id in ids("running"))
    assert job.id not in ids("finished")
    job.wait(timeout=30)
    assert job.id in ids("finished") and job.id not in ids("running")
    assert job.id not in ids("failed")


@pytest.mark.parametrize(
    ("strategy", "results", "settled_after"),
    [
        ("all", [("alpha", False), ("beta", True), ("gamma", True)], 3),
        ("best_effort", [("gamma", True), ("alpha", False), ("beta", False)], 3),
        ("first_success", [("alpha", False), ("beta", True)], 2),
    ],
)
def test_a_job_is_settled_once_its_strategy_needs_no_more_outcomes(
    client: redis.Redis, strategy: str, results: list[tuple[str, bool]], settled_after: int
) -> None:
    from tasks.store.keys import SETTLED

    store = JobStore(client, RETENTION)
    job_id = str(uuid.uuid4())
    store.create(StoredJob(id=job_id, strategy=strategy, destinations=["alpha", "beta", "gamma"],
                           context={"session_identifier": "s-1"}))  # fmt: skip
    for stored, (name, success) in enumerate(results, start=1):
        store.start_attempt(job_id, name, f"task-{name}")
        assert store.record_result(job_id, name, {"success": success})
        settled = client.zscore(SETTLED, job_id) is not None
        assert settled == (stored >= settled_after), f"after {stored} results ({name})"


def test_a_result_for_an_expired_job_writes_nothing(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    assert not store.record_result("gone", "alpha", {"success": True})
    assert client.exists(job_key("gone")) == 0
