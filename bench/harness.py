"""Runs jobs for the rows: fresh workers per row, our jobs, sequential exports and bare chords.

Every row compares one of our jobs with a baseline doing the same work: the same
destinations called one after another in this process (``sequential_seconds``),
or a plain Celery chord of three no-op tasks (``bare_seconds``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import celery

from bench.services import LatencyServer, start_workers, stop_workers
from bench.sizes import Sizes
from tests.support import RedisServer, WorkerProcess

# Destinations of the bench plugins: HTTP calls to the latency server, no-ops, a dependency tier.
HTTP = ("bench_a", "bench_b", "bench_c")
NOOP = ("noop_a", "noop_b", "noop_c")
TIERS = ("tier_root", "tier_left", "tier_right")
LAG = ("lag_root", "lag_slow", "lag_dependent")
RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>Benchmark record</nx:title>
  <nx:summary><nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument></nx:summary>
</nx:Experiment>
"""


class BenchError(RuntimeError):
    """A job failed or did not finish in time."""


class Harness:
    def __init__(
        self,
        app: Any,
        redis: RedisServer,
        latency: LatencyServer,
        plugins: Path,
        root: Path,
        sizes: Sizes,
        pool: str,
        concurrency: int,
    ) -> None:
        self.app = app
        self.redis = redis
        self.latency = latency
        self.plugins = plugins
        self.logs = root / "logs"
        self.record = root / "record.xml"
        self.record.write_text(RECORD, encoding="utf-8")
        self.sizes = sizes
        self.pool = pool
        self.concurrency = concurrency

    @contextmanager
    def workers(
        self, pool: str | None = None, concurrency: int | None = None, count: int = 1
    ) -> Iterator[list[WorkerProcess]]:
        """Flush Redis, start fresh workers (they publish their catalog), stop them after."""
        self.redis.client().flushall()
        workers = start_workers(
            self.redis.url,
            self.plugins,
            self.logs,
            self.latency.url,
            pool or self.pool,
            concurrency or self.concurrency,
            count,
        )
        try:
            yield workers
        finally:
            stop_workers(workers)

    # -- our jobs ------------------------------------------------------------------------------

    def context(self, latency_ms: int = 0) -> dict[str, Any]:
        return {
            "xml_file_path": str(self.record),
            "session_identifier": f"bench-{uuid.uuid4().hex[:12]}",
            "instrument_pid": "FEI-Titan-TEM-635816",
            "dt_from": "2026-03-04T09:00:00-05:00",
            "dt_to": "2026-03-04T13:30:00-05:00",
            "user": "ada",
            "metadata": {"latency_ms": latency_ms},
        }

    def enqueue(self, names: tuple[str, ...], latency_ms: int = 0) -> Any:
        from tasks.jobs import enqueue_export

        return enqueue_export(self.context(latency_ms), destinations=list(names), app=self.app)

    @staticmethod
    def finish(job: Any, timeout: float) -> None:
        job = job.wait(timeout=max(timeout, 0.01))
        if not job.satisfied:
            errors = {name: s.error for name, s in job.destinations.items() if not s.succeeded}
            raise BenchError(f"job {job.id} not satisfied: {errors}")

    def job_seconds(
        self, names: tuple[str, ...], latency_ms: int = 0, timeout: float = 60
    ) -> float:
        started = time.perf_counter()
        self.finish(self.enqueue(names, latency_ms), timeout)
        return time.perf_counter() - started

    def warm(self, names: tuple[str, ...]) -> None:
        for _ in range(self.sizes.warmup):
            self.job_seconds(names)

    # -- baselines -----------------------------------------------------------------------------

    def sequential_seconds(self, names: tuple[str, ...], latency_ms: int) -> float:
        """NexusLIMS's way: the same destination objects, one after another, in this process."""
        from tasks.messages import context_from_message, result_to_json
        from tasks.runtime import local_registry

        registry = local_registry()
        destinations = [registry.get(name) for name in names]
        client = self.redis.client()
        key = f"bench:sequential:{uuid.uuid4().hex}"
        started = time.perf_counter()
        context = context_from_message(self.context(latency_ms))
        for destination in destinations:
            assert destination is not None
            result = destination.export(context)
            if not result.success:
                raise BenchError(f"sequential {destination.name}: {result.error_message}")
            context.previous_results[destination.name] = result
            # Stored like our jobs store results, so both sides pay for the Redis writes.
            client.hset(
                key, destination.name, json.dumps(result_to_json(result, result.destination_name))
            )
        return time.perf_counter() - started

    def bare_chord(self) -> Any:
        header = celery.group(self.app.signature("bench.noop", args=(i,)) for i in range(3))
        return celery.chord(header)(self.app.signature("bench.collect"))

    @staticmethod
    def bare_finish(result: Any, timeout: float) -> None:
        value = result.get(timeout=max(timeout, 0.01), interval=0.01)
        if value != 3:
            raise BenchError(f"bare chord returned {value!r}")

    def bare_seconds(self, timeout: float = 60) -> float:
        started = time.perf_counter()
        self.bare_finish(self.bare_chord(), timeout)
        return time.perf_counter() - started
