"""What tasks share inside one worker or client process: the registry and the job store."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery, current_app

from destinations.registry import Registry, discover, parse_plugin_list
from tasks.job_store import JobStore

JOB_QUEUE = "nx-export"


def destination_queue(name: str) -> str:
    return f"export.{name}"


@lru_cache(maxsize=1)
def local_registry() -> Registry:
    """The destinations this process can run, discovered once."""
    return discover(parse_plugin_list(current_app.conf.get("nx_export_plugins", "")))


def job_store(app: Celery | None = None) -> JobStore:
    app = app or current_app
    expires = app.conf.result_expires
    seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
    return JobStore(app.backend.client, int(seconds))
