"""What the benchmark prints: the machine it ran on and one table row per measurement."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import celery
import psutil
from redis import Redis


@dataclass
class Row:
    measurement: str
    unit: str
    ours: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


@dataclass
class Report:
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)


def machine(redis: Redis, pool: str, concurrency: int) -> dict[str, Any]:
    info = cast(dict[str, Any], redis.info("server"))
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "redis_server": info.get("redis_version"),
        "pool": pool,
        "concurrency": concurrency,
    }


def markdown(report: Report) -> str:
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    lines += [
        "",
        "## Results",
        "",
        "| measurement | unit | ours | baseline | baseline is | ours / baseline | target | met "
        "| note |",
        "|---|---|---:|---:|---|---:|---|---|---|",
    ]

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"

    # Rows are numbered in their labels; a stable sort keeps each group's rows in run order.
    for row in sorted(report.rows, key=lambda r: r.measurement.split(".")[0]):
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(
            f"| {row.measurement} | {row.unit} | {number(row.ours)} | {number(row.baseline)} "
            f"| {row.baseline_name} | {ratio} | {row.target} | {met} | {row.note} |"
        )
    return "\n".join(lines)


def as_json(report: Report) -> dict[str, Any]:
    return {
        "machine": report.machine,
        "rows": [{**asdict(row), "ratio": row.ratio} for row in report.rows],
    }
