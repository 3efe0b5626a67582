"""Which destinations the workers offer, so a client without their secrets can plan a job.

Each worker publishes its enabled destinations under its host name when it
starts and again on every heartbeat, as one field of one hash. A client plans
over the union of what workers published within a week and what its own
environment enables: a LIMS process never needs the destinations' secrets. A
worker that missed two heartbeats is not live: a job may still name its
destinations (it may be restarting), but the client is warned that nobody takes
them now. Each entry carries a fingerprint of the settings the worker loaded
for the destination (``destinations.fingerprint``), so a check can name the
workers still running with settings changed since they started.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery

from destinations.fingerprint import fingerprint
from destinations.registry import DestinationInfo, Registry
from tasks.store.decode import text
from tasks.store.keys import CATALOG as CATALOG_KEY
from tasks.store.keys import FINGERPRINT_KEY

# A worker that has not published for this long no longer counts for planning.
CATALOG_TTL_SECONDS = 7 * 24 * 3600
# Clients read the catalogue at most this often: it changes when workers start.
CLIENT_CACHE_SECONDS = 2.0
# A worker that published no heartbeat interval (an older one) is taken to use this.
DEFAULT_HEARTBEAT_SECONDS = 30.0
# A worker is live until it missed this many heartbeats.
MISSED_HEARTBEATS = 2

_cache: dict[int, tuple[float, list[dict[str, Any]]]] = {}
# What this process loaded, fingerprinted once: a .env edited later changes nothing here.
_loaded_fingerprints: dict[int, dict[str, str]] = {}


def publish(
    app: Celery, registry: Registry, hostname: str | None = None, heartbeat: float | None = None
) -> None:
    entries = {
        name: {
            "priority": info.priority,
            "depends_on": list(info.depends_on),
            "prepares": info.prepares,
            "fingerprint": loaded_fingerprints(app, registry).get(name),
        }
        for name, info in registry.enabled().items()
    }
    document = json.dumps(
        {
            "published_at": time.time(),
            "heartbeat": heartbeat or DEFAULT_HEARTBEAT_SECONDS,
            "entries": entries,
        }
    )
    client = app.backend.client
    client.hset(CATALOG_KEY, hostname or socket.gethostname(), document)
    client.expire(CATALOG_KEY, CATALOG_TTL_SECONDS)


def fingerprint_key(app: Celery) -> bytes:
    """The facility's fingerprint key: made by the first process that needs it."""
    client = app.backend.client
    client.set(FINGERPRINT_KEY, secrets.token_hex(32), nx=True)
    return bytes(client.get(FINGERPRINT_KEY))


def current_fingerprints(app: Celery, registry: Registry) -> dict[str, str]:
    """Each enabled destination's fingerprint as its settings are now."""
    key = fingerprint_key(app)
    return {
        name: fingerprint(destination, key)
        for name, destination in registry.destinations.items()
        if name in registry.enabled()
    }


def loaded_fingerprints(app: Celery, registry: Registry) -> dict[str, str]:
    """The fingerprints of what this process loaded, taken the first time it is asked."""
    if id(registry) not in _loaded_fingerprints:
        _loaded_fingerprints[id(registry)] = current_fingerprints(app, registry)
    return _loaded_fingerprints[id(registry)]


def workers_with_other_settings(app: Celery, registry: Registry) -> list[tuple[str, str]]:
    """(worker, destination) for every live worker serving a destination enabled here
    with settings other than this process's (it started before they changed)."""
    here = current_fingerprints(app, registry)
    raw = app.backend.client.hgetall(CATALOG_KEY)
    now, found = time.time(), []
    for worker, document in sorted((text(k), _document(v)) for k, v in raw.items()):
        if not _is_live(document, now):
            continue
        for name, entry in sorted(document.get("entries", {}).items()):
            theirs = entry.get("fingerprint")
            if name in here and theirs and theirs != here[name]:
                found.append((worker, name))
    return found


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


def unserved(app: Celery, names: Sequence[str]) -> list[str]:
    """The destinations among ``names`` that no live worker serves now.

    Read from the cached catalogue, and afresh before saying a name is unserved.
    """
    missing = [name for name in names if name not in _live(_documents(app))]
    if missing:
        missing = [name for name in missing if name not in _live(_documents(app, fresh=True))]
    return missing


def _live(documents: list[dict[str, Any]]) -> set[str]:
    now = time.time()
    live: set[str] = set()
    for document in documents:
        if _is_live(document, now):
            live.update(document.get("entries", {}))
    return live


def _is_live(document: dict[str, Any], now: float) -> bool:
    """The worker that published ``document`` missed fewer than two heartbeats."""
    heartbeat = float(document.get("heartbeat") or DEFAULT_HEARTBEAT_SECONDS)
    return now - float(document.get("published_at", 0)) <= MISSED_HEARTBEATS * heartbeat


def _published(app: Celery, fresh: bool = False) -> dict[str, DestinationInfo]:
    offered: dict[str, DestinationInfo] = {}
    oldest = time.time() - CATALOG_TTL_SECONDS
    for document in _documents(app, fresh):
        if float(document.get("published_at", 0)) < oldest:
            continue
        for name, entry in document.get("entries", {}).items():
            offered[name] = DestinationInfo(
                name,
                int(entry["priority"]),
                tuple(entry["depends_on"]),
                prepares=bool(entry.get("prepares", False)),
            )
    return offered


def _documents(app: Celery, fresh: bool = False) -> list[dict[str, Any]]:
    now = time.monotonic()
    cached = _cache.get(id(app))
    if cached and not fresh and now - cached[0] < CLIENT_CACHE_SECONDS:
        return cached[1]
    documents = [_document(raw) for raw in app.backend.client.hgetall(CATALOG_KEY).values()]
    _cache[id(app)] = (now, documents)
    return documents


def _document(raw: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
