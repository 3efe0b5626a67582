"""A destination's breaker in a real Redis: down after failures in a row, one probe, closed."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tasks.store.breaker import DOWN, PROBING, UP, Breaker, BreakerPolicy
from tests.support import RedisServer


def _breaker(redis_server: RedisServer, **policy: float) -> Breaker:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    return Breaker(redis_server.client(), name, BreakerPolicy(**policy))  # type: ignore[arg-type]


def test_failures_in_a_row_open_it_and_one_probe_at_a_time_goes(
    redis_server: RedisServer,
) -> None:
    breaker = _breaker(redis_server, failures=3, probe_seconds=0.5, probe_max_seconds=1.0)
    assert breaker.admit("a", 60).go
    # Three in a row, but within less than a probe interval: a flaky service, not down.
    assert [breaker.failed("HTTP 503", "a") for _ in range(3)] == [False, False, False]
    time.sleep(0.55)
    assert breaker.failed("HTTP 503", "a")  # the streak outlasted an interval
    state = breaker.state()
    assert state["state"] == DOWN and state["last_error"] == "HTTP 503"
    # Down: nobody calls before the probe is due, and then only one.
    waiting = breaker.admit("b", 60)
    assert not waiting.go and 0 < waiting.wait <= 1.0
    assert breaker.state()["waiting"] == 1
    time.sleep(0.6)
    probe = breaker.admit("c", 60)
    assert probe.go and probe.probe
    assert breaker.state()["state"] == PROBING
    assert not breaker.admit("d", 60).go  # the probe is out
    # A failed probe waits twice as long (capped) before the next.
    breaker.failed("connection refused", "c")
    assert not breaker.admit("e", 60).go
    time.sleep(0.6)
    assert not breaker.admit("f", 60).go  # 1.0 s now, not 0.5
    time.sleep(0.5)
    second = breaker.admit("g", 60)
    assert second.go and second.probe
    # The first answer closes it: everyone goes again; "b" no longer waits.
    assert breaker.answered("g")
    assert breaker.admit("b", 60).go
    state = breaker.state()
    assert state["state"] == UP and state["consecutive_failures"] == 0
    assert state["waiting"] == 3  # d, e, f: due back


def test_an_answer_between_failures_keeps_it_closed(redis_server: RedisServer) -> None:
    breaker = _breaker(redis_server, failures=3, probe_seconds=0.1)
    breaker.failed("HTTP 502", "a")
    time.sleep(0.15)
    breaker.failed("HTTP 502", "b")
    assert breaker.state()["consecutive_failures"] == 2
    breaker.answered("")  # as any stored success does (counters.count_result)
    time.sleep(0.15)
    assert not breaker.failed("HTTP 502", "d") and not breaker.failed("HTTP 502", "e")
    assert breaker.state()["state"] == UP


def test_a_probe_that_learnt_nothing_lets_the_next_one_go(redis_server: RedisServer) -> None:
    breaker = _breaker(redis_server, failures=1, probe_seconds=0.2)
    breaker.failed("timed out", "a")
    time.sleep(0.25)
    assert breaker.failed("timed out", "a")  # down: the streak outlasted an interval
    time.sleep(0.25)
    assert breaker.admit("p", 60).probe
    assert not breaker.admit("q", 60).go
    breaker.release_probe("p")
    assert breaker.admit("q", 60).probe
    # A probe key that expired (its worker died) lets the next one go too.
    client: redis.Redis = breaker.client
    client.delete(breaker.keys[1])
    assert breaker.admit("r", 60).probe


def test_each_destination_may_have_breaker_settings_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.settings import SettingsError, WorkerSettings, destination_policy

    monkeypatch.setenv("NX_EXPORT_BREAKER_FAILURES", "4")
    settings = WorkerSettings()
    assert destination_policy("cdcs", settings, {}.get).breaker == BreakerPolicy(4, 30.0, 300.0)
    own = {"NX_EXPORT_ELABFTW_BREAKER_FAILURES": "8",
           "NX_EXPORT_ELABFTW_BREAKER_PROBE_SECONDS": "600"}  # fmt: skip
    # A probe interval above the ceiling raises the ceiling with it.
    assert destination_policy("elabftw", settings, own.get).breaker == BreakerPolicy(8, 600, 600)
    with pytest.raises(SettingsError, match="NX_EXPORT_ELABFTW_BREAKER_FAILURES: must be above 0"):
        destination_policy("elabftw", settings, {"NX_EXPORT_ELABFTW_BREAKER_FAILURES": "0"}.get)
