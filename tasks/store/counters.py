"""Export counters kept in Redis, so every worker adds to the same numbers.

Workers write at result time (``HINCRBY``/``HINCRBYFLOAT`` in one script per
result); the dashboard reads them back for ``/metrics``. The hashes hold a few
fields per destination and never expire: they are counters, which Prometheus
expects never to go down.

- ``metrics:exports``: ``<dest>|success`` and ``<dest>|failure`` counts;
- ``metrics:duration``: ``<dest>|<upper bound>`` per histogram bucket (not
  cumulative), ``<dest>|sum`` and ``<dest>|count``;
- ``metrics:retries``: ``<dest>`` counts of attempts that asked to be retried;
- ``metrics:last_success``: ``<dest>`` time of the newest success (Unix seconds).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.store.decode import text
from tasks.store.keys import METRICS_DURATION as DURATION
from tasks.store.keys import METRICS_EXPORTS as EXPORTS
from tasks.store.keys import METRICS_LAST_SUCCESS as LAST_SUCCESS
from tasks.store.keys import METRICS_RETRIES as RETRIES
from tasks.store.keys import breaker_key
from tasks.store.scripts import COUNT_RESULT

# Seconds: exports are HTTP uploads, from a fraction of a second to minutes.
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

def count_result(
    pipe: Any, job_hash: str, attempt_field: str, name: str, success: bool, now: float
) -> None:
    """Queue the counting of one final outcome at ``name`` on ``pipe``."""
    outcome = "success" if success else "failure"
    bounds = [repr(bound) for bound in BUCKETS]
    pipe.eval(COUNT_RESULT, 5, job_hash, EXPORTS, DURATION, LAST_SUCCESS, breaker_key(name),
              attempt_field, name, outcome, repr(now), *bounds)  # fmt: skip


def count_retry(client: redis.Redis, name: str) -> None:
    client.hincrby(RETRIES, name, 1)


@dataclass
class Histogram:
    buckets: dict[float, int] = field(default_factory=dict)  # upper bound -> count in it
    total: float = 0.0
    count: int = 0

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: each counts every observation up to its bound."""
        running, rows = 0, []
        for bound in (*BUCKETS, math.inf):
            running += self.buckets.get(bound, 0)
            rows.append(("+Inf" if bound == math.inf else repr(bound), running))
        return rows


@dataclass
class Snapshot:
    exports: dict[tuple[str, str], int]  # (destination, outcome) -> count
    durations: dict[str, Histogram]
    retries: dict[str, int]
    last_success: dict[str, float]


def read(client: redis.Redis) -> Snapshot:
    with client.pipeline(transaction=False) as pipe:
        for key in (EXPORTS, DURATION, RETRIES, LAST_SUCCESS):
            pipe.hgetall(key)
        exports, durations, retries, last = (
            {text(k): text(v) for k, v in raw.items()} for raw in pipe.execute()
        )
    histograms: dict[str, Histogram] = defaultdict(Histogram)
    for key, value in durations.items():
        name, _, part = key.rpartition("|")
        if part == "sum":
            histograms[name].total = float(value)
        elif part == "count":
            histograms[name].count = int(value)
        else:
            histograms[name].buckets[float(part.replace("+Inf", "inf"))] = int(value)
    return Snapshot(
        exports={tuple(k.rsplit("|", 1)): int(v) for k, v in exports.items()},  # type: ignore[misc]
        durations=dict(histograms),
        retries={k: int(v) for k, v in retries.items()},
        last_success={k: float(v) for k, v in last.items()},
    )

