"""Bare Celery tasks for the baseline, imported by the worker with ``--include``."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="bench.noop")
def noop(index: int = 0) -> dict[str, Any]:
    return {"success": True, "index": index}


@shared_task(name="bench.collect")
def collect(results: list[Any]) -> int:
    return len(results)
