"""One running copy per (job, destination): a lease in Redis, renewed while the export runs.

Redis hands an unacknowledged task out again after the visibility timeout, and
``nx-export retry`` or a redelivered canvas can send a destination's task while
an earlier copy still runs. Whoever holds the lease exports; any other copy
backs off and comes back later. The lease is a key set with ``NX`` and a
lifetime, holding a random token; a thread renews it every third of its
lifetime, so it outlives a slow export but not a dead worker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import redis

from tasks.job_store import KEY_PREFIX

logger = logging.getLogger(__name__)

# Compare-and-renew / compare-and-delete: never touch a lease another copy holds now.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(job_id: str, destination: str) -> str:
    return f"{KEY_PREFIX}:lease:{job_id}:{destination}"


class Lease:
    """A lease on ``key`` for ``seconds``; ``acquire`` once, ``release`` when done."""

    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(100, int(seconds * 1000))
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.released = False

    def acquire(self) -> bool:
        """Take the lease unless another copy holds it; renew it from now on."""
        return self.granted(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def request(self, pipe: Any) -> None:
        """Ask for the lease in a pipeline; pass its answer to ``granted``."""
        pipe.set(self.key, self.token, nx=True, px=self.ttl_ms)

    def granted(self, answer: Any) -> bool:
        """Whether the lease was taken; if so, renew it from now on."""
        if not answer:
            return False
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._renewer.start()
        return True

    def release(self, pipe: Any = None) -> None:
        """Give the lease up; with ``pipe``, as one more command of it.

        Whoever executes ``pipe`` calls ``released_by_pipeline`` once it ran;
        until then the lease is still renewed.
        """
        if self._renewer is None or self.released:
            return
        if pipe is not None:
            pipe.eval(RELEASE, 1, self.key, self.token)
            return
        self._stop.set()
        try:
            self.client.eval(RELEASE, 1, self.key, self.token)
        except redis.RedisError as error:  # it expires by itself
            logger.warning("could not release %s: %r", self.key, error)
        self.released = True

    def released_by_pipeline(self) -> None:
        self._stop.set()
        self.released = True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                held = self.client.eval(RENEW, 1, self.key, self.token, self.ttl_ms)
            except redis.RedisError as error:
                # Redis is away: the lease keeps its lifetime there; try again next time.
                logger.warning("could not renew %s: %r", self.key, error)
                continue
            if not held:
                if not self._stop.is_set():  # not just released by a pipeline
                    logger.warning("lost %s (it expired): another copy may export too", self.key)
                return
