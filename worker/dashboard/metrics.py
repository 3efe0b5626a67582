"""``/metrics``: numbers read from Redis at each scrape, so they are right with many workers.

Workers add to counters in Redis as results are stored (``tasks.store.counters``);
job counts are the sizes of the state indexes and queue lengths the lengths of
the broker's lists. No series is labelled by session or job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from destinations.names import JOB_QUEUE, queue_name
from tasks import catalog
from tasks.export.outage import breaker_states
from tasks.runtime import job_store, local_registry
from tasks.store import counters as job_metrics
from tasks.store import index as job_index
from tasks.store.breaker import UP

# Kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class ExportCollector(Collector):
    def __init__(self, app: Celery) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        store = job_store(self.app)
        snapshot = job_metrics.read(store.client)

        exports = CounterMetricFamily(
            "nx_export_exports",
            "Final outcomes of exports (after retries), by destination",
            labels=["destination", "outcome"],
        )
        for (destination, outcome), count in sorted(snapshot.exports.items()):
            exports.add_metric([destination, outcome], count)
        yield exports

        durations = HistogramMetricFamily(
            "nx_export_export_duration_seconds",
            "Duration of the attempt that gave an export's outcome",
            labels=["destination"],
        )
        for destination, histogram in sorted(snapshot.durations.items()):
            durations.add_metric([destination], histogram.cumulative(), histogram.total)
        yield durations

        retries = CounterMetricFamily(
            "nx_export_retries", "Attempts that asked to be retried later", labels=["destination"]
        )
        for destination, count in sorted(snapshot.retries.items()):
            retries.add_metric([destination], count)
        yield retries

        last = GaugeMetricFamily(
            "nx_export_last_success_timestamp_seconds",
            "Unix time of the newest successful export",
            labels=["destination"],
        )
        for destination, moment in sorted(snapshot.last_success.items()):
            last.add_metric([destination], moment)
        yield last

        jobs = GaugeMetricFamily(
            "nx_export_jobs", "Jobs kept (retention period), by state", labels=["state"]
        )
        for state, count in job_index.live_count(store.client, store.retention).items():
            jobs.add_metric([state], count)
        yield jobs

        names = self.destination_names(store)
        queues = GaugeMetricFamily(
            "nx_export_queue_length", "Tasks waiting in each queue", labels=["queue"]
        )
        for queue, length in self.queue_lengths(names).items():
            queues.add_metric([queue], length)
        yield queues

        up = GaugeMetricFamily(
            "nx_export_destination_up",
            "1 while a destination answers; 0 while its breaker says it is down (probed)",
            labels=["destination"],
        )
        waiting = GaugeMetricFamily(
            "nx_export_destination_waiting",
            "Exports waiting, without calling, for a destination that is down",
            labels=["destination"],
        )
        failing = GaugeMetricFamily(
            "nx_export_destination_failing_since_timestamp_seconds",
            "Unix time since which every call found a destination down (only while it does)",
            labels=["destination"],
        )
        for name, breaker in breaker_states(self.app, names).items():
            up.add_metric([name], 1 if breaker["state"] == UP else 0)
            waiting.add_metric([name], breaker["waiting"])
            if breaker["failing_since"] is not None:
                failing.add_metric([name], breaker["failing_since"])
        yield up
        yield waiting
        yield failing

    def destination_names(self, store: Any) -> list[str]:
        """Destinations a live worker serves, and those any kept job names."""
        offered, _ = catalog.available(self.app, local_registry())
        return sorted(set(offered) | set(
            job_index.names(store.client, job_index.DESTINATION_NAMES, store.retention)
        ))  # fmt: skip

    def queue_lengths(self, names: list[str]) -> dict[str, int]:
        queues = [JOB_QUEUE, *(queue_name(name) for name in names)]
        with self.app.connection_for_read() as connection:
            client = connection.default_channel.client
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for suffix in PRIORITY_SUFFIXES:
                        pipe.llen(queue + suffix)
                lengths = pipe.execute()
        step = len(PRIORITY_SUFFIXES)
        return {
            queue: sum(lengths[i * step : (i + 1) * step]) for i, queue in enumerate(queues)
        }


def exposition(app: Celery) -> bytes:
    """The text format, read afresh."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExportCollector(app))
    return generate_latest(registry)
