"""Which destinations the workers offer, so a client without their secrets can plan a job.

Each worker publishes its enabled destinations under its host name when it
starts. A client plans over the union of what workers published and what its
own environment enables: a LIMS process never needs the destinations' secrets.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from celery import Celery

from destinations.registry import DestinationInfo, Registry
from tasks.job_store import KEY_PREFIX

CATALOG_PREFIX = f"{KEY_PREFIX}:catalog:"
# A worker that has not started for this long no longer counts.
CATALOG_TTL_SECONDS = 7 * 24 * 3600


def publish(app: Celery, registry: Registry, hostname: str | None = None) -> None:
    entries = {
        name: {"priority": info.priority, "depends_on": list(info.depends_on)}
        for name, info in registry.enabled().items()
    }
    key = CATALOG_PREFIX + (hostname or socket.gethostname())
    app.backend.client.set(key, json.dumps(entries), ex=CATALOG_TTL_SECONDS)


def available(app: Celery, registry: Registry) -> tuple[dict[str, DestinationInfo], set[str]]:
    """Enabled destinations (published or local) and every name known but disabled."""
    offered: dict[str, DestinationInfo] = {}
    client = app.backend.client
    for key in client.scan_iter(match=CATALOG_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            for name, entry in _entries(raw).items():
                offered[name] = DestinationInfo(
                    name, int(entry["priority"]), tuple(entry["depends_on"])
                )
    offered.update(registry.enabled())
    return offered, set(registry.destinations) - set(offered)


def _entries(raw: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
