"""Fencing: a copy of an export that lost its lease writes nothing and calls nothing more.

A worker paused (SIGSTOP, a VM pause) or cut off from Redis past its lease's
lifetime finds, when it resumes, another copy exporting in its place: every
write it makes compares its lease token in the script that writes, and every
call it makes first asks whether it still holds the lease.
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from destinations.contract import ExportContext
from destinations.errors import AnswerPendingError, LeaseLostError
from destinations.toolkit.resume import SENT, Resume, sent_mark
from tasks.store.call_log import RedisCallLog
from tasks.store.job_store import JobStore
from tasks.store.keys import METRICS_EXPORTS, SETTLED, lease_key
from tasks.store.lease import Lease
from tasks.store.model import DestinationState, StoredJob
from tests.private_cluster import Cluster
from tests.samples import RECORD, make_context
from tests.support import StartRedis, wait_for
from worker.sandbox import FakeCDCS

RETENTION = 600


@pytest.fixture
def client(start_redis: StartRedis) -> redis.Redis:
    """A Redis of its own: these tests write jobs no worker runs."""
    return start_redis().client()


def _job(store: JobStore) -> str:
    job_id = str(uuid.uuid4())
    context = {"session_identifier": "s-1", "instrument_pid": "TEM-1"}
    store.create(StoredJob(id=job_id, destinations=["cdcs"], context=context))
    return job_id


def test_a_write_with_a_stale_token_changes_nothing(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    job_id = _job(store)
    stale = Lease(client, lease_key(job_id, "cdcs"), 30)
    assert stale.acquire()
    store.start_attempt(job_id, "cdcs", "task-1", lease=stale)
    # It expired while its worker was paused, and another copy took it.
    client.set(stale.key, "the copy that took over")
    before = {key: client.dump(key) for key in client.keys("*") if key != stale.key.encode()}
    result = {"success": True, "destination_name": "cdcs", "record_id": "stale"}
    with pytest.raises(LeaseLostError):
        store.record_result(job_id, "cdcs", result, lease=stale)
    with pytest.raises(LeaseLostError):
        store.start_attempt(job_id, "cdcs", "task-1", lease=stale)
    with pytest.raises(LeaseLostError):
        store.record_retry(job_id, "cdcs", "HTTP 503", 1.0, lease=stale)
    with pytest.raises(LeaseLostError):
        RedisCallLog(client, job_id, "cdcs", RETENTION, stale).record("record:abc", "stale")
    after = {key: client.dump(key) for key in client.keys("*") if key != stale.key.encode()}
    assert after == before, "a fenced-out copy changed the job, its indexes, metrics or log"
    entry = store.require(job_id).destinations["cdcs"]
    assert (entry.state, entry.attempts, entry.result) == (DestinationState.STARTED, 1, None)
    assert client.zscore(SETTLED, job_id) is None
    assert client.get(stale.key) == b"the copy that took over"
    stale.release()


def test_the_holder_writes_and_its_result_sent_again_is_stored_once(client: redis.Redis) -> None:
    store = JobStore(client, RETENTION)
    job_id = _job(store)
    lease = Lease(client, lease_key(job_id, "cdcs"), 30)
    assert lease.acquire()
    store.start_attempt(job_id, "cdcs", "task-1", lease=lease)
    RedisCallLog(client, job_id, "cdcs", RETENTION, lease).record("record:abc", "42")
    entry = store.require(job_id).destinations["cdcs"]
    entry.finish({"success": True, "destination_name": "cdcs", "record_id": "42"})
    assert store.record_result(job_id, "cdcs", entry.result or {}, entry, also=lease.release,
                               lease=lease)  # fmt: skip
    lease.released_by_pipeline()
    assert client.get(lease.key) is None
    # Redis went away before the answer came: the same write again is no lease lost.
    assert store.record_result(job_id, "cdcs", entry.result or {}, entry, lease=lease)
    stored = store.require(job_id).destinations["cdcs"]
    assert stored.succeeded and [h["outcome"] for h in stored.history] == ["success"]
    assert client.zscore(SETTLED, job_id) is not None
    assert client.hget(METRICS_EXPORTS, "cdcs|success") in (b"1", b"2")


def test_a_lease_whose_renewals_fail_for_longer_than_its_lifetime_is_lost(
    client: redis.Redis,
) -> None:
    lease = Lease(client, f"test:lease:{uuid.uuid4().hex}", 0.6)
    assert lease.acquire() and lease.still_held()
    # Redis unreachable (at once: no retries inside the client).
    lease.client = redis.Redis(port=1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))
    time.sleep(0.3)
    assert lease.still_held(), "one missed renewal is not a lost lease"
    wait_for(lambda: lease.lost, timeout=3)
    assert not lease.still_held()
    lease.client = client  # back: the renewer does not take it again
    time.sleep(0.5)
    assert not lease.still_held()


def test_a_resumed_copy_asks_redis_before_its_next_call(client: redis.Redis) -> None:
    lease = Lease(client, f"test:lease:{uuid.uuid4().hex}", 0.6)
    assert lease.acquire()
    lease.confirmed_at -= 5  # as after a pause: the renewer has not run since
    client.set(lease.key, "another copy")
    assert not lease.still_held()
    lease.release()


def _context(log: RedisCallLog | None = None, attempt: int = 2) -> ExportContext:
    context = ExportContext(
        xml_file_path=Path("/records/r.xml"), session_identifier="s-1", instrument_pid="i",
        dt_from=datetime(2026, 3, 4, 9), dt_to=datetime(2026, 3, 4, 10),
        metadata={"export_attempt": attempt},
    )  # fmt: skip
    if log is not None:
        context.call_log = log
    return context


def test_a_call_another_copy_sent_is_looked_up_only_once_it_can_no_longer_be_answered() -> None:
    context = _context()
    context.call_log.record("began", "1")
    context.call_log.record("record", sent_mark(time.time() - 5))
    resume = Resume(context, answer_within=20)
    with pytest.raises(AnswerPendingError) as deferred:
        resume.may_exist("record")
    assert 14 < (deferred.value.retry_after or 0) <= 15.1
    assert resume.done("record") is None
    context.call_log.record("record", sent_mark(time.time() - 21))
    assert resume.may_exist("record")
    context.call_log.record("record", SENT)  # written before the time was kept, or ended
    assert resume.may_exist("record")


def test_a_create_call_that_ended_unanswered_is_looked_up_at_once() -> None:
    context = _context(attempt=1)
    resume = Resume(context, answer_within=300)

    def refused() -> str:
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        resume.create("record", refused)
    assert Resume(context).may_exist("record")


def test_a_copy_that_lost_its_lease_makes_no_create_call(client: redis.Redis) -> None:
    lease = Lease(client, f"test:lease:{uuid.uuid4().hex}", 30)
    assert lease.acquire()
    context = _context(RedisCallLog(client, "job", "cdcs", RETENTION, lease), attempt=1)
    context.lease_check = lease.still_held
    client.set(lease.key, "another copy")
    lease.confirmed_at -= 60
    calls: list[str] = []
    with pytest.raises(LeaseLostError):
        Resume(context).create("record", lambda: calls.append("upload") or "1")
    assert calls == []
    lease.release()


# -- against real workers -----------------------------------------------------------------


@pytest.mark.processes
def test_a_paused_worker_resumed_after_another_took_over_adds_no_record(tmp_path: Path) -> None:
    """Worker A is paused mid-upload; B takes over; A resumes and changes nothing."""
    with FakeCDCS() as cdcs:
        cdcs.stall_next(15, on="POST /rest/data/")  # A's upload: answered after 15 s
        cluster = Cluster(
            tmp_path, None, NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=cdcs.token,
            NX_EXPORT_LEASE_SECONDS="3", NX_EXPORT_VISIBILITY_TIMEOUT="8",
            NX_HTTP_TOTAL_TIMEOUT="20", NX_HTTP_READ_TIMEOUT="30",
            NX_EXPORT_BACKOFF_SECONDS="0.2",
        )  # fmt: skip
        record = tmp_path / "paused.xml"
        record.write_text(RECORD.format(title="paused"), encoding="utf-8")
        try:
            paused = cluster.worker("paused")
            [job_id] = cluster.enqueue([{"context": make_context(record),
                                         "destinations": ["cdcs"]}])  # fmt: skip
            wait_for(lambda: cdcs.requests_to("POST /rest/data/"), timeout=30)
            paused.signal_tree(signal.SIGSTOP)
            stopped_at = time.monotonic()
            cluster.worker("successor")
            assert not cluster.wait_finished([job_id], timeout=60), "the successor never finished"
            time.sleep(max(0.0, stopped_at + 25 - time.monotonic()))
            calls_before, logged = len(cdcs.requests), len(paused.log())
            paused.signal_tree(signal.SIGCONT)
            # Until its task ends one way or another, then anything it would still do.
            ends = ("lost its lease", "] retry:", "] succeeded")
            wait_for(lambda: any(e in paused.log()[logged:] for e in ends), timeout=30)
            time.sleep(3)
            calls_after = cdcs.requests[calls_before:]
            job = cluster.record(job_id)
        finally:
            cluster.close()
    assert len(cdcs.records) == 1, f"{len(cdcs.records)} CDCS records for one session"
    entry = job.destinations["cdcs"]
    assert job.job.satisfied and entry.succeeded
    assert entry.result is not None and entry.result["record_id"] in cdcs.records
    assert entry.result["metadata"]["found_existing"] is True  # B adopted A's upload
    # The successor's attempt is the one stored: the resumed copy overwrote nothing.
    assert entry.history[-1]["outcome"] == "success" and entry.history[-1]["attempt"] >= 2
    assert [h["outcome"] for h in entry.history].count("success") == 1
    assert calls_after == [], f"the resumed copy called {[r.path for r in calls_after]}"
    assert "Traceback" not in paused.log().split("lost its lease")[-1]
