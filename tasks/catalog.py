"""Which destinations the workers offer, so a client without their secrets can plan a job.

Each worker publishes its enabled destinations under its host name when it
starts, as one field of one hash. A client plans over the union of what workers
published recently and what its own environment enables: a LIMS process never
needs the destinations' secrets.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery

from destinations.registry import DestinationInfo, Registry
from tasks.job_store import KEY_PREFIX

CATALOG_KEY = f"{KEY_PREFIX}:catalog"
# A worker that has not started for this long no longer counts.
CATALOG_TTL_SECONDS = 7 * 24 * 3600
# Clients read the catalogue at most this often: it changes when workers start.
CLIENT_CACHE_SECONDS = 2.0

_cache: dict[int, tuple[float, dict[str, DestinationInfo]]] = {}


def publish(app: Celery, registry: Registry, hostname: str | None = None) -> None:
    entries = {
        name: {
            "priority": info.priority,
            "depends_on": list(info.depends_on),
            "prepares": info.prepares,
        }
        for name, info in registry.enabled().items()
    }
    document = json.dumps({"published_at": time.time(), "entries": entries})
    client = app.backend.client
    client.hset(CATALOG_KEY, hostname or socket.gethostname(), document)
    client.expire(CATALOG_KEY, CATALOG_TTL_SECONDS)


def available(
    app: Celery, registry: Registry, wanted: Sequence[str] = ()
) -> tuple[dict[str, DestinationInfo], set[str]]:
    """Enabled destinations (published or local) and every name known but disabled.

    A name in ``wanted`` missing from the cached catalogue makes it read afresh,
    so a worker that just started is found at once.
    """
    offered = dict(_published(app))
    if any(name not in offered and name not in registry.destinations for name in wanted):
        offered = dict(_published(app, fresh=True))
    offered.update(registry.enabled())
    return offered, set(registry.destinations) - set(offered)


def _published(app: Celery, fresh: bool = False) -> dict[str, DestinationInfo]:
    now = time.monotonic()
    cached = _cache.get(id(app))
    if cached and not fresh and now - cached[0] < CLIENT_CACHE_SECONDS:
        return cached[1]
    offered: dict[str, DestinationInfo] = {}
    oldest = time.time() - CATALOG_TTL_SECONDS
    for raw in app.backend.client.hgetall(CATALOG_KEY).values():
        document = _document(raw)
        if float(document.get("published_at", 0)) < oldest:
            continue
        for name, entry in document.get("entries", {}).items():
            offered[name] = DestinationInfo(
                name,
                int(entry["priority"]),
                tuple(entry["depends_on"]),
                prepares=bool(entry.get("prepares", False)),
            )
    _cache[id(app)] = (now, offered)
    return offered


def _document(raw: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
