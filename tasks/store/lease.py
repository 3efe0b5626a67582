"""One running copy per (job, destination): a lease in Redis, renewed while the export runs.

Redis hands an unacknowledged task out again after the visibility timeout, and
``nx-export retry`` or a redelivered canvas can send a destination's task while
an earlier copy still runs. Whoever holds the lease exports; any other copy
backs off and comes back later. The lease is a key set with ``NX`` and a
lifetime, holding a random token; one thread per process renews every lease
the process holds each third of their lifetime, so a lease outlives a slow
export but not a dead worker, and taking one starts no thread.

A lease is *lost* once Redis says another token holds it (or none), or once its
renewals have failed for longer than its lifetime (Redis unreachable: it has
expired there by then). ``still_held`` answers without a round trip while the
renewals are on time, and asks Redis otherwise — so a copy that resumes after a
pause learns it at its next call. Every write a copy makes to its destination's
entry and call log compares the lease's token in the same script (fencing):
a copy that lost its lease writes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import redis

from tasks.store.failover import retrying
from tasks.store.scripts import RELEASE, RENEW

logger = logging.getLogger(__name__)

class Lease:
    """A lease on ``key`` for ``seconds``; ``acquire`` once, ``release`` when done."""

    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(100, int(seconds * 1000))
        self.token = uuid.uuid4().hex
        self.held = False
        self.released = False
        self.lost = False
        self.renew_at = 0.0  # monotonic time of the next renewal
        # Monotonic time at which Redis last confirmed it (when the command was sent).
        self.confirmed_at = 0.0

    @property
    def period(self) -> float:
        """Renewed each third of its lifetime: two renewals may fail before it expires."""
        return self.ttl_ms / 3000

    @property
    def seconds(self) -> float:
        return self.ttl_ms / 1000

    def acquire(self) -> bool:
        """Take the lease unless another copy holds it; renew it from now on."""
        sent = time.monotonic()
        return self.granted(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms), sent)

    def granted(self, answer: Any, sent: float | None = None) -> bool:
        """Whether the lease was taken (by a command sent at ``sent``); if so, renew it."""
        if not answer:
            return False
        self.held = True
        self.confirmed_at = time.monotonic() if sent is None else sent
        self.renew_at = time.monotonic() + self.period
        _renewer().add(self)
        return True

    def release(self, pipe: Any = None) -> None:
        """Give the lease up; with ``pipe``, as one more command of it.

        Whoever executes ``pipe`` calls ``released_by_pipeline`` once it ran;
        until then the lease is still renewed.
        """
        if not self.held or self.released:
            return
        if pipe is not None:
            pipe.eval(RELEASE, 1, self.key, self.token)
            return
        _renewer().remove(self)
        # Through a failover or restart: a lease the new primary kept would hold back
        # the task's next copy for its whole lifetime. Releasing twice is harmless
        # (the script deletes only this token's key).
        try:
            retrying(lambda: self.client.eval(RELEASE, 1, self.key, self.token),
                     f"releasing {self.key}")  # fmt: skip
        except redis.RedisError as error:  # it expires by itself
            logger.warning("could not release %s: %r", self.key, error)
        self.released = True

    def released_by_pipeline(self) -> None:
        _renewer().remove(self)
        self.released = True

    def renew(self) -> bool:
        """Extend the lease if this copy still holds it; False once it was lost.

        Lost too when Redis has been unreachable for longer than the lease's
        lifetime since it last confirmed it: it has expired there.
        """
        sent = time.monotonic()
        self.renew_at = sent + self.period
        if self.lost:
            return False
        try:
            renewed = bool(self.client.eval(RENEW, 1, self.key, self.token, self.ttl_ms))
        except redis.RedisError as error:
            if time.monotonic() - self.confirmed_at < self.seconds:
                # Redis is away: the lease keeps its lifetime there; try again next time.
                logger.warning("could not renew %s: %r", self.key, error)
                return True
            logger.warning("could not renew %s for longer than its lifetime: lost", self.key)
            renewed = False
        if renewed:
            self.confirmed_at = max(self.confirmed_at, sent)
        else:
            self.lost = True
        return renewed

    def still_held(self) -> bool:
        """Whether this copy may still act: cheap while renewals are on time, else asks Redis.

        A process that was paused (SIGSTOP, a VM pause) or cut off past two
        renewal periods asks Redis before it goes on.
        """
        if self.lost or not self.held:
            return False
        if time.monotonic() - self.confirmed_at < 2 * self.period:
            return True
        return self.renew()


class _Renewer:
    """The thread that renews the leases of one process as each falls due."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waking_at = float("inf")  # when the thread wakes next, unless notified
        self._thread = threading.Thread(target=self._run, name="lease renewer", daemon=True)
        self._thread.start()

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)
            if lease.renew_at < self._waking_at:  # due before the ones waited for
                self._changed.notify()

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._leases:
                    self._waking_at = float("inf")
                    self._changed.wait()
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.renew_at <= now]
                if not due:
                    self._waking_at = min(lease.renew_at for lease in self._leases)
                    self._changed.wait(self._waking_at - now)
                    continue
                self._waking_at = now
            for lease in due:
                if lease.released or lease.renew():
                    continue
                self.remove(lease)
                if not lease.released:  # not just released by a pipeline
                    logger.warning(
                        "lost %s (it expired): another copy may export; this one stops "
                        "before its next call or write", lease.key,
                    )  # fmt: skip


_process_renewer: _Renewer | None = None
_renewer_lock = threading.Lock()


def _renewer() -> _Renewer:
    """This process's renewer, started on first use (and again in a forked child)."""
    global _process_renewer
    with _renewer_lock:
        if _process_renewer is None or _process_renewer.pid != os.getpid():
            _process_renewer = _Renewer()
        return _process_renewer
