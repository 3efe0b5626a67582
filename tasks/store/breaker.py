"""A destination's circuit breaker, shared by every worker through Redis.

Up, every export calls the service. ``failures`` consecutive calls that found
it down (``ServiceUnavailableError``: connection refused or reset, timeouts,
502/503/504), across jobs and workers, over at least one probe interval (a
flaky service answers some calls within it), mark it *down*: from then on an export
calls it only as the one *probe* (a real export) let through once per
interval, the interval doubling after each failed probe up to its ceiling.
Every other export waits without calling and without using an attempt, and
comes back around the next probe. The first answer closes the breaker; the
waiting exports then come back within one interval and drain at the service's
own pace (its call limiter still spaces them).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from tasks.store.decode import text
from tasks.store.keys import (
    METRICS_LAST_SUCCESS,
    breaker_key,
    breaker_probe_key,
    breaker_waiting_key,
)
from tasks.store.scripts import BREAKER_ADMIT, BREAKER_ANSWERED, BREAKER_FAILED, RELEASE

UP, DOWN, PROBING = "up", "down", "probing"
# How long a waiting export is counted as waiting after it was due back.
WAITING_GRACE = 60.0


@dataclass(frozen=True)
class BreakerPolicy:
    """``NX_EXPORT_BREAKER_FAILURES``, ``_PROBE_SECONDS`` and ``_PROBE_MAX_SECONDS``."""

    failures: int = 5
    probe_seconds: float = 30.0
    probe_max_seconds: float = 300.0


@dataclass(frozen=True)
class Admission:
    """Whether an export may call the service now: as the probe, or not before ``wait`` s."""

    go: bool
    probe: bool = False
    wait: float = 0.0


class Breaker:
    """One destination's breaker; ``token`` names the export holding the probe."""

    def __init__(self, client: redis.Redis, destination: str, policy: BreakerPolicy) -> None:
        self.client = client
        self.destination = destination
        self.policy = policy
        self.keys = [breaker_key(destination), breaker_probe_key(destination)]
        self.waiting_key = breaker_waiting_key(destination)

    def admit(self, token: str, probe_seconds: float) -> Admission:
        """Ask to call the service; the probe key is held ``probe_seconds`` at most."""
        answer = cast(list[Any], self.client.eval(
            BREAKER_ADMIT, 3, *self.keys, self.waiting_key, int(probe_seconds * 1000), token
        ))  # fmt: skip
        go = int(answer[0])
        if go:
            return Admission(True, probe=go == 2)
        # Back a little after the next probe went (spread, not all at once): by then its
        # answer may have closed the breaker.
        interval = float(text(answer[2] or b"0")) or self.policy.probe_seconds
        wait = float(text(answer[1])) + random.uniform(0.1, 0.5) * interval
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.waiting_key, {token: time.time() + wait + WAITING_GRACE})
            pipe.zremrangebyscore(self.waiting_key, "-inf", time.time())
            pipe.execute()
        return Admission(False, wait=wait)

    def failed(self, error: str, token: str) -> bool:
        """A call found the service down; True when this one marked it down."""
        policy = self.policy
        return bool(self.client.eval(
            BREAKER_FAILED, 2, *self.keys, policy.failures, policy.probe_seconds,
            policy.probe_max_seconds, error[:500], token,
        ))  # fmt: skip

    def answered(self, token: str) -> bool:
        """The probe's call was answered; True when the destination was down until now.

        Every stored success closes the breaker as well (``counters.count_result``).
        """
        return bool(self.client.eval(BREAKER_ANSWERED, 2, *self.keys, token))

    def release_probe(self, token: str) -> None:
        """A probe that learnt nothing (no answer, no outage) lets the next one go."""
        self.client.eval(RELEASE, 1, self.keys[1], token)

    def state(self) -> dict[str, Any]:
        """Up, down or probing; since when, the last error and success, how many wait."""
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys[0])
            pipe.exists(self.keys[1])
            pipe.zcount(self.waiting_key, now, "+inf")
            pipe.hget(METRICS_LAST_SUCCESS, self.destination)
            raw, probing, waiting, last_success = pipe.execute()
        fields = {text(k): text(v) for k, v in cast(dict[bytes, bytes], raw).items()}
        down_since = _number(fields.get("down_since"))
        state = UP if down_since is None else (PROBING if probing else DOWN)
        return {
            "state": state,
            "down_since": down_since,
            "next_probe_at": _number(fields.get("probe_at")) if down_since else None,
            "last_error": fields.get("last_error") if down_since else None,
            "last_success": _number(text(last_success) if last_success else None),
            "consecutive_failures": int(fields.get("failures") or 0),
            # Since when calls have found it down, with no answer between (None: answering).
            "failing_since": _number(fields.get("streak_since"))
            if int(fields.get("failures") or 0) else None,
            "waiting": int(waiting),
        }


def _number(raw: str | None) -> float | None:
    return None if raw in (None, "") else float(cast(str, raw))
