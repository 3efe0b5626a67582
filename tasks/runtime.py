"""What tasks share inside one worker or client process: the registry and the job store."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery, current_app

from destinations.registry import Registry, discover, parse_plugin_list
from tasks.store.job_store import DEFAULT_DEADLINE_SECONDS, JobStore

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def local_registry() -> Registry:
    """The destinations this process can run, discovered once."""
    registry = discover(parse_plugin_list(current_app.conf.get("nx_export_plugins", "")))
    share_redis(registry, current_app)
    return registry


def share_redis(registry: Registry, app: Celery) -> None:
    """Hand the result backend's Redis to destinations that coordinate across workers.

    A destination may define ``use_redis(client)`` (LabArchives spaces its calls
    and shares folder ids there); without it, or without a Redis backend, a
    destination keeps what it does within one process.
    """
    client = getattr(app.backend, "client", None)
    if client is None:
        return
    for destination in registry.destinations.values():
        hook = getattr(destination, "use_redis", None)
        if callable(hook):
            try:
                hook(client)
            except Exception as error:  # a plugin's hook must not stop the worker
                logger.warning("destination %r: use_redis failed: %r", destination.name, error)


def job_store(app: Celery | None = None) -> JobStore:
    """The job store on the app's result backend, made once per backend (one per thread)."""
    app = app or current_app
    expires = app.conf.result_expires
    seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
    deadline = app.conf.get("nx_export_job_deadline") or DEFAULT_DEADLINE_SECONDS
    backend = app.backend
    store = getattr(backend, "nx_job_store", None)
    if (
        isinstance(store, JobStore)
        and store.client is backend.client
        and (store.retention, store.deadline) == (int(seconds), float(deadline))
    ):
        return store
    store = JobStore(backend.client, int(seconds), float(deadline))
    backend.nx_job_store = store  # its scripts are hashed once, not per call
    return store
