"""Rows 1, 2 and 5: our jobs against the same destinations exported one after another."""

from __future__ import annotations

import time

from bench.harness import HTTP, LAG, TIERS, Harness
from bench.report import Row
from bench.stats import median


def fanout(bench: Harness) -> list[Row]:
    rows = []
    with bench.workers():
        bench.warm(HTTP)
        for latency in bench.sizes.fanout_latencies:
            sequential, ours = alternate(bench, HTTP, latency)
            target = "≤ 0.40" if latency == 300 else ""
            rows.append(
                timed_row(
                    f"1. fan-out 3 x HTTP, L={latency} ms: wall time, median of {len(ours)}",
                    ours,
                    sequential,
                    target,
                    0.40 if target else None,
                )
            )
    return rows


def dependency(bench: Harness) -> list[Row]:
    with bench.workers():
        bench.warm(TIERS)
        sequential, ours = alternate(bench, TIERS, 300)
    return [
        timed_row(
            f"2. dependency tier root → 2 dependents, L=300 ms (median of {len(ours)})",
            ours,
            sequential,
            "≤ 0.72",
            0.72,
        )
    ]


def start_lag(bench: Harness) -> list[Row]:
    """A dependent beside an unrelated destination three times slower than its dependency."""
    from tasks.runtime import job_store

    lags, waits = [], []
    with bench.workers():
        bench.warm(LAG)
        for _ in range(bench.sizes.repeats * 2):
            job = bench.enqueue(LAG, 300)
            bench.finish(job, 60)
            stored = job_store(bench.app).require(job.id).destinations
            timing = {name: (stored[name].result or {})["metadata"] for name in LAG}
            lags.append(timing["lag_dependent"]["started"] - timing["lag_root"]["ended"])
            waits.append(timing["lag_slow"]["ended"] - timing["lag_dependent"]["started"])
    lag = median(lags)
    row = Row(
        f"2b. dependent beside an unrelated 3x slower destination, L=300 ms: start lag after "
        f"its dependency, median of {len(lags)}",
        "ms", lag * 1000, median(waits) * 1000, "slow one still running", "≤ 100 ms",
    )  # fmt: skip
    row.met = lag <= 0.1
    row.note = "baseline: how long the unrelated destination still ran after the dependent started"
    return [row]


def alternate(
    bench: Harness, names: tuple[str, ...], latency: int
) -> tuple[list[float], list[float]]:
    """Sequential and ours taken in turns, so a slow spell of the machine hits both."""
    sequential, ours = [], []
    for _ in range(bench.sizes.repeats):
        sequential.append(bench.sequential_seconds(names, latency))
        ours.append(bench.job_seconds(names, latency))
    return sequential, ours


def timed_row(
    label: str, ours: list[float], baseline: list[float], target: str, limit: float | None
) -> Row:
    row = Row(label, "ms", median(ours) * 1000, median(baseline) * 1000, "sequential", target)
    if limit is not None and row.ratio is not None:
        row.met = row.ratio <= limit
    return row


def io_concurrency(bench: Harness) -> list[Row]:
    sizes = bench.sizes
    sequential = [bench.sequential_seconds(HTTP, sizes.io_latency) for _ in range(2)]
    sequential_rate = 3 / median(sequential)
    rows = []
    for pool, concurrency, count in sizes.io_configs:
        with bench.workers(pool, concurrency, count):
            bench.warm(HTTP)
            started = time.perf_counter()
            jobs = [bench.enqueue(HTTP, sizes.io_latency) for _ in range(sizes.io_jobs)]
            deadline = time.monotonic() + max(120, sizes.io_jobs)
            for job in jobs:
                bench.finish(job, deadline - time.monotonic())
            seconds = time.perf_counter() - started
        exports = 3 * sizes.io_jobs
        row = Row(
            f"5. I/O {sizes.io_jobs} jobs x 3 HTTP, L={sizes.io_latency} ms, "
            f"{count} x --pool {pool} -c {concurrency}",
            "exports/s",
            exports / seconds,
            sequential_rate,
            "sequential",
            "≥ 100/s",
        )
        row.met = row.ours is not None and row.ours >= 100
        rows.append(row)
    best = max(rows, key=lambda r: r.ours or 0)
    best.note = "recommended"
    return rows
