"""The LabArchives call limiter in Redis: late callers, handed-back slots, first free slots."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from destinations.rate_limit import RedisCallLimiter, SlotsDeferred
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
    limiter.reserve(5)
    with pytest.raises(SlotsDeferred) as deferred:
        limiter.reserve(3, "late")
    limiter.reserve(40)  # a backlog of four seconds behind the deferred caller
    time.sleep(deferred.value.wait + 0.3)  # it comes back after its slots
    slots = limiter.reserve(3, "late")
    for _ in range(3):
        slots.wait()
    slots.release()
