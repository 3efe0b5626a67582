"""Call spacing for services that allow one call per interval: per process or through Redis.

A caller reserves the slots of the calls it is about to make, then waits for
each before calling. ``MinIntervalLimiter`` spaces the threads of one process;
``RedisCallLimiter`` spaces every process on every host that shares a Redis,
using the Redis server's clock so hosts whose clocks differ still agree.

A long wait is not slept: ``reserve`` raises ``SlotsDeferred`` with the wait
and, given a ticket, keeps the slots for the caller's return, so a task can
hand its worker thread back and come back when its turn is near.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

# A call leaves a few milliseconds after its slot (signing, a busy interpreter),
# and the next may leave right on time: the margin keeps arrivals an interval apart.
SEND_MARGIN = 0.05
# How long a deferred caller's slots are kept after their time, for a late return.
TICKET_GRACE = 600.0


class SlotsDeferred(Exception):
    """The first free slot is further away than the caller wants to sleep."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next call slot in {wait:.1f} s")
        self.wait = wait


class CallSlots(Protocol):
    """The slots reserved for one piece of work."""

    resumed: bool

    def wait(self) -> None:
        """Block until the next call may go (past the reserved slots, take a new one)."""
        ...

    def release(self) -> None:
        """Give back slots that were not used, when nobody reserved after them."""
        ...


class CallLimiter(Protocol):
    """Hands out call slots."""

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Reserve ``calls`` slots; may raise ``SlotsDeferred`` when a ticket is given."""
        ...


class MinIntervalLimiter:
    """At most one call per ``interval`` seconds across the threads of a process.

    Each caller reserves the next free slot under the lock and sleeps outside
    it, so waiting threads do not hold each other up beyond their slot.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._next_slot = 0.0

    def wait(self) -> None:
        """Block until this caller's slot."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Slots taken one by one at call time; never deferred."""
        return _EachCall(self)


class _EachCall:
    resumed = False

    def __init__(self, limiter: MinIntervalLimiter) -> None:
        self._limiter = limiter

    def wait(self) -> None:
        self._limiter.wait()

    def release(self) -> None:
        pass


# KEYS: next free slot (ms, Redis clock), the caller's ticket ("" for none).
# ARGV: interval ms, calls, longest wait ms (-1: never defer), ticket grace ms.
# Returns {ms until the first slot, deferred 0/1, resumed 0/1, end of the slots, slots held}.
# A ticket holds "first slot:count", so a caller back with more calls than it
# reserved takes the rest one by one instead of overlapping someone else's slots.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, calls = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local resumed = 0
if KEYS[2] ~= '' then
  local ticket = redis.call('GET', KEYS[2])
  if ticket then
    resumed = 1
    local first, count = string.match(ticket, '(%d+):(%d+)')
    first, count = tonumber(first), tonumber(count)
    if first >= now then
      if max_wait >= 0 and first - now > max_wait then
        return {first - now, 1, 1, 0, 0}
      end
      redis.call('DEL', KEYS[2])
      return {first - now, 0, 1, first + count * interval, count}
    end
    redis.call('DEL', KEYS[2])
  end
end
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, free)
local finish = slot + calls * interval
redis.call('SET', KEYS[1], finish, 'PX', finish - now + 60000)
if max_wait >= 0 and slot - now > max_wait and KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], slot .. ':' .. calls, 'PX', slot - now + grace)
  return {slot - now, 1, resumed, 0, 0}
end
return {slot - now, 0, resumed, finish, calls}
"""

# Hand unused slots back only if nobody reserved after them (the free slot is still ours).
_RELEASE = """
if tonumber(redis.call('GET', KEYS[1]) or '-1') == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
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
        The Redis key of the next free slot; one per service account.
    interval
        Seconds between calls (``SEND_MARGIN`` is added).
    max_wait
        The longest wait for a first slot that is slept rather than deferred.
    """

    def __init__(self, client: Any, key: str, interval: float, max_wait: float) -> None:
        self.client = client
        self.key = key
        self.interval = interval + SEND_MARGIN if interval > 0 else 0.0
        self.max_wait = max_wait
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def reserve(self, calls: int, ticket: str | None = None) -> CallSlots:
        """Reserve ``calls`` consecutive slots.

        With a ticket, a first slot more than ``max_wait`` away raises
        ``SlotsDeferred`` and the slots stay reserved under the ticket until the
        caller comes back with it. Without one, the caller always waits.
        """
        ticket_key = f"{self.key}:ticket:{ticket}" if ticket else ""
        wait_ms, deferred, resumed, finish, held = self._run(
            calls, ticket_key, -1 if not ticket else int(self.max_wait * 1000)
        )
        if deferred:
            raise SlotsDeferred(wait_ms / 1000)
        first = time.monotonic() + wait_ms / 1000
        return _ReservedSlots(self, first, held, finish, bool(resumed))

    def _run(self, calls: int, ticket_key: str, max_wait_ms: int) -> list[int]:
        args = [int(self.interval * 1000), calls, max_wait_ms, int(TICKET_GRACE * 1000)]
        return [int(value) for value in self._reserve(keys=[self.key, ticket_key], args=args)]

    def give_back(self, finish: int, unused: int) -> None:
        """Move the free slot back by ``unused`` slots if ``finish`` is still the last one."""
        self._release(keys=[self.key], args=[finish, finish - unused * int(self.interval * 1000)])


class _ReservedSlots:
    def __init__(
        self, limiter: RedisCallLimiter, first: float, calls: int, finish: int, resumed: bool
    ) -> None:
        self._limiter = limiter
        self._next = first
        self._left = calls
        self._finish = finish
        self.resumed = resumed

    def wait(self) -> None:
        delay = self._next - time.monotonic()
        if self._left > 0 and delay < -SEND_MARGIN / 2:
            # Too late for this slot: a call sent now would crowd the next slot, ours
            # or another worker's. Drop what is left and queue like any other call.
            self._left = 0
        if self._left <= 0:
            # More calls than reserved (a folder to create), or late: one more slot.
            self._limiter.reserve(1).wait()
            return
        if delay > 0:
            time.sleep(delay)
        self._next += self._limiter.interval
        self._left -= 1

    def release(self) -> None:
        if self._left > 0 and self._finish:
            self._limiter.give_back(self._finish, self._left)
            self._left = 0
