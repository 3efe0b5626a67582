"""Waiting out a Redis restart where giving up would make an export run again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Redis unreachable: nothing can be recorded, so the task is retried once it is back.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# How long a finished export waits for Redis to store its result, rather than run again.
REDIS_PATIENCE_SECONDS = 300.0


def patiently(action: Callable[[], T]) -> T:
    """Run ``action``, waiting out a Redis restart: the export it records must not run again."""
    deadline = time.monotonic() + REDIS_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return action()
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            logger.warning("Redis unreachable; storing the result again in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
