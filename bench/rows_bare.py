"""Rows 3, 4 and 6: our jobs of three no-op exports against a bare Celery chord of three no-ops."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, cast

import psutil

from bench.harness import NOOP, Harness
from bench.report import Row
from bench.services import PeakRss
from bench.stats import middle, percentile

MB = 1024 * 1024


def overhead(bench: Harness) -> list[Row]:
    ours, bare = [], []
    with bench.workers():
        bench.warm(NOOP)
        for _ in range(bench.sizes.warmup):
            bench.bare_seconds()
        for _ in range(bench.sizes.overhead_jobs):
            ours.append(bench.job_seconds(NOOP) * 1000)
            bare.append(bench.bare_seconds() * 1000)
        ours_commands = commands_per_job(bench, lambda: bench.job_seconds(NOOP))
        bare_commands = commands_per_job(bench, bench.bare_seconds)
    label = f"3. overhead 3 x no-op, {len(ours)} jobs one after another"
    p50 = Row(f"{label}: p50 latency", "ms", percentile(ours, 0.5), percentile(bare, 0.5))
    p50.baseline_name, p50.target = "bare chord", "≤ 1.5"
    p50.met = p50.ratio is not None and p50.ratio <= 1.5
    p95 = Row(f"{label}: p95 latency", "ms", percentile(ours, 0.95), percentile(bare, 0.95))
    p95.baseline_name = "bare chord"
    commands = Row(
        "3. Redis commands per job, client + worker (after the latency runs)",
        "commands",
        sum(ours_commands.values()),
        sum(bare_commands.values()),
        "bare chord",
    )
    extra = {name: ours_commands[name] - bare_commands.get(name, 0) for name in ours_commands}
    top = sorted(extra.items(), key=lambda item: -item[1])[:8]
    commands.note = "ours minus bare: " + ", ".join(f"{k} {v:+.1f}" for k, v in top)
    return [p50, p95, commands]


def commands_per_job(bench: Harness, run_one: Callable[[], object]) -> dict[str, float]:
    """Redis commands per job, by command, from INFO commandstats."""
    client = bench.redis.client()
    jobs = max(5, bench.sizes.overhead_jobs // 10)
    client.config_resetstat()
    for _ in range(jobs):
        run_one()
    stats = cast(dict[str, dict[str, Any]], client.info("commandstats"))
    calls = {
        name.removeprefix("cmdstat_").upper(): int(entry["calls"]) / jobs
        for name, entry in stats.items()
    }
    # The measuring itself, not the jobs.
    calls.pop("INFO", None)
    calls.pop("CONFIG", None)
    return calls


def throughput(bench: Harness) -> list[Row]:
    n = bench.sizes.throughput_jobs
    ours_runs, bare_runs = [], []
    for _ in range(bench.sizes.throughput_repeats):
        ours_runs.append(burst(bench, n, lambda: bench.enqueue(NOOP), bench.finish))
        bare_runs.append(burst(bench, n, bench.bare_chord, bench.bare_finish))
    ours = {**ours_runs[0], **middle(ours_runs, "seconds", "enqueue_seconds")}
    bare = {**bare_runs[0], **middle(bare_runs, "seconds", "enqueue_seconds")}
    ours["worker_peak"] = max(run["worker_peak"] for run in ours_runs)
    bare["worker_peak"] = max(run["worker_peak"] for run in bare_runs)
    rate = Row(
        f"4. throughput {n} jobs x 3 no-op enqueued at once, median of {len(ours_runs)}",
        "jobs/s",
        n / ours["seconds"],
        n / bare["seconds"],
        "bare chord",
        "≥ 0.70",
    )
    rate.met = rate.ratio is not None and rate.ratio >= 0.70
    rate.note = (
        f"median enqueue took {ours['enqueue_seconds']:.1f} s of {ours['seconds']:.1f} s "
        f"(bare {bare['enqueue_seconds']:.1f} s of {bare['seconds']:.1f} s)"
    )
    rows = [
        rate,
        Row(
            "6. worker peak RSS during the throughput run (process tree)",
            "MB",
            ours["worker_peak"] / MB,
            bare["worker_peak"] / MB,
            "bare chord",
        ),
    ]
    for label, key in (
        (f"client RSS after {max(1, n // 10)} enqueued", "rss_100"),
        (f"client RSS after {n} enqueued", "rss_all"),
    ):
        rows.append(Row(f"6. {label}", "MB", ours[key] / MB, bare[key] / MB, "bare chord"))
    growth = Row(
        f"6. client RSS growth {max(1, n // 10)} → {n} enqueued",
        "MB",
        (ours["rss_all"] - ours["rss_100"]) / MB,
        (bare["rss_all"] - bare["rss_100"]) / MB,
        "bare chord",
    )
    growth.note = "first run of each; absolute RSS includes earlier rows"
    rows.append(growth)
    return rows


def burst(
    bench: Harness, n: int, send: Callable[[], Any], collect: Callable[[Any, float], None]
) -> dict[str, float]:
    """Enqueue n at once, then collect all; fresh workers so peaks are not shared."""
    with bench.workers() as workers:
        for _ in range(bench.sizes.warmup):
            collect(send(), 30)
        gc.collect()
        with PeakRss([w.process.pid for w in workers if w.process]) as peak:
            started = time.perf_counter()
            pending, rss_100 = [], 0
            for index in range(n):
                pending.append(send())
                if index + 1 == max(1, n // 10):
                    rss_100 = client_rss()
            rss_all = client_rss()
            enqueued = time.perf_counter() - started
            deadline = time.monotonic() + max(120, n * 0.5)
            for item in pending:
                collect(item, deadline - time.monotonic())
            seconds = time.perf_counter() - started
        del pending
        gc.collect()
    return {
        "seconds": seconds,
        "worker_peak": peak.peak,
        "rss_100": rss_100,
        "rss_all": rss_all,
        "enqueue_seconds": enqueued,
    }


def client_rss() -> int:
    return int(psutil.Process().memory_info().rss)
