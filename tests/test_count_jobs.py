"""``count_jobs``: how many jobs a filter finds, counted inside Redis, equals what paging finds."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
import redis

from tasks.query import JobQuery, count_jobs, find_jobs
from tasks.store.job_store import JobStore
from tasks.store.model import StoredJob
from tests.support import StartRedis

RETENTION = 600


@pytest.fixture
def client(start_redis: StartRedis) -> redis.Redis:
    """A Redis of its own: these tests write jobs no worker runs."""
    return start_redis().client()


def new_job(store: JobStore, instrument: str, outcomes: dict[str, bool] | None) -> str:
    """A job of alpha and beta: queued (``outcomes`` None), or finished with these outcomes."""
    job_id = str(uuid.uuid4())
    store.create(StoredJob(id=job_id, destinations=["alpha", "beta"],
                           context={"session_identifier": f"s-{job_id[:8]}",
                                    "instrument_pid": instrument}))  # fmt: skip
    if outcomes is not None:
        for name, success in outcomes.items():
            store.start_attempt(job_id, name, f"task-{name}")
            store.record_result(job_id, name, {"success": success, "error_message": "no"})
        store.mark_finished(job_id, all(outcomes.values()), None)
    return job_id


def paged(query: JobQuery, store: JobStore) -> list[str]:
    found: list[str] = []
    while True:
        page = find_jobs(query, store=store)
        found += [job.id for job in page.jobs]
        if page.next_cursor is None:
            return found
        query = JobQuery(**{**query.__dict__, "cursor": page.next_cursor})


def test_a_count_is_what_paging_through_the_filter_finds(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    for index in range(30):
        instrument = "TEM-1" if index % 2 else "TEM-2"
        outcomes = [None, {"alpha": True, "beta": True}, {"alpha": False, "beta": True},
                    {"alpha": True, "beta": False}, {"alpha": False, "beta": False}][index % 5]
        new_job(store, instrument, outcomes)
        if index == 14:
            time.sleep(0.01)
            middle = datetime.now(UTC)
    # A failed job being retried is still in alpha's failure index, but not finished.
    retried = new_job(store, "TEM-1", {"alpha": False, "beta": True})
    store.begin_run(retried, ["alpha"], "finish-2", expected_runs=1)

    queries = [
        JobQuery(state=state, destination=destination, instrument=instrument, since=since,
                 limit=7)
        for state in ("all", "failed", "finished", "running", "queued")
        for destination in (None, "alpha", "beta")
        for instrument in (None, "TEM-1")
        for since in (None, middle)
    ]  # fmt: skip
    for query in queries:
        assert count_jobs(query, store=store) == len(paged(query, store)), query
    assert count_jobs(JobQuery(state="failed", destination="alpha"), store=store) == 12
    assert not list(client.scan_iter("nxexport:idx:count:*"))  # no scratch set left behind
