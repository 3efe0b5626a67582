"""Benchmark destinations, installed by entry point like any third-party plugin.

``bench_*`` and ``tier_*`` do one HTTP GET to the latency server named by
``NX_BENCH_HTTP_URL``; the job's ``context.metadata["latency_ms"]`` says how long
the server waits before answering. ``noop_*`` do nothing.
"""

from __future__ import annotations

import os
import time
import urllib.request

from destinations.contract import ExportContext, ExportResult


class _BenchDestination:
    name = "base"
    priority = 100
    depends_on: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return True

    def validate_config(self) -> tuple[bool, str | None]:
        return True, None

    def export(self, context: ExportContext) -> ExportResult:
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=f"{self.name}-{context.session_identifier}",
        )


class _HttpDestination(_BenchDestination):
    def export(self, context: ExportContext) -> ExportResult:
        latency = int(context.metadata.get("latency_ms", 0))
        url = f"{os.environ['NX_BENCH_HTTP_URL']}/{self.name}?ms={latency}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
        except OSError as error:
            return ExportResult(False, self.name, error_message=f"GET {url}: {error}")
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=f"{self.name}-{context.session_identifier}",
            record_url=url,
        )


class BenchA(_HttpDestination):
    name, priority = "bench_a", 300


class BenchB(_HttpDestination):
    name, priority = "bench_b", 200


class BenchC(_HttpDestination):
    name, priority = "bench_c", 100


class NoopA(_BenchDestination):
    name, priority = "noop_a", 300


class NoopB(_BenchDestination):
    name, priority = "noop_b", 200


class NoopC(_BenchDestination):
    name, priority = "noop_c", 100


class TierRoot(_HttpDestination):
    name, priority = "tier_root", 300


class TierLeft(_HttpDestination):
    name, priority = "tier_left", 200
    depends_on = ("tier_root",)


class TierRight(_HttpDestination):
    name, priority = "tier_right", 100
    depends_on = ("tier_root",)


class _TimedDestination(_HttpDestination):
    """Reports when it started and ended, so the start lag of a dependent can be measured."""

    def export(self, context: ExportContext) -> ExportResult:
        started = time.time()
        result = super().export(context)
        result.metadata = {"started": started, "ended": time.time()}
        return result


class LagRoot(_TimedDestination):
    name, priority = "lag_root", 300


class LagSlow(_TimedDestination):
    """Unrelated to the dependent, and three times as slow as its dependency."""

    name, priority = "lag_slow", 200

    def export(self, context: ExportContext) -> ExportResult:
        slower = 3 * int(context.metadata.get("latency_ms", 0))
        context.metadata = {**context.metadata, "latency_ms": slower}
        return super().export(context)


class LagDependent(_TimedDestination):
    name, priority = "lag_dependent", 100
    depends_on = ("lag_root",)
