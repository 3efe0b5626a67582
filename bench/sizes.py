"""How much each row runs: the full benchmark, and ``--smoke``'s handful of jobs per row."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    fanout_latencies: tuple[int, ...] = (100, 300)
    repeats: int = 5
    overhead_jobs: int = 200
    throughput_jobs: int = 1000
    io_jobs: int = 300
    io_latency: int = 200
    throughput_repeats: int = 3
    io_configs: tuple[tuple[str, int, int], ...] = (
        ("threads", 64, 1),
        ("threads", 128, 1),
        ("threads", 64, 2),
    )
    warmup: int = 3
    nexuslims_repeats: int = 3


SMOKE = Sizes(
    fanout_latencies=(100, 300),
    repeats=1,
    overhead_jobs=10,
    throughput_jobs=30,
    io_jobs=20,
    throughput_repeats=1,
    io_configs=(("threads", 64, 1),),
    warmup=1,
    nexuslims_repeats=1,
)
