"""Call spacing for services that allow one call per interval: per process or through Redis.

A caller reserves the slots of the calls it is about to make, then waits for
each before calling. ``MinIntervalLimiter`` spaces the threads of one process;
``RedisCallLimiter`` spaces every process on every host that shares a Redis,
using the Redis server's clock so hosts whose clocks differ still agree.

``RedisCallLimiter`` keeps two things in Redis:

- the *plan*: every reservation (its first slot and number of calls). A new
  one takes the first gap long enough from now on, so slots handed back —
  unused, or of a caller that gave up — are used again, never left idle
  behind the backlog;
- the *next call time*: each call claims it when it is about to go. This alone
  spaces the calls, so a caller that comes back late for its slots goes at the
  next free call slot instead of queuing behind the backlog again.

A long wait is not slept: given a ticket, ``reserve`` raises ``SlotsDeferred``
with the wait and keeps the slots under the ticket for the caller's return,
so a task can hand its worker thread back and come back when its turn is near.
``abandon(ticket)`` hands such slots back.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any, Protocol

# A call leaves a few milliseconds after its slot (signing, a busy interpreter),
# and the next may leave right on time: the margin keeps arrivals an interval apart.
SEND_MARGIN = 0.05
SEND_MARGIN_SHARE = 0.05  # of the interval, for short (scaled-down) intervals
# How long a deferred caller's slots are kept after their time, for a late return.
TICKET_GRACE = 600.0
# Reservations whose first slot is this many intervals past are over.
PLAN_SPAN_CALLS = 64
# How often a call woken too late for its slot takes the next one before going anyway.
LATE_RETRIES = 3


class SlotsDeferred(Exception):
    """The first free slot is further away than the caller wants to sleep."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next call slot in {wait:.1f} s")
        self.wait = wait


class CallSlots(Protocol):
    """The slots reserved for one piece of work."""

    def wait(self) -> None:
        """Block until the next call may go."""
        ...

    def release(self) -> None:
        """Give back the reserved slots that were not used."""
        ...


class CallLimiter(Protocol):
    """Hands out call slots."""

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Reserve ``calls`` slots; may raise ``SlotsDeferred`` when a ticket is given."""
        ...

    def abandon(self, ticket: str) -> None:
        """Hand back the slots kept for ``ticket``, if any: its holder will not come for them."""
        ...


def send_margin(interval: float) -> float:
    """The margin added to the interval: 50 ms, or 5 % of a shorter interval."""
    return min(SEND_MARGIN, interval * SEND_MARGIN_SHARE)


class MinIntervalLimiter:
    """At most one call per ``interval`` seconds across the threads of a process.

    Each caller reserves the next free slot under the lock and sleeps outside
    it, so waiting threads do not hold each other up beyond their slot.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.last_start = -interval  # when the latest call was let go (monotonic)

    def wait(self) -> None:
        """Block until this caller's slot, and at least ``interval`` after the last call left.

        A sleep can overrun its slot (a busy machine): the next caller then still
        waits a whole interval after the call that actually went, not after its slot.
        """
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
        while True:
            with self._lock:
                now = time.monotonic()
                early = self.last_start + self.interval - now
                if early <= 0:
                    self.last_start = now
                    self._next_slot = max(self._next_slot, now + self.interval)
                    return
            time.sleep(early)

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Slots taken one by one at call time; never deferred."""
        return _EachCall(self)

    def abandon(self, ticket: str) -> None:
        """Nothing is kept for later in one process."""


class _EachCall:
    def __init__(self, limiter: MinIntervalLimiter) -> None:
        self._limiter = limiter

    def wait(self) -> None:
        self._limiter.wait()

    def release(self) -> None:
        pass


# KEYS: the plan (sorted set "<token>|<calls>" by first slot, ms on the Redis clock),
#       the caller's ticket ("" for none).
# ARGV: interval ms, calls, longest wait ms (-1: never defer), ticket grace ms, token, span ms.
# Returns {ms until the first slot, deferred 0/1, the reservation}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, calls = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait, grace, span = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
if KEYS[2] ~= '' then
  local kept = redis.call('GET', KEYS[2])
  if kept then
    local first = tonumber(redis.call('ZSCORE', KEYS[1], kept) or now)
    if max_wait >= 0 and first - now > max_wait then
      return {first - now, 1, kept}
    end
    -- On time, or late: a late caller goes now, each call at the next free call slot.
    redis.call('DEL', KEYS[2])
    return {math.max(0, first - now), 0, kept}
  end
end
local need = calls * interval
local slot = now
local plan = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'WITHSCORES')
for i = 1, #plan, 2 do
  local first = tonumber(plan[i + 1])
  if first - slot >= need then break end
  local count = tonumber(string.match(plan[i], '|(%d+)$')) or 1
  slot = math.max(slot, first + count * interval)
end
local member = ARGV[5] .. '|' .. calls
redis.call('ZADD', KEYS[1], slot, member)
local keep = slot - now + need + span + 60000
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
if max_wait >= 0 and slot - now > max_wait and KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], member, 'PX', slot - now + grace)
  return {slot - now, 1, member}
end
return {slot - now, 0, member}
"""

# KEYS: the next call time (ms, Redis clock). ARGV: interval ms. Returns ms until this call.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], at + interval, 'PX', at - now + interval + 60000)
return at - now
"""

# KEYS: the plan, the ticket. Drops the ticket and its reservation.
_ABANDON = """
local kept = redis.call('GET', KEYS[2])
if kept then
  redis.call('ZREM', KEYS[1], kept)
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


class RedisCallLimiter:
    """One call per ``interval`` across every process that shares ``key`` in Redis.

    Parameters
    ----------
    client
        A redis-py client.
    key
        The prefix of the limiter's Redis keys; one per service account.
    interval
        Seconds between calls (``send_margin`` is added).
    max_wait
        The longest wait for a first slot that is slept rather than deferred.
    """

    def __init__(self, client: Any, key: str, interval: float, max_wait: float) -> None:
        self.client = client
        self.key = key
        self.margin = send_margin(interval) if interval > 0 else 0.0
        self.interval = interval + self.margin
        self.max_wait = max_wait
        self._interval_ms = math.ceil(self.interval * 1000)
        self._reserve = client.register_script(_RESERVE)
        self._claim = client.register_script(_CLAIM)
        self._abandon = client.register_script(_ABANDON)

    @property
    def plan_key(self) -> str:
        return f"{self.key}:plan"

    def ticket_key(self, ticket: str) -> str:
        return f"{self.key}:ticket:{ticket}"

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Reserve ``calls`` consecutive slots in the first free gap from now.

        With a ticket, a first slot more than ``max_wait`` away raises
        ``SlotsDeferred`` and the slots stay reserved under the ticket until the
        caller comes back with it. Without one, the caller always waits.
        """
        ticket_key = self.ticket_key(ticket) if ticket else ""
        args = [
            self._interval_ms,
            max(1, min(calls, PLAN_SPAN_CALLS)),
            int(self.max_wait * 1000) if ticket else -1,
            int(TICKET_GRACE * 1000),
            ticket_key or uuid.uuid4().hex,
            PLAN_SPAN_CALLS * self._interval_ms,
        ]
        wait_ms, deferred, member = self._reserve(keys=[self.plan_key, ticket_key], args=args)
        if int(deferred):
            raise SlotsDeferred(int(wait_ms) / 1000)
        reservation = member.decode() if isinstance(member, bytes) else str(member)
        first = None if ticket else time.monotonic() + int(wait_ms) / 1000
        return _ReservedSlots(self, reservation, first)

    def claim(self) -> float:
        """Take the next free call slot; the seconds until it."""
        return int(self._claim(keys=[f"{self.key}:next"], args=[self._interval_ms])) / 1000

    def abandon(self, ticket: str) -> None:
        """Hand back the slots kept for ``ticket``."""
        self._abandon(keys=[self.plan_key, self.ticket_key(ticket)])

    def give_back(self, reservation: str) -> None:
        """Drop a reservation from the plan: its remaining slots are free again."""
        self.client.zrem(self.plan_key, reservation)


class _ReservedSlots:
    """Every call claims the next free call slot; a caller without a ticket first waits its turn.

    For a caller with a ticket the reservation only decided that its turn is
    near (or deferred it until it is): it does not wait for its planned slot
    when the service is free sooner, so slots that others left unused — handed
    back, or passed while their holder was late — go to whoever is ready.
    """

    def __init__(self, limiter: RedisCallLimiter, reservation: str, first: float | None) -> None:
        self._limiter = limiter
        self._reservation: str | None = reservation
        self._first = first

    def wait(self) -> None:
        if self._first is not None:
            delay, self._first = self._first - time.monotonic(), None
            if delay > 0:
                time.sleep(delay)
        for _ in range(LATE_RETRIES):
            slot = time.monotonic() + self._limiter.claim()
            if slot > time.monotonic():
                time.sleep(slot - time.monotonic())
            # Woken later than the margin allows (a busy interpreter): sent now, the call
            # could crowd the next slot, so it takes the next free one instead.
            if not self._limiter.interval or time.monotonic() - slot <= self._limiter.margin:
                return

    def release(self) -> None:
        if self._reservation is not None:
            self._limiter.give_back(self._reservation)
            self._reservation = None
