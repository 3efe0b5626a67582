"""The arithmetic of the benchmark: medians, percentiles and medians over repeated runs."""

from __future__ import annotations

import math
import statistics


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: always one of the measured values, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def middle(runs: list[dict[str, float]], *keys: str) -> dict[str, float]:
    """The median of each key over several runs of the same measurement."""
    return {key: median([run[key] for run in runs]) for key in keys}
