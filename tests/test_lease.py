"""The export lease against a real Redis: renewed while held, by one thread per process."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tasks.store.lease import Lease
from tests.support import RedisServer


def _lease(redis_server: RedisServer, seconds: float) -> Lease:
    return Lease(redis_server.client(), f"test:lease:{uuid.uuid4().hex}", seconds)


def test_a_held_lease_outlives_its_lifetime_and_a_second_copy_is_refused(
    redis_server: RedisServer,
) -> None:
    first = _lease(redis_server, 0.3)
    assert first.acquire()
    time.sleep(1.0)  # more than three lifetimes: only renewals keep it
    assert redis_server.client().get(first.key) == first.token.encode()
    second = Lease(first.client, first.key, 0.3)
    assert not second.acquire()
    first.release()
    assert redis_server.client().get(first.key) is None
    assert second.acquire()
    second.release()


def test_many_leases_share_one_renewer_thread_and_a_released_one_expires(
    redis_server: RedisServer,
) -> None:
    leases = [_lease(redis_server, 0.3) for _ in range(20)]
    for lease in leases:
        assert lease.acquire()
    renewers = [t for t in threading.enumerate() if t.name == "lease renewer"]
    assert len(renewers) == 1, f"threads now: {sorted({t.name for t in threading.enumerate()})}"
    kept, dropped = leases[:10], leases[10:]
    with redis_server.client().pipeline(transaction=False) as pipe:
        for lease in dropped:
            lease.release(pipe)
        pipe.execute()
    for lease in dropped:
        lease.released_by_pipeline()
    time.sleep(1.0)
    client = redis_server.client()
    assert all(client.get(lease.key) == lease.token.encode() for lease in kept)
    assert all(client.get(lease.key) is None for lease in dropped)
    for lease in kept:
        lease.release()


def test_a_lease_taken_over_after_it_expired_is_not_renewed_over_the_new_holder(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    lease = _lease(redis_server, 0.3)
    assert lease.acquire()
    client = redis_server.client()
    client.set(lease.key, "another copy")  # as if it expired and another copy took it
    time.sleep(0.5)
    assert client.get(lease.key) == b"another copy"
    assert any("lost" in record.getMessage() for record in caplog.records)
    lease.release()
    assert client.get(lease.key) == b"another copy", "released another copy's lease"
