"""The LabArchives call limiter in Redis: late callers, handed-back slots, first free slots."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from destinations.toolkit.rate_limit import RedisCallLimiter, SlotsDeferred
from tests.support import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def key() -> str:
    return f"test:limiter:{uuid.uuid4().hex}"


def test_a_late_caller_takes_the_next_free_slots_not_the_end_of_the_backlog(
    client: redis.Redis, key: str
) -> None:
    limiter = RedisCallLimiter(client, key, 0.1, 0.3)
    limiter.reserve(20)
    with pytest.raises(SlotsDeferred) as deferred:
        limiter.reserve(3, "late")
    limiter.reserve(40)  # a backlog of four seconds behind the deferred caller
    time.sleep(deferred.value.wait + 0.3)  # it comes back after its slots
    slots = limiter.reserve(3, "late")
    for _ in range(3):
        slots.wait()
    slots.release()


def test_an_abandoned_ticket_hands_its_slots_back(client: redis.Redis, key: str) -> None:
    limiter = RedisCallLimiter(client, key, 0.5, 1.0)
    blocker = limiter.reserve(4)
    with pytest.raises(SlotsDeferred):
        limiter.reserve(20, "gives-up")  # ten seconds kept for its return
    blocker.release()
    limiter.abandon("gives-up")
    assert client.exists(limiter.ticket_key("gives-up")) == 0
    # The service is idle again: nobody has to wait for slots nobody will use.
    limiter.reserve(2, "next").release()


def test_a_new_reservation_takes_a_gap_handed_back_in_the_plan(
    client: redis.Redis, key: str
) -> None:
    limiter = RedisCallLimiter(client, key, 2.0, 1.0)
    early = limiter.reserve(4)
    with pytest.raises(SlotsDeferred):
        limiter.reserve(4, "later")  # behind the first four slots
    early.release()
    # The first slots are free again: a new export goes now, before the deferred one.
    limiter.reserve(3, "newcomer").release()
    with pytest.raises(SlotsDeferred):
        limiter.reserve(4, "later")  # still kept for its holder


def test_every_call_claims_the_next_free_call_slot(client: redis.Redis, key: str) -> None:
    limiter = RedisCallLimiter(client, key, 5.0, 1.0)
    waits = [limiter.claim() for _ in range(3)]
    # The first goes now; the next ones an interval after each other.
    assert waits[0] == 0 and 4 < waits[1] < waits[2]
