"""How long to wait before trying a destination again.

Exponential backoff with full jitter, at least what the service asked for in
``Retry-After``, never longer than the configured maximum (which the worker
keeps below the broker's visibility timeout).
"""

from __future__ import annotations

import random


def retry_delay(
    retries: int,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``retries + 1`` (``retries`` counts the retries done)."""
    ceiling = min(maximum, base * (2**retries))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, maximum)
